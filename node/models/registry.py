"""Architectures the node can build, all created through timm by name.

Weights never come from the network: every model is created with
``pretrained=False`` and filled from a local safetensors file by
:mod:`node.models.folder`.
"""

from __future__ import annotations

import timm
from torch import nn

from node.errors import ModelError
from node.models import small_cnn as _small_cnn  # noqa: F401  (registers breast_cnn_small)

__all__ = ["ARCHITECTURES", "create_model"]

ARCHITECTURES: tuple[str, ...] = (
    "breast_cnn_small",
    "efficientnet_b0",
    "efficientnet_b1",
    "resnet50",
    "densenet121",
    "convnext_tiny",
    "mobilenetv3_small_050",
    "lcnet_050",
)
"""Architecture names a model card may use."""


def create_model(architecture: str, *, num_classes: int, in_chans: int) -> nn.Module:
    """A freshly initialised (random-weight) model in eval mode.

    Raises :class:`ModelError` for an architecture outside :data:`ARCHITECTURES`.
    """
    if architecture not in ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    model = timm.create_model(
        architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans
    )
    return model.eval()
