"""Patient-grouped splits: hold-out fractions, stratified k-fold, official splits.

Images of one patient never land in two parts (random image-level splits put
the other view of the same breast in the test set and inflate AUC by about
0.1). Stratification is on each patient's worst label (malignant > benign >
normal), so every part keeps the dataset's case mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.datasets.sample import LABELS, Sample

__all__ = ["Split", "grouped_kfold", "grouped_split", "official_split", "patient_labels"]

_OFFICIAL_NAMES = {
    "train": "train",
    "training": "train",
    "valid": "val",
    "val": "val",
    "validation": "val",
    "test": "test",
}


@dataclass(frozen=True)
class Split:
    """Indices into the sample list for training, validation and test (each may be empty)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...] = ()


def patient_labels(samples: Sequence[Sample]) -> dict[str, int]:
    """Patient id -> index in :data:`LABELS` of that patient's worst image label."""
    worst: dict[str, int] = {}
    for sample in samples:
        rank = LABELS.index(sample.label)
        worst[sample.patient_id] = max(worst.get(sample.patient_id, 0), rank)
    return worst


def _stratified_patient_folds(samples: Sequence[Sample], folds: int, seed: int) -> list[list[str]]:
    """Patients dealt round-robin into ``folds`` groups within each label stratum."""
    if folds < 2:
        raise ValueError("at least two folds are needed")
    rng = np.random.default_rng(seed)
    labels = patient_labels(samples)
    groups: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    for rank in range(len(LABELS)):
        patients = sorted(p for p, r in labels.items() if r == rank)
        rng.shuffle(patients)
        for i, patient in enumerate(patients):
            groups[(i + offset) % folds].append(patient)
        offset += len(patients)
    return groups


def _indices(samples: Sequence[Sample], patients: set[str]) -> tuple[int, ...]:
    return tuple(i for i, s in enumerate(samples) if s.patient_id in patients)


def grouped_kfold(samples: Sequence[Sample], folds: int, seed: int = 0) -> list[Split]:
    """Stratified, patient-grouped k-fold: split ``k`` validates on fold ``k``."""
    groups = _stratified_patient_folds(samples, folds, seed)
    splits = []
    for k in range(folds):
        val = set(groups[k])
        train = {p for i, g in enumerate(groups) if i != k for p in g}
        splits.append(Split(_indices(samples, train), _indices(samples, val)))
    return splits


def grouped_split(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> Split:
    """A stratified hold-out split by patient with about the given fractions of patients."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("fractions must lie in (0, 1) and sum to less than 1")
    # 20 groups give 5 % steps, enough for hold-out fractions
    parts = 20
    groups = _stratified_patient_folds(samples, parts, seed)
    n_val = max(1, round(val_fraction * parts))
    n_test = round(test_fraction * parts)
    val = {p for g in groups[:n_val] for p in g}
    test = {p for g in groups[n_val : n_val + n_test] for p in g}
    train = {p for g in groups[n_val + n_test :] for p in g}
    return Split(_indices(samples, train), _indices(samples, val), _indices(samples, test))


def official_split(samples: Sequence[Sample], val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The dataset's own split; validation taken from its training part by patient if absent.

    Raises :class:`ValueError` when the dataset has no official split.
    """
    names = [_OFFICIAL_NAMES.get((s.split or "").lower()) for s in samples]
    if not any(names):
        raise ValueError("this dataset has no official split")
    test = tuple(i for i, n in enumerate(names) if n == "test")
    val = tuple(i for i, n in enumerate(names) if n == "val")
    train = tuple(i for i, n in enumerate(names) if n == "train")
    if not val:
        train_samples = [samples[i] for i in train]
        inner = grouped_split(train_samples, val_fraction, seed=seed)
        val = tuple(train[i] for i in inner.val)
        train = tuple(train[i] for i in inner.train)
    return Split(train, val, test)
