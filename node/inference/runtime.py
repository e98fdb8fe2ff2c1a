"""Where and how models run: device, precision, memory layout, compilation.

Resolved once from :class:`~node.config.InferenceSettings` when the engine
starts; the engine then only asks for :meth:`Runtime.autocast` and
:meth:`Runtime.synchronize`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from node.config import InferenceSettings
from node.errors import ModelError

__all__ = ["PreparedMember", "Runtime", "prepare_member"]

TensorFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Runtime:
    """The resolved execution choices.

    Attributes:
        device: where tensors and models live.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast, ``None`` for fp32.
        channels_last: inputs and models in channels-last layout.
        compile: members are wrapped with ``torch.compile``.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    compile: bool

    @classmethod
    def from_settings(cls, settings: InferenceSettings) -> Runtime:
        """Resolve ``auto`` choices; :class:`ModelError` if CUDA is required but absent."""
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise ModelError("inference.device is cuda but no CUDA device is available")
        use_cuda = settings.device == "cuda" or (
            settings.device == "auto" and torch.cuda.is_available()
        )
        device = torch.device("cuda" if use_cuda else "cpu")
        precision = settings.precision
        if precision == "auto":
            precision = "bf16" if use_cuda else "fp32"
        if settings.threads > 0:
            torch.set_num_threads(settings.threads)
        return cls(
            device=device,
            autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
            channels_last=settings.channels_last,
            compile=settings.compile,
        )

    @property
    def precision(self) -> str:
        """``"bf16"`` or ``"fp32"``."""
        return "bf16" if self.autocast_dtype is not None else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast on this device, or a no-op context for fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (so that stage timings are real)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_input(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the chosen layout."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


@dataclass(frozen=True)
class PreparedMember:
    """A member's model on the device, split the way Grad-CAM needs it."""

    model: nn.Module
    features: TensorFn
    """``(N, C, H, W)`` input -> last feature map (timm ``forward_features``)."""
    head: TensorFn
    """Feature map -> logits (timm ``forward_head``)."""


def prepare_member(model: nn.Module, runtime: Runtime) -> PreparedMember:
    """Move ``model`` to the device in eval mode, frozen, optionally channels-last and compiled."""
    model = model.to(runtime.device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    features: TensorFn = model.forward_features  # type: ignore[assignment]
    head: TensorFn = model.forward_head  # type: ignore[assignment]
    if runtime.compile:
        features = torch.compile(features)
        head = torch.compile(head)
    return PreparedMember(model=model, features=features, head=head)
