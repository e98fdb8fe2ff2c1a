"""Ensemble arithmetic: calibration, test-time augmentation, aggregation, decisions.

Pure functions on arrays and tensors; no models, no I/O.

* Each member's logits are calibrated by its temperature:
  ``softmax(logits / T)``.
* Test-time augmentation (TTA): each member sees every view of an image; the
  member's probabilities are the mean over views.
* The ensemble's probabilities are the members' weighted mean; its uncertainty is
  the weighted standard deviation of the members' malignancy probabilities.
* Per breast: max (default) or mean of that breast's images; per study: max
  over breasts.
* Decision: study probability ``>=`` the operating point's threshold.
  Assessment category: the band of the probability (``AssessmentBands``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

__all__ = [
    "TTA_VIEWS",
    "TTAView",
    "aggregate",
    "apply_view",
    "assessment_category",
    "breast_scores",
    "calibrated_probabilities",
    "combine_members",
    "study_score",
    "tta_views",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TTAView:
    """One test-time view of the model input.

    Attributes:
        name: short identifier.
        flip: mirror left-right.
        scale: zoom about the image centre (``> 1`` enlarges the content).
        shift: ``(dx, dy)`` translation as a fraction of the width/height.
    """

    name: str
    flip: bool = False
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.scale == 1.0 and self.shift == (0.0, 0.0)


TTA_VIEWS: tuple[TTAView, ...] = (
    TTAView("identity"),
    TTAView("hflip", flip=True),
    TTAView("zoom_in", scale=1.1),
    TTAView("zoom_out", scale=0.9),
    TTAView("shift", shift=(0.03, 0.03)),
)
"""The views in the order ``multi`` takes them."""


def tta_views(
    mode: Literal["none", "flip", "multi"], count: int = len(TTA_VIEWS)
) -> tuple[TTAView, ...]:
    """Views for a TTA mode.

    ``none``: identity; ``flip``: identity and mirror; ``multi``: the first ``count``
    of :data:`TTA_VIEWS`.
    """
    if mode == "none":
        return TTA_VIEWS[:1]
    if mode == "flip":
        return TTA_VIEWS[:2]
    if not 1 <= count <= len(TTA_VIEWS):
        raise ValueError(f"multi TTA takes 1 to {len(TTA_VIEWS)} views, got {count}")
    return TTA_VIEWS[:count]


def apply_view(batch: torch.Tensor, view: TTAView) -> torch.Tensor:
    """The view of an ``(N, C, H, W)`` batch; zoom and shift are bilinear, zero-filled.

    Apply it before normalisation so the fill is black.
    """
    out = batch.flip(-1) if view.flip else batch
    if view.scale == 1.0 and view.shift == (0.0, 0.0):
        return out
    n = out.shape[0]
    theta = torch.zeros((n, 2, 3), dtype=out.dtype, device=out.device)
    theta[:, 0, 0] = 1.0 / view.scale
    theta[:, 1, 1] = 1.0 / view.scale
    # affine_grid maps output to input positions in [-1, 1]: moving content by +d
    # means sampling from -d (a full width is 2 in these units)
    theta[:, 0, 2] = -2.0 * view.shift[0]
    theta[:, 1, 2] = -2.0 * view.shift[1]
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    return F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def calibrated_probabilities(
    logits: torch.Tensor | npt.ArrayLike, temperature: float
) -> FloatArray:
    """``softmax(logits / temperature)`` over the last axis, as float64."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    values = logits.detach().float().cpu().numpy() if isinstance(logits, torch.Tensor) else logits
    scaled = np.asarray(values, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def combine_members(
    member_probabilities: npt.ArrayLike, weights: Sequence[float], malignant_index: int
) -> tuple[FloatArray, FloatArray]:
    """Weighted mean of members' probabilities and their disagreement.

    Args:
        member_probabilities: ``(M, N, C)``: M members, N images, C classes.
        weights: M positive weights (normalised here).
        malignant_index: the malignant class.

    Returns:
        ``(probabilities (N, C), uncertainty (N,))``; uncertainty is the weighted
        standard deviation of the members' malignancy probabilities, in ``[0, 0.5]``.
    """
    probs = np.asarray(member_probabilities, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] != w.shape[0]:
        raise ValueError(f"expected ({w.shape[0]}, N, C) probabilities, got {probs.shape}")
    if (w <= 0).any():
        raise ValueError("member weights must be positive")
    w = w / w.sum()
    mean = np.tensordot(w, probs, axes=1)
    malignant = probs[:, :, malignant_index]
    spread = np.sqrt(np.tensordot(w, (malignant - mean[:, malignant_index]) ** 2, axes=1))
    return mean, spread


def aggregate(scores: Sequence[float], mode: Literal["max", "mean"]) -> float:
    """Max or mean of a non-empty sequence of scores."""
    if not scores:
        raise ValueError("nothing to aggregate")
    return float(max(scores)) if mode == "max" else float(np.mean(scores))


def breast_scores(
    lateralities: Sequence[str], scores: Sequence[float], mode: Literal["max", "mean"]
) -> dict[str, float]:
    """Per-laterality aggregate of image scores, in order of first appearance."""
    if len(lateralities) != len(scores):
        raise ValueError("one laterality per score is needed")
    groups: dict[str, list[float]] = {}
    for side, score in zip(lateralities, scores, strict=True):
        groups.setdefault(side, []).append(float(score))
    return {side: aggregate(values, mode) for side, values in groups.items()}


def study_score(breasts: Mapping[str, float]) -> float:
    """The study's score: the highest breast score."""
    return aggregate(list(breasts.values()), "max")


def assessment_category(
    probability: float, categories: Sequence[str], cut_points: Sequence[float]
) -> str:
    """The category whose band holds ``probability`` (bands are ``[cut[i-1], cut[i])``)."""
    if len(categories) != len(cut_points) + 1:
        raise ValueError("categories must have one more entry than cut_points")
    index = int(
        np.searchsorted(np.asarray(cut_points, dtype=np.float64), probability, side="right")
    )
    return categories[index]
