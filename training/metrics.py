"""Classification metrics in numpy: AUC (with ties), bootstrap CI, ROC, thresholds, ECE.

All functions take binary labels (1 = malignant) and scores where higher means
more suspicious, unless stated otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = [
    "BinaryStats",
    "bootstrap_auc",
    "confusion_matrix",
    "expected_calibration_error",
    "probabilistic_f1",
    "roc_auc",
    "roc_curve",
    "stats_at_threshold",
    "threshold_for_sensitivity",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]


def _binary(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half).

    Returns ``nan`` when only one class is present.
    """
    y, s = _binary(labels, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: a tie contributes 1/2
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def bootstrap_auc(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    groups: npt.ArrayLike | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC.

    With ``groups`` (e.g. patient ids) whole groups are resampled, which keeps
    correlated images of one patient together. Resamples with one class only
    are skipped.
    """
    y, s = _binary(labels, scores)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(y.size)]
    else:
        keys = np.asarray(groups)
        members = [np.flatnonzero(keys == k) for k in dict.fromkeys(keys.tolist())]
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[i] for i in picked])
        value = roc_auc(y[index], s[index])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def roc_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(false positive rates, true positive rates, thresholds)``, thresholds decreasing.

    The first point is ``(0, 0)`` at threshold ``inf``; a point per distinct score
    (predicted positive when ``score >= threshold``).
    """
    y, s = _binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(y.sum(), 1.0), max(y.size - y.sum(), 1.0)
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s[distinct]]


@dataclass(frozen=True)
class BinaryStats:
    """Counts and rates at one threshold (positive when ``score >= threshold``)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "sensitivity_ci95": list(wilson_interval(self.tp, self.tp + self.fn)),
            "specificity": self.specificity,
            "specificity_ci95": list(wilson_interval(self.tn, self.tn + self.fp)),
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }


def stats_at_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> BinaryStats:
    """Confusion counts when ``score >= threshold`` is called positive."""
    y, s = _binary(labels, scores)
    predicted = s >= threshold
    positive = y == 1
    return BinaryStats(
        threshold=float(threshold),
        tp=int((predicted & positive).sum()),
        fp=int((predicted & ~positive).sum()),
        tn=int((~predicted & ~positive).sum()),
        fn=int((~predicted & positive).sum()),
    )


def threshold_for_sensitivity(
    labels: npt.ArrayLike, scores: npt.ArrayLike, sensitivity: float
) -> float:
    """The highest threshold whose sensitivity is at least ``sensitivity``.

    The highest such threshold gives the best specificity at that sensitivity.
    """
    y, s = _binary(labels, scores)
    positives = np.sort(s[y == 1])[::-1]
    if positives.size == 0:
        raise ValueError("no positive cases to set a sensitivity on")
    needed = int(np.ceil(sensitivity * positives.size - 1e-9))
    return float(positives[max(needed, 1) - 1])


def confusion_matrix(
    targets: npt.ArrayLike, predicted: npt.ArrayLike, classes: int
) -> npt.NDArray[np.int64]:
    """``(classes, classes)`` counts; rows are true classes, columns predicted."""
    t = np.asarray(targets, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def expected_calibration_error(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = 10
) -> float:
    """ECE of binary probabilities: the bin-size-weighted mean ``|observed - predicted|``.

    Equal-width bins on ``[0, 1]``; the last bin includes 1.
    """
    y, p = _binary(labels, probabilities)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return float(total / max(y.size, 1))


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``nan`` bounds for zero trials).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the
    normal quantile of ``(1 + level) / 2``; unlike the normal approximation it
    stays inside ``[0, 1]`` and is sensible at 0 or ``n`` successes.
    """
    if trials <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def probabilistic_f1(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Probabilistic F1 (the RSNA 2023 metric): F1 with the scores as soft predictions.

    ``pP = sum(p * y) / sum(p)``, ``pR = sum(p * y) / sum(y)``, ``pF1 = 2 pP pR /
    (pP + pR)``; ``nan`` without positives.
    """
    y, p = _binary(labels, scores)
    if y.sum() == 0:
        return float("nan")
    true = float((p * y).sum())
    precision = true / max(float(p.sum()), 1e-12)
    recall = true / float(y.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
