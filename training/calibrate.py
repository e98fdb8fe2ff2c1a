"""Fitting on validation data: temperatures, ensemble weights, operating thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize, minimize_scalar

from node.inference.ensemble import calibrated_probabilities
from training.metrics import roc_auc, stats_at_threshold, threshold_for_sensitivity

__all__ = [
    "WeightChoice",
    "choose_weights",
    "fit_temperature",
    "fit_weights",
    "negative_log_likelihood",
    "operating_points",
]

FloatArray = npt.NDArray[np.float64]
_EPS = 1e-12
_MIN_WEIGHT = 1e-3  # the card needs weights > 0


def negative_log_likelihood(probabilities: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Mean ``-log p[target]`` of ``(N, C)`` probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    return float(-np.log(np.clip(p[np.arange(t.size), t], _EPS, 1.0)).mean())


def _tta_probabilities(view_logits: FloatArray, temperature: float) -> FloatArray:
    probs: FloatArray = np.mean(
        [calibrated_probabilities(v, temperature) for v in view_logits], axis=0
    )
    return probs


def fit_temperature(view_logits: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """The temperature minimising validation NLL of ``mean_v softmax(logits_v / T)``.

    ``view_logits`` is ``(V, N, C)`` (one slice per TTA view, as the node averages
    them) or ``(N, C)``. Searched on ``log T`` in ``[log 0.05, log 20]``.
    """
    logits = np.asarray(view_logits, dtype=np.float64)
    if logits.ndim == 2:
        logits = logits[None]
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(_tta_probabilities(logits, np.exp(log_t)), targets),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def _normalised(weights: npt.ArrayLike) -> FloatArray:
    w = np.maximum(np.asarray(weights, dtype=np.float64), _MIN_WEIGHT)
    return w / w.sum()  # type: ignore[no-any-return]


def fit_weights(
    member_probabilities: npt.ArrayLike,
    targets: npt.ArrayLike,
    malignant_index: int,
    method: Literal["nll", "auc", "equal"] = "nll",
) -> FloatArray:
    """Non-negative member weights summing to 1, fitted on validation.

    ``nll``: minimise the NLL of the weighted mean (weights parametrised by a
    softmax, so they stay positive); ``auc``: the best malignant-vs-rest AUC on a
    0.1-step grid of the simplex (ties: lower NLL); ``equal``: ``1/M``. Weights are
    floored at 0.001 because the model card needs them positive.
    """
    probs = np.asarray(member_probabilities, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    members = probs.shape[0]
    if method == "equal" or members == 1:
        return np.full(members, 1.0 / members)

    def nll(w: FloatArray) -> float:
        return negative_log_likelihood(np.tensordot(w, probs, axes=1), t)

    if method == "nll":

        def objective(theta: FloatArray) -> float:
            w = np.exp(theta - theta.max())
            return nll(w / w.sum())

        result = minimize(objective, np.zeros(members), method="Nelder-Mead")
        w = np.exp(result.x - result.x.max())
        return _normalised(w / w.sum())
    positive = t == malignant_index
    best: tuple[float, float, FloatArray] | None = None
    steps = 10
    for combo in product(range(steps + 1), repeat=members - 1):
        if sum(combo) > steps:
            continue
        w = np.array([*combo, steps - sum(combo)], dtype=np.float64) / steps
        scores = np.tensordot(w, probs[:, :, malignant_index], axes=1)
        key = (roc_auc(positive, scores), -nll(_normalised(w)))
        if best is None or key > best[:2]:
            best = (key[0], key[1], w)
    assert best is not None
    return _normalised(best[2])


def operating_points(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    sensitivities: Sequence[float] = (0.90, 0.95),
) -> list[dict[str, float | str]]:
    """Card operating points: the highest threshold reaching each sensitivity on validation."""
    points: list[dict[str, float | str]] = []
    for target in sensitivities:
        threshold = threshold_for_sensitivity(labels, scores, target)
        stats = stats_at_threshold(labels, scores, threshold)
        points.append(
            {
                "name": f"sens{round(target * 100)}",
                "threshold": round(threshold, 6),
                "sensitivity": round(stats.sensitivity, 4),
                "specificity": round(stats.specificity, 4),
            }
        )
    return points


@dataclass(frozen=True)
class WeightChoice:
    """Member (or group) weights and how they were chosen (written to the card)."""

    weights: FloatArray
    description: str


def _per_sample_nll(probabilities: FloatArray, targets: npt.NDArray[np.int64]) -> FloatArray:
    picked = probabilities[np.arange(targets.size), targets]
    out: FloatArray = -np.log(np.clip(picked, _EPS, 1.0))
    return out


def choose_weights(
    member_probabilities: npt.ArrayLike,
    targets: npt.ArrayLike,
    malignant_index: int,
    method: Literal["nll", "auc", "equal", "auto"],
    groups: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> WeightChoice:
    """Weights by ``method``; ``auto`` keeps NLL-fitted weights only when they tell the
    members apart.

    ``auto``: the patients (``groups``) are split at random into two halves; weights
    fitted on one half are scored on the other (cross-fitting, so the comparison is
    not flattered by fitting), per image, as the NLL difference to equal weights. If
    the 95 % bootstrap interval (patients resampled) of the mean difference lies
    below zero, the weights fitted on all images are used; otherwise equal weights.
    """
    probs = np.asarray(member_probabilities, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    members = probs.shape[0]
    n = f"{t.size} images of {len(set(groups))} patients"
    if members == 1:
        return WeightChoice(
            np.ones(1),
            "one architecture: its members (folds or runs) cannot be told apart by their "
            "architecture and weigh the same",
        )
    if method != "auto":
        weights = fit_weights(probs, t, malignant_index, method)
        return WeightChoice(weights, f"{method} weights fitted on {n}")
    keys = np.asarray(groups)
    patients = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(patients)[: patients.size // 2].tolist())
    in_a = np.array([k in half for k in keys])
    equal = np.full(members, 1.0 / members)
    difference = np.zeros(t.size)
    for fit_on, score_on in ((in_a, ~in_a), (~in_a, in_a)):
        if not score_on.any() or not fit_on.any():
            continue
        w = fit_weights(probs[:, fit_on], t[fit_on], malignant_index, "nll")
        part = probs[:, score_on]
        difference[score_on] = _per_sample_nll(
            np.tensordot(w, part, axes=1), t[score_on]
        ) - _per_sample_nll(np.tensordot(equal, part, axes=1), t[score_on])
    members_of = [np.flatnonzero(keys == p) for p in patients]
    means = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members_of), len(members_of))
        means.append(float(difference[np.concatenate([members_of[i] for i in picked])].mean()))
    low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    mean = float(difference.mean())
    summary = (
        f"cross-fitted NLL of fitted minus equal weights {mean:+.4f} [{low:+.4f}, {high:+.4f}] "
        f"on {n}"
    )
    if high < 0:
        weights = fit_weights(probs, t, malignant_index, "nll")
        return WeightChoice(weights, f"nll weights: they beat equal weights ({summary})")
    return WeightChoice(equal, f"equal weights: fitted weights do not beat them ({summary})")
