"""The learning rate of every optimiser step: linear warm-up, then cosine, plateau or constant.

``lr(step) = base_lr * warmup(step) * after(step)``, with ``warmup`` rising
linearly from ``1/W`` to 1 over the first ``W`` optimiser steps and ``after``
one of

* ``cosine``: ``0.5 * (1 + cos(pi * p))``, ``p`` the fraction of the steps after
  warm-up done (0 at the end of warm-up, 1 at the last step);
* ``plateau``: 1, multiplied by ``plateau_factor`` whenever the validation AUC
  has not improved for more than ``plateau_patience`` epochs (as
  ``torch.optim.lr_scheduler.ReduceLROnPlateau`` in ``max`` mode, threshold 0);
* ``constant``: 1.

The state (steps done, plateau scale, best score) is saved in checkpoints, so
a resumed run continues with exactly the same rates.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

__all__ = ["LRSchedule"]


class LRSchedule:
    """Sets the learning rate of ``optimizer``'s parameter groups before every step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: Literal["cosine", "plateau", "constant"],
        *,
        total_steps: int,
        warmup_steps: int = 0,
        plateau_patience: int = 2,
        plateau_factor: float = 0.3,
    ) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(total_steps, 1)
        self.warmup_steps = max(warmup_steps, 0)
        self.patience = plateau_patience
        self.factor = plateau_factor
        self.base = [float(group["lr"]) for group in optimizer.param_groups]
        self.steps = 0
        self.scale = 1.0
        self.best = -math.inf
        self.stale = 0
        self._apply()

    def multiplier(self, step: int | None = None) -> float:
        """The factor on the base rate for optimiser step ``step`` (0-based; default: next)."""
        s = self.steps if step is None else step
        warm = min(1.0, (s + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = min(max(s - self.warmup_steps, 0) / span, 1.0)
            return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "plateau":
            return warm * self.scale
        return warm

    def _apply(self) -> None:
        factor = self.multiplier()
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        """After an optimiser step: set the rate of the next one."""
        self.steps += 1
        self._apply()

    def end_epoch(self, score: float) -> None:
        """After validation (``plateau`` only reacts): ``score`` is the epoch's AUC."""
        if self.kind != "plateau":
            return
        if score > self.best:
            self.best, self.stale = score, 0
        else:
            self.stale += 1
            if self.stale > self.patience:
                self.scale *= self.factor
                self.stale = 0
        self._apply()

    @property
    def lr(self) -> float:
        """The current rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "scale": self.scale,
            "best": self.best,
            "stale": self.stale,
            "base": list(self.base),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.stale = int(state["stale"])
        self.base = [float(b) for b in state["base"]]
        self._apply()
