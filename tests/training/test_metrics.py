"""Metric, calibration and loss functions against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from node.inference.ensemble import calibrated_probabilities
from training.calibrate import choose_weights, fit_temperature, fit_weights, operating_points
from training.loop import collapse_warning
from training.losses import FocalLoss, class_weights, sample_weights
from training.metrics import (
    bootstrap_auc,
    confusion_matrix,
    expected_calibration_error,
    probabilistic_f1,
    roc_auc,
    roc_curve,
    stats_at_threshold,
    threshold_for_sensitivity,
    wilson_interval,
)


def test_auc_by_hand() -> None:
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4): 3 of 4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert roc_auc([1, 1, 0], [0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1], [0.9, 0.8, 0.1]) == 0.0
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds.tolist() == [np.inf, 0.8, 0.4, 0.35, 0.1]
    # the trapezoid area under these points is the AUC
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_thresholds_and_counts() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.4, 0.2, 0.1, 0.05]
    assert threshold_for_sensitivity(labels, scores, 0.75) == 0.6
    assert threshold_for_sensitivity(labels, scores, 0.9) == 0.3  # 4 of 4 needed
    stats = stats_at_threshold(labels, scores, 0.6)
    assert (stats.tp, stats.fp, stats.tn, stats.fn) == (3, 1, 5, 1)
    assert stats.sensitivity == 0.75 and stats.specificity == pytest.approx(5 / 6)
    points = operating_points(labels, scores, (0.75,))
    assert points == [
        {"name": "sens75", "threshold": 0.6, "sensitivity": 0.75, "specificity": 0.8333}
    ]


def test_confusion_and_ece() -> None:
    matrix = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    # bin [0.1, 0.2): predicted 0.1, observed 0.5; bin [0.9, 1]: 0.9 vs 1.0
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.25)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_bootstrap_is_seeded_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = labels + rng.normal(0, 1.0, 200)
    auc = roc_auc(labels, scores)
    first = bootstrap_auc(labels, scores, resamples=300, seed=3)
    assert first == bootstrap_auc(labels, scores, resamples=300, seed=3)
    assert first != bootstrap_auc(labels, scores, resamples=300, seed=4)
    assert first[0] < auc < first[1] and first[1] - first[0] < 0.3
    groups = np.repeat(np.arange(50), 4)
    low, high = bootstrap_auc(labels, scores, groups=groups, resamples=300, seed=3)
    assert low < auc < high
    assert bootstrap_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], resamples=50) == (1.0, 1.0)


def test_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, (4000, 3))
    probs = calibrated_probabilities(true_logits, 1.0)
    targets = np.array([rng.choice(3, p=p) for p in probs])
    fitted = fit_temperature(true_logits * 2.5, targets)  # a model 2.5x too confident
    assert fitted == pytest.approx(2.5, rel=0.1)
    # two TTA views with the same logits give the same temperature
    both = fit_temperature(np.stack([true_logits * 2.5] * 2), targets)
    assert both == pytest.approx(fitted, rel=1e-3)


def test_weights_prefer_the_informative_member() -> None:
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 2, 300)
    good = np.stack([1 - (0.1 + 0.8 * targets), 0.1 + 0.8 * targets], axis=1)
    noise = rng.uniform(0.2, 0.8, 300)
    bad = np.stack([1 - noise, noise], axis=1)
    members = np.stack([good, bad])
    for method in ("nll", "auc"):
        weights = fit_weights(members, targets, 1, method)  # type: ignore[arg-type]
        assert weights.sum() == pytest.approx(1.0)
        assert (weights > 0).all() and weights[0] > 0.8
    assert fit_weights(members, targets, 1, "equal").tolist() == [0.5, 0.5]


def test_losses_and_class_weights() -> None:
    weights = class_weights([0] * 6 + [1] * 3 + [2], 3, "inverse")
    expected = np.array([1 / 6, 1 / 3, 1.0])
    assert weights.numpy() == pytest.approx(expected * 3 / expected.sum())
    assert class_weights([0, 0, 1], 3, "none").tolist() == [1.0, 1.0, 0.0]
    assert sample_weights([0, 0, 0, 1], 2).tolist() == pytest.approx([1 / 3] * 3 + [1.0])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    target = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target) == pytest.approx(float(ce))
    # focusing lowers the loss of the well-classified first image the most
    focal = FocalLoss(gamma=2.0)(logits, target)
    assert float(focal) < float(ce)


def test_collapse_warning() -> None:
    labels = ("normal", "benign", "malignant")
    assert "class collapse" in (collapse_warning([0] * 50, labels) or "")
    assert collapse_warning([0] * 40 + [2] * 10, labels) is None


def test_wilson_interval_by_hand() -> None:
    # 8 of 10: (0.8 + 1.9208/10 -+ 1.96 sqrt(0.016 + 0.00096)) / 1.38416
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(np.isnan(wilson_interval(0, 0)))
    stats = stats_at_threshold([1, 1, 0, 0, 0], [0.9, 0.2, 0.1, 0.6, 0.3], 0.5).to_dict()
    assert stats["sensitivity_ci95"] == list(wilson_interval(1, 2))
    assert stats["specificity_ci95"] == list(wilson_interval(2, 3))


def test_probabilistic_f1_by_hand() -> None:
    # pP = 1.7 / 2.1, pR = 1.7 / 2
    expected = 2 * (1.7 / 2.1) * 0.85 / (1.7 / 2.1 + 0.85)
    assert probabilistic_f1([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.3]) == pytest.approx(expected)
    assert np.isnan(probabilistic_f1([0, 0], [0.2, 0.3]))


def test_auto_weights_keep_equal_weights_for_members_that_cannot_be_told_apart() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 400)
    informative = np.where(targets[:, None] == np.arange(2), 0.8, 0.2)
    noise = rng.dirichlet((1, 1), 400)
    # two members as good as each other, with errors of their own
    first = 0.7 * informative + 0.3 * rng.dirichlet((1, 1), 400)
    second = 0.7 * informative + 0.3 * rng.dirichlet((1, 1), 400)
    patients = [f"p{i // 2}" for i in range(400)]
    same = choose_weights(np.stack([first, second]), targets, 1, "auto", patients)
    assert same.description.startswith("equal weights")
    assert same.weights == pytest.approx([0.5, 0.5])
    apart = choose_weights(np.stack([informative, noise]), targets, 1, "auto", patients)
    assert apart.description.startswith("nll weights") and apart.weights[0] > 0.9
