"""Two more small CNNs for CPU-trained ensembles, registered with timm like
:mod:`node.models.small_cnn`, and built as it is (patchify stem, three stages that each
halve the resolution, global pooling, linear classifier; stride 32) but with other
stages, so that an ensemble of the three is one of different architectures:

``breast_resnet_small``
    Residual stages (He et al. 2016): two 3 x 3 convolutions with batch norm, the
    first with stride 2, added to a 1 x 1 projection of the stage's input.
``breast_sepconv_small``
    Depthwise-separable stages (Howard et al. 2017): a 5 x 5 depthwise and a 1 x 1
    pointwise convolution, twice, each with batch norm and ReLU, then max pooling: a
    wider field of view per stage for fewer weights.

Small enough to train from scratch on a CPU in minutes per epoch (the timm
MobileNetV3 and PP-LCNet learn little in that budget); there are no published weights.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from node.models.small_cnn import BreastCNNSmall, create_small

__all__ = ["BreastResNetSmall", "BreastSepConvSmall", "breast_resnet_small", "breast_sepconv_small"]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class _Residual(nn.Module):
    """``relu(conv-bn-relu-conv-bn(x) + project(x))``, the first convolution with stride 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, 2), nn.ReLU(inplace=True))
        self.body.append(_conv_bn(cout, cout, 3))
        self.project = _conv_bn(cin, cout, 1, 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.project(x))  # type: ignore[no-any-return]


class BreastResNetSmall(BreastCNNSmall):
    """:class:`~node.models.small_cnn.BreastCNNSmall` with residual stages."""

    def _stage(self, cin: int, cout: int) -> nn.Module:
        return _Residual(cin, cout)


class BreastSepConvSmall(BreastCNNSmall):
    """:class:`~node.models.small_cnn.BreastCNNSmall` with depthwise-separable stages."""

    def _stage(self, cin: int, cout: int) -> nn.Module:
        layers: list[nn.Module] = []
        for channels_in in (cin, cout):
            layers += [
                _conv_bn(channels_in, channels_in, 5, groups=channels_in),
                nn.ReLU(inplace=True),
                _conv_bn(channels_in, cout, 1),
                nn.ReLU(inplace=True),
            ]
        return nn.Sequential(*layers, nn.MaxPool2d(2))


@register_model
def breast_resnet_small(pretrained: bool = False, **kwargs: Any) -> BreastResNetSmall:
    """timm entry point of :class:`BreastResNetSmall` (``pretrained`` must be False)."""
    model: BreastResNetSmall = create_small(
        BreastResNetSmall, "breast_resnet_small", pretrained, kwargs
    )
    return model


@register_model
def breast_sepconv_small(pretrained: bool = False, **kwargs: Any) -> BreastSepConvSmall:
    """timm entry point of :class:`BreastSepConvSmall` (``pretrained`` must be False)."""
    model: BreastSepConvSmall = create_small(
        BreastSepConvSmall, "breast_sepconv_small", pretrained, kwargs
    )
    return model
