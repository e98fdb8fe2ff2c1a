"""Ensemble arithmetic against hand-computed values, and TTA views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from node.inference.ensemble import (
    TTA_VIEWS,
    apply_view,
    assessment_category,
    breast_scores,
    calibrated_probabilities,
    combine_members,
    study_score,
    tta_views,
)


def test_temperature_scaled_softmax() -> None:
    probs = calibrated_probabilities(torch.tensor([[0.0, math.log(4.0)]]), temperature=2.0)
    # softmax([0, ln 4] / 2) = [1, 2] / 3
    np.testing.assert_allclose(probs, [[1 / 3, 2 / 3]], atol=1e-7)
    np.testing.assert_allclose(calibrated_probabilities([[1000.0, 1000.0]], 1.0), [[0.5, 0.5]])
    with pytest.raises(ValueError, match="positive"):
        calibrated_probabilities([[0.0, 1.0]], 0.0)


def test_weighted_mean_and_disagreement() -> None:
    members = [[[0.1, 0.1, 0.8]], [[0.3, 0.3, 0.4]]]
    probs, spread = combine_members(members, weights=[3, 1], malignant_index=2)
    np.testing.assert_allclose(probs, [[0.15, 0.15, 0.7]])
    # sqrt(0.75 * 0.1**2 + 0.25 * 0.3**2) = sqrt(0.03)
    np.testing.assert_allclose(spread, [math.sqrt(0.03)])
    _, none = combine_members([[[0.5, 0.5]], [[0.5, 0.5]]], [1, 1], 1)
    np.testing.assert_allclose(none, [0.0])
    with pytest.raises(ValueError, match="positive"):
        combine_members(members, [1, 0], 2)
    with pytest.raises(ValueError, match=r"expected \(3, N, C\)"):
        combine_members(members, [1, 1, 1], 2)


def test_breast_and_study_aggregation() -> None:
    sides = ["R", "L", "R", "L"]
    scores = [0.1, 0.6, 0.3, 0.2]
    assert breast_scores(sides, scores, "max") == {"R": 0.3, "L": 0.6}
    mean = breast_scores(sides, scores, "mean")
    assert mean == pytest.approx({"R": 0.2, "L": 0.4})
    assert study_score(mean) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="one laterality per score"):
        breast_scores(["L"], [0.1, 0.2], "max")


@pytest.mark.parametrize(
    ("probability", "category"),
    [(0.0, "1"), (0.0199, "1"), (0.02, "2"), (0.25, "3"), (0.3, "4"), (0.7, "5"), (1.0, "5")],
)
def test_assessment_bands(probability: float, category: str) -> None:
    assert (
        assessment_category(probability, ("1", "2", "3", "4", "5"), (0.02, 0.1, 0.3, 0.7))
        == category
    )


def test_tta_view_sets() -> None:
    assert [v.name for v in tta_views("none")] == ["identity"]
    assert [v.name for v in tta_views("flip")] == ["identity", "hflip"]
    assert tta_views("multi", 5) == TTA_VIEWS
    assert len(tta_views("multi", 3)) == 3
    with pytest.raises(ValueError, match="1 to 5 views"):
        tta_views("multi", 6)


def test_views_move_content_as_named() -> None:
    batch = torch.zeros(1, 1, 40, 20)
    batch[0, 0, 10, 4] = 1.0
    flipped = apply_view(batch, TTA_VIEWS[1])
    assert flipped[0, 0, 10, 15] == 1.0 and flipped.sum() == 1.0
    assert torch.equal(apply_view(batch, TTA_VIEWS[0]), batch)

    blob = torch.zeros(1, 1, 100, 100)
    blob[0, 0, 40:50, 40:50] = 1.0
    shifted = apply_view(blob, TTA_VIEWS[4])  # 3 % of 100 pixels right and down
    torch.testing.assert_close(shifted[0, 0, 43:53, 43:53], torch.ones(10, 10))
    # zoom about the centre: a centred square grows or shrinks by the factor
    square = torch.zeros(1, 1, 100, 100)
    square[0, 0, 30:70, 30:70] = 1.0
    assert apply_view(square, TTA_VIEWS[2]).sum().item() == pytest.approx(
        40 * 40 * 1.1**2, rel=0.03
    )
    assert apply_view(square, TTA_VIEWS[3]).sum().item() == pytest.approx(
        40 * 40 * 0.9**2, rel=0.03
    )
