"""Architectures the node can build, all created through timm by name.

Weights never come from the network: every model is created with
``pretrained=False`` and filled from a local safetensors file by
:mod:`node.models.folder`.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from node.errors import ModelError
from node.models import small_cnn as _small_cnn  # registers breast_cnn_small
from node.models import small_nets as _small_nets  # noqa: F401 (registers the other two)

__all__ = ["ARCHITECTURES", "GLOBAL_POOLS", "create_model"]

GLOBAL_POOLS: tuple[str, ...] = _small_cnn.GLOBAL_POOLS
"""Global pooling a card or config may choose (timm's names; every architecture takes them)."""

ARCHITECTURES: tuple[str, ...] = (
    "breast_cnn_small",
    "breast_resnet_small",
    "breast_sepconv_small",
    "efficientnet_b0",
    "efficientnet_b1",
    "resnet50",
    "densenet121",
    "convnext_tiny",
    "mobilenetv3_small_050",
    "lcnet_050",
)
"""Architecture names a model card may use."""


def create_model(
    architecture: str, *, num_classes: int, in_chans: int, global_pool: str | None = None
) -> nn.Module:
    """A freshly initialised (random-weight) model in eval mode.

    ``global_pool`` (one of :data:`GLOBAL_POOLS`) replaces the architecture's
    global pooling; ``None`` keeps its default. Raises :class:`ModelError` for an
    architecture outside :data:`ARCHITECTURES` or an unknown pooling.
    """
    if architecture not in ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    extra: dict[str, Any] = {}
    if global_pool is not None:
        if global_pool not in GLOBAL_POOLS:
            raise ModelError(
                f"unknown global_pool {global_pool!r}; known: {', '.join(GLOBAL_POOLS)}"
            )
        extra["global_pool"] = global_pool
    model = timm.create_model(
        architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra
    )
    return model.eval()
