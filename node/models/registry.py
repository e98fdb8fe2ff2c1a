"""Architectures the node can build: any timm model by name, created without weights.

Weights never come from the network: every model is created with
``pretrained=False`` and filled from a local safetensors file by
:mod:`node.models.folder`. :data:`ARCHITECTURES` is the set the test suite
builds, exports and loads; any other name timm knows (``timm.list_models()``)
is accepted too, and must offer timm's ``forward_features`` / ``forward_head``.

``output_stride`` (16 or 8) gives a finer last feature map, which Grad-CAM
uses: timm's own ``output_stride`` (dilated convolutions) where the
architecture takes it, else the last stride-2 convolutions or poolings are made
stride 1 and the convolutions after them dilated to keep their receptive field.
Strides are not weights, so the same state dict fits every ``output_stride``.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from node.errors import ModelError
from node.models import small_cnn as _small_cnn  # registers breast_cnn_small
from node.models import small_nets as _small_nets  # noqa: F401 (registers the other two)

__all__ = [
    "ARCHITECTURES",
    "GLOBAL_POOLS",
    "OUTPUT_STRIDES",
    "check_architecture",
    "create_model",
    "reduce_stride",
]

GLOBAL_POOLS: tuple[str, ...] = _small_cnn.GLOBAL_POOLS
"""Global pooling a card or config may choose (timm's names; every architecture takes them)."""

ARCHITECTURES: tuple[str, ...] = (
    "breast_cnn_small",
    "breast_resnet_small",
    "breast_sepconv_small",
    "efficientnet_b0",
    "efficientnet_b1",
    "tf_efficientnetv2_b0",
    "resnet50",
    "densenet121",
    "convnext_tiny",
    "convnext_small",
    "vgg16",
    "mobilenetv3_small_050",
    "lcnet_050",
)
"""The tested architectures (built, trained, exported and loaded by the test suite).
Any other timm model name is accepted as well."""

OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Strides of the last feature map a card or config may ask for (32: the architecture's own)."""


def check_architecture(name: str) -> str:
    """``name`` if timm can build it, else :class:`ModelError` naming the tested set."""
    if name in ARCHITECTURES or timm.is_model(name):
        return name
    raise ModelError(
        f"unknown architecture {name!r}: not a timm model name; tested: {', '.join(ARCHITECTURES)}"
    )


def create_model(
    architecture: str,
    *,
    num_classes: int,
    in_chans: int,
    global_pool: str | None = None,
    output_stride: int | None = None,
    drop_path_rate: float | None = None,
) -> nn.Module:
    """A freshly initialised (random-weight) model in eval mode.

    ``global_pool`` (one of :data:`GLOBAL_POOLS`) replaces the architecture's
    global pooling; ``None`` keeps its default. ``output_stride`` (one of
    :data:`OUTPUT_STRIDES`) sets the stride of the last feature map; ``None`` or
    32 keeps the architecture's. ``drop_path_rate`` (stochastic depth, training
    only: it changes nothing in eval mode or in the weights) is passed to
    architectures that take it. Raises :class:`ModelError` for an unknown
    architecture or pooling, or a stride the architecture cannot give.
    """
    check_architecture(architecture)
    extra: dict[str, Any] = {}
    if global_pool is not None:
        if global_pool not in GLOBAL_POOLS:
            raise ModelError(
                f"unknown global_pool {global_pool!r}; known: {', '.join(GLOBAL_POOLS)}"
            )
        extra["global_pool"] = global_pool
    if output_stride is not None and output_stride not in OUTPUT_STRIDES:
        raise ModelError(
            f"output_stride {output_stride} is not one of {', '.join(map(str, OUTPUT_STRIDES))}"
        )
    if drop_path_rate:
        extra["drop_path_rate"] = drop_path_rate
    stride = output_stride or 32
    model: nn.Module | None = None
    if stride != 32:
        try:
            model = timm.create_model(
                architecture,
                pretrained=False,
                num_classes=num_classes,
                in_chans=in_chans,
                output_stride=stride,
                **extra,
            )
        except (TypeError, AssertionError):
            model = None  # the architecture has no output_stride of its own
    if model is None:
        model = _create(architecture, num_classes, in_chans, extra)
        if stride != 32:
            reduce_stride(model, 32 // stride, architecture, in_chans)
            _check_stride(model, stride, in_chans, architecture)
    return model.eval()


def _create(architecture: str, num_classes: int, in_chans: int, extra: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(
            architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra
        )
    except TypeError as exc:
        if "drop_path_rate" not in extra:
            raise ModelError(f"{architecture}: {exc}") from exc
        # architectures without stochastic depth (VGG, DenseNet) train without it
        rest = {k: v for k, v in extra.items() if k != "drop_path_rate"}
        return _create(architecture, num_classes, in_chans, rest)


def _check_stride(model: nn.Module, stride: int, in_chans: int, name: str) -> None:
    size = 4 * 32
    try:
        with torch.no_grad():
            features = model.eval().forward_features(  # type: ignore[operator]
                torch.zeros(1, in_chans, size, size)
            )
    except RuntimeError as exc:
        raise ModelError(f"{name}: cannot give output_stride {stride} ({exc})") from None
    if tuple(features.shape[-2:]) != (size // stride, size // stride):
        raise ModelError(f"{name}: cannot give output_stride {stride}")


_PROBE = 128  # input side used to find where the last downsampling happens


def _input_sizes(model: nn.Module, in_chans: int) -> dict[nn.Module, int]:
    """The input height of every convolution and pooling in one forward pass."""
    sizes: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        sizes.setdefault(module, int(args[0].shape[-2]))

    hooks = [
        module.register_forward_hook(record)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d)
    ]
    try:
        with torch.no_grad():
            model.eval().forward_features(torch.zeros(1, in_chans, _PROBE, _PROBE))  # type: ignore[operator]
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def _stride_of(module: nn.Module) -> int:
    stride = getattr(module, "stride", 1)
    return int(max(stride) if isinstance(stride, tuple) else stride)


def reduce_stride(model: nn.Module, factor: int, name: str = "model", in_chans: int = 1) -> None:
    """Divide the stride of ``model``'s last feature map by ``factor`` (2 or 4), in place.

    A probe forward pass finds the layers of the last downsampling step: every
    stride-2 convolution or pooling whose input has the coarsest resolution any
    such layer sees (main path and shortcut alike). They get stride 1 (a 2 x 2
    pooling becomes the identity), and every convolution after that step is
    dilated by 2 with its padding widened to match, so it sees the same context
    as before. Repeated for a factor of 4.
    """
    steps = {2: 1, 4: 2}.get(factor)
    if steps is None:
        raise ModelError(f"{name}: cannot reduce the stride by {factor}")
    for _ in range(steps):
        sizes = _input_sizes(model, in_chans)
        strided = [m for m, size in sizes.items() if _stride_of(m) > 1]
        if len(strided) < 2:
            raise ModelError(f"{name}: has too few downsampling layers for output_stride")
        coarsest = min(sizes[m] for m in strided)
        for layer in (m for m in strided if sizes[m] == coarsest):
            if isinstance(layer, nn.Conv2d):
                layer.stride = (1, 1)
            else:
                # a 2x2 pooling with stride 1 would shift the map: make it the identity
                layer.stride, layer.kernel_size, layer.padding = 1, 1, 0  # type: ignore[assignment]
        for later, size in sizes.items():
            if isinstance(later, nn.Conv2d) and size < coarsest and max(later.kernel_size) > 1:
                dilation = (later.dilation[0] * 2, later.dilation[1] * 2)
                later.dilation = dilation
                # timm's "same" convolutions pad from their dilation at run time
                if isinstance(later.padding, tuple) and "Same" not in type(later).__name__:
                    later.padding = tuple(
                        d * (k - 1) // 2 for d, k in zip(dilation, later.kernel_size, strict=True)
                    )
