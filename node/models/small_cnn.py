"""``breast_cnn_small``: a plain CNN registered with timm, created like any timm model.

A patchify stem (4x4, stride 4) and three stages of 3x3 convolution, batch norm,
ReLU and 2x2 max pooling, then global pooling (average by default; ``global_pool``
chooses ``max``, ``avgmax`` or ``catavgmax`` as in timm) and a linear classifier.
Max pooling keeps the evidence of one small finding that an average over the
whole feature map would dilute.
Stride 32 overall, so a 1024 x 512 input gives a 32 x 16 feature map, the same
resolution as the other backbones' last feature maps (``output_stride=16`` in
:func:`node.models.registry.create_model` drops the last pooling: 64 x 32). It is
the reference point of the benchmarks and the model of the tests.

Every layer is left-right symmetric in its sampling grid (even sizes), so with
mirror-symmetric kernels the network is exactly flip-invariant.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal, get_args

import torch
from timm.models import register_model
from torch import nn

__all__ = [
    "GLOBAL_POOLS",
    "BreastCNNSmall",
    "GlobalPool",
    "breast_cnn_small",
    "create_small",
    "global_pool_2d",
]

GlobalPool = Literal["avg", "max", "avgmax", "catavgmax"]
"""Global pooling of the last feature map (timm's names)."""

GLOBAL_POOLS: tuple[str, ...] = get_args(GlobalPool)


def global_pool_2d(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C)`` (``(N, 2C)`` for ``catavgmax``)."""
    if kind == "avg":
        return x.mean(dim=(2, 3))
    peak = x.amax(dim=(2, 3))
    if kind == "max":
        return peak
    if kind == "avgmax":
        return 0.5 * (x.mean(dim=(2, 3)) + peak)
    if kind == "catavgmax":
        return torch.cat((x.mean(dim=(2, 3)), peak), dim=1)
    raise ValueError(f"unknown global_pool {kind!r}; known: {', '.join(GLOBAL_POOLS)}")


class BreastCNNSmall(nn.Module):
    """Plain CNN with timm's interface (``forward_features``, ``forward_head``).

    Args:
        num_classes: output logits; 0 gives features only (``nn.Identity`` head).
        in_chans: input channels.
        widths: channels of the stem and of each stage.
        drop_rate: dropout before the classifier (training only).
        global_pool: ``avg``, ``max``, ``avgmax`` (mean of the two) or ``catavgmax``
            (both, concatenated: the classifier sees twice the features).
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_chans: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"unknown global_pool {global_pool!r}; known: {', '.join(GLOBAL_POOLS)}"
            )
        self.global_pool = global_pool
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = widths[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], kernel_size=4, stride=4, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(*(self._stage(cin, cout) for cin, cout in pairwise(widths)))
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = (
            nn.Linear(self._pooled_features, num_classes) if num_classes else nn.Identity()
        )

    def _stage(self, cin: int, cout: int) -> nn.Module:
        """One stage (half the resolution): 3 x 3 convolution, batch norm, ReLU, max pool.
        Subclasses (:mod:`node.models.small_nets`) build theirs differently."""
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    @property
    def _pooled_features(self) -> int:
        return self.num_features * (2 if self.global_pool == "catavgmax" else 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> last feature map ``(N, widths[-1], H/32, W/32)``."""
        return self.stages(self.stem(x))  # type: ignore[no-any-return]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits ``(N, num_classes)`` (pooled features if ``pre_logits``)."""
        pooled = self.drop(global_pool_2d(x, self.global_pool))
        return pooled if pre_logits else self.fc(pooled)  # type: ignore[no-any-return]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self._pooled_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_small(cls: type[BreastCNNSmall], name: str, pretrained: bool, kwargs: Any) -> Any:
    """Build ``cls`` for timm's entry point ``name``, with timm's ``pretrained_cfg``.

    There are no published weights for these networks: ``pretrained`` must be False.
    """
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; load a model folder instead")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = cls(**kwargs)
    model.pretrained_cfg = {  # type: ignore[assignment]
        "architecture": name,
        "input_size": (model.in_chans, 1024, 512),
        "num_classes": model.num_classes,
        "mean": (0.5,) * model.in_chans,
        "std": (0.5,) * model.in_chans,
        "first_conv": "stem.0",
        "classifier": "fc",
    }
    return model


@register_model
def breast_cnn_small(pretrained: bool = False, **kwargs: Any) -> BreastCNNSmall:
    """timm entry point. There are no published weights: ``pretrained`` must be False."""
    model: BreastCNNSmall = create_small(BreastCNNSmall, "breast_cnn_small", pretrained, kwargs)
    return model
