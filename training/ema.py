"""An exponential moving average of a model's weights (``optim.ema``).

After every optimiser step ``shadow = d * shadow + (1 - d) * weights`` for every
floating-point tensor of the state dict (batch-norm statistics included);
integer buffers are copied. The decay warms up as ``d_n = min(decay, (1 + n) /
(10 + n))`` after ``n`` updates (as timm's ``ModelEmaV2``'s warm-up), so short
runs are not dominated by their random start.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The averaged copy of a model, updated with :meth:`update`."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        current = model.state_dict()
        for key, shadow in self.model.state_dict().items():
            value = current[key].detach()
            if shadow.dtype.is_floating_point:
                shadow.mul_(d).add_(value.to(shadow.dtype), alpha=1.0 - d)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])
