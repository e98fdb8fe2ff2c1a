"""One epoch of training, one pass of prediction, and the class-collapse check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from training.ema import WeightAverage
from training.progress import progress_bar
from training.schedule import LRSchedule

__all__ = [
    "EpochResult",
    "Normaliser",
    "Precision",
    "Stepper",
    "collapse_warning",
    "predict",
    "train_epoch",
]


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


@dataclass
class Stepper:
    """What one optimiser step needs: the optimiser and its scaler, the learning-rate
    schedule, the weight average, clipping, and gradient accumulation."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule | None = None
    ema: WeightAverage | None = None
    grad_clip: float = 0.0
    accumulate: int = 1

    def step(self, model: nn.Module, core: nn.Module) -> None:
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            self.schedule.step()
        if self.ema is not None:
            self.ema.update(core)


@dataclass(frozen=True)
class EpochResult:
    """Mean training loss per image and the images seen per class."""

    loss: float
    class_counts: tuple[int, ...]


def train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    stepper: Stepper,
    normalise: Normaliser,
    precision: Precision,
    *,
    classes: int,
    core: nn.Module | None = None,
    progress: bool = False,
    label: str = "train",
) -> EpochResult:
    """Train for one pass over ``loader``, one optimiser step per ``stepper.accumulate``
    batches (the last group may be shorter). Under DDP (``model`` wrapped, ``core`` the
    bare model) gradients are only synchronised on the batch that steps."""
    model.train()
    core = core if core is not None else model
    total, count = 0.0, 0
    counts = torch.zeros(classes, dtype=torch.long)
    batches = len(loader) if isinstance(loader, Sized) else None
    stepper.optimizer.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(_batches(loader, label, progress)):
        steps_now = (i + 1) % stepper.accumulate == 0 or (batches is not None and i + 1 == batches)
        inputs = normalise(images.to(precision.device, non_blocking=True))
        targets = targets.to(precision.device, non_blocking=True)
        sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if not steps_now and isinstance(model, nn.parallel.DistributedDataParallel):
            sync = model.no_sync()
        with sync:
            with precision.autocast():
                logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
            stepper.scaler.scale(loss / stepper.accumulate).backward()
        if steps_now:
            stepper.step(model, core)
        total += float(loss.detach()) * len(targets)
        count += len(targets)
        counts += torch.bincount(targets.cpu(), minlength=classes)[:classes]
    return EpochResult(total / max(count, 1), tuple(int(c) for c in counts))


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
