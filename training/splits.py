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


def _quotas(sizes: Sequence[int], fraction: float, total: int) -> list[int]:
    """``total`` spread over strata of ``sizes`` in proportion (largest remainders first)."""
    exact = [fraction * size for size in sizes]
    quotas = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (quotas[i] - exact[i], i))
    for i in order:
        if sum(quotas) >= total:
            break
        if quotas[i] < sizes[i]:
            quotas[i] += 1
    return quotas


def grouped_split(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> Split:
    """A stratified hold-out split by patient with the given fractions of patients.

    ``round(fraction * patients)`` patients go to validation (at least one, and at
    least one patient is left for training), shared out over the label strata in
    proportion; then the test part likewise; the rest train.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("fractions must lie in (0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    labels = patient_labels(samples)
    strata = []
    for rank in range(len(LABELS)):
        patients = sorted(p for p, r in labels.items() if r == rank)
        rng.shuffle(patients)
        strata.append(patients)
    count = len(labels)
    n_val = min(max(1, round(val_fraction * count)), max(count - 1, 0))
    n_test = min(round(test_fraction * count), max(count - 1 - n_val, 0))
    sizes = [len(p) for p in strata]
    val_quota = _quotas(sizes, val_fraction, n_val)
    left = [size - q for size, q in zip(sizes, val_quota, strict=True)]
    test_quota = _quotas(left, test_fraction / max(1 - val_fraction, 1e-9), n_test)
    val: set[str] = set()
    test: set[str] = set()
    for patients, v, t in zip(strata, val_quota, test_quota, strict=True):
        val.update(patients[:v])
        test.update(patients[v : v + t])
    train = set(labels) - val - test
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
