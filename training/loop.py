"""One epoch of training, one pass of prediction, and the class-collapse check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from training.progress import progress_bar

__all__ = ["Normaliser", "Precision", "collapse_warning", "predict", "train_epoch"]


class Normaliser:
    """The card's input normalisation: repeat the grey channel, subtract mean, divide by std."""

    def __init__(self, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.expand(-1, self.channels, -1, -1) if batch.shape[1] != self.channels else batch
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


@dataclass(frozen=True)
class Precision:
    """Autocast settings: mixed precision only on CUDA (bf16 where supported, else fp16)."""

    device: torch.device
    enabled: bool

    @property
    def dtype(self) -> torch.dtype:
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if not (self.enabled and self.device.type == "cuda"):
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        fp16 = self.enabled and self.device.type == "cuda" and self.dtype == torch.float16
        return torch.amp.GradScaler("cuda", enabled=fp16)


def _batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]], label: str, progress: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield from progress_bar(loader, label, enabled=progress)


def train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    normalise: Normaliser,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    *,
    grad_clip: float = 0.0,
    progress: bool = False,
    label: str = "train",
) -> float:
    """Train for one pass over ``loader``; returns the mean loss per image."""
    model.train()
    total, count = 0.0, 0
    for images, targets in _batches(loader, label, progress):
        images = normalise(images.to(precision.device, non_blocking=True))
        targets = targets.to(precision.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(targets)
        count += len(targets)
    return total / max(count, 1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    normalise: Normaliser,
    precision: Precision,
    *,
    progress: bool = False,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Logits ``(N, C)`` and targets ``(N,)`` of every batch, model in eval mode."""
    model.eval()
    logits, targets = [], []
    for images, target in _batches(loader, "predict", progress):
        with precision.autocast():
            out = model(normalise(images.to(precision.device)))
        logits.append(out.float().cpu().numpy())
        targets.append(target.numpy())
    return np.concatenate(logits).astype(np.float64), np.concatenate(targets).astype(np.int64)


def collapse_warning(predicted: npt.ArrayLike, labels: Sequence[str]) -> str | None:
    """A warning when (nearly) every image is predicted as one class, else ``None``.

    Class collapse is the usual failure of imbalanced training: the model
    learns to answer the majority class and the loss still falls.
    """
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=len(labels))
    share = counts.max() / max(counts.sum(), 1)
    if counts.sum() >= 10 and share >= 0.98:
        return (
            f"class collapse: {share:.0%} of validation images are predicted "
            f"'{labels[int(counts.argmax())]}' (check class weights / sampling / learning rate)"
        )
    return None
