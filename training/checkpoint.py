"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model, optimiser and scheduler states, the epoch just
finished, the best validation score so far, the epochs since it improved, and
the random states of Python, numpy and torch (CPU and CUDA). Written to a
temporary file and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Checkpoint", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns (states are applied by the caller)."""

    epoch: int
    best_score: float
    stale_epochs: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    extra: dict[str, Any]


def rng_state() -> dict[str, Any]:
    """Random states of Python, numpy and torch (and CUDA when present)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    best_score: float,
    stale_epochs: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (DDP-wrapped models are saved unwrapped)."""
    data = {
        "epoch": epoch,
        "best_score": best_score,
        "stale_epochs": stale_epochs,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (onto the CPU)."""
    # our own file with numpy RNG state inside: weights_only=False is needed
    data = torch.load(path, map_location="cpu", weights_only=False)
    return Checkpoint(
        epoch=int(data["epoch"]),
        best_score=float(data["best_score"]),
        stale_epochs=int(data["stale_epochs"]),
        model=data["model"],
        optimizer=data["optimizer"],
        scheduler=data["scheduler"],
        rng=data["rng"],
        extra=data.get("extra", {}),
    )
