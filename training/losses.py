"""Losses for imbalanced classes: weighted cross-entropy and focal loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["FocalLoss", "build_loss", "class_weights", "sample_weights"]


def class_weights(
    targets: Sequence[int], classes: int, mode: Literal["none", "inverse", "sqrt_inverse"]
) -> torch.Tensor:
    """Per-class weights from class counts, normalised to mean 1 over present classes.

    ``inverse``: ``1 / count``; ``sqrt_inverse``: ``1 / sqrt(count)`` (milder);
    ``none``: ones. Absent classes get weight 0.
    """
    counts = torch.bincount(torch.as_tensor(list(targets), dtype=torch.long), minlength=classes)
    counts = counts.to(torch.float64)
    present = counts > 0
    if mode == "none":
        weights = present.to(torch.float64)
    else:
        power = 1.0 if mode == "inverse" else 0.5
        weights = torch.where(present, counts.clamp(min=1) ** -power, torch.zeros_like(counts))
    weights = weights * present.sum() / weights.sum()
    return weights.to(torch.float32)


def sample_weights(targets: Sequence[int], classes: int) -> torch.Tensor:
    """Per-sample weights that make every present class equally likely in a weighted sampler."""
    counts = torch.bincount(torch.as_tensor(list(targets), dtype=torch.long), minlength=classes)
    per_class = 1.0 / counts.clamp(min=1).to(torch.float64)
    return per_class[torch.as_tensor(list(targets), dtype=torch.long)]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): ``-w_y (1 - p_y)^gamma log p_y``, mean over the batch.

    With ``gamma = 0`` and the same weights it equals weighted cross-entropy
    averaged per sample.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.weight: torch.Tensor | None
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


def build_loss(
    kind: Literal["cross_entropy", "focal"],
    weight: torch.Tensor | None,
    *,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
) -> nn.Module:
    """The configured loss module."""
    if kind == "focal":
        return FocalLoss(gamma, weight)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
