"""Image scores to breast and study scores, with the node's own aggregation functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from node.inference.ensemble import aggregate, breast_scores, study_score
from training.datasets.sample import Sample

__all__ = ["breast_level", "study_level"]


def _groups(keys: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def breast_level(
    samples: Sequence[Sample], scores: npt.ArrayLike, mode: Literal["max", "mean"] = "max"
) -> tuple[list[str], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Per breast (study and laterality): keys, cancer labels and aggregated scores."""
    values = np.asarray(scores, dtype=np.float64)
    groups = _groups([f"{s.study_id}|{s.laterality}" for s in samples])
    keys = list(groups)
    labels = np.array([any(samples[i].malignant for i in groups[k]) for k in keys])
    out = np.array([aggregate([float(values[i]) for i in groups[k]], mode) for k in keys])
    return keys, labels, out


def study_level(
    samples: Sequence[Sample], scores: npt.ArrayLike, mode: Literal["max", "mean"] = "max"
) -> tuple[list[str], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Per study: ids, cancer labels and scores (max over breasts, as the node scores a study)."""
    values = np.asarray(scores, dtype=np.float64)
    groups = _groups([s.study_id for s in samples])
    ids = list(groups)
    labels = np.array([any(samples[i].malignant for i in groups[k]) for k in ids])
    out = np.array(
        [
            study_score(
                breast_scores(
                    [samples[i].laterality for i in groups[k]],
                    [float(values[i]) for i in groups[k]],
                    mode,
                )
            )
            for k in ids
        ]
    )
    return ids, labels, out
