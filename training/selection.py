"""Which images train, validate and test: one rule shared by train, cv, export and evaluate.

:func:`make_parts` turns a config's ``data`` section into training, validation
and test samples:

* ``val_root`` set: validation is that folder; training is ``root`` (its official
  training part with ``split: official``, whose test part is then the test part);
* ``split: official``: the dataset's own train/test (CBIS-DDSM, VinDr-Mammo,
  Roboflow folders), validation carved from the training part by patient;
* ``split: holdout``: ``val_fraction`` (and ``test_fraction``) of the patients;
* ``split: kfold``: fold ``fold`` of ``folds`` validates, the others train; the
  dataset's official test images (or ``test_fraction`` of the patients) are kept
  out of every fold as the test part.

A patient found in two parts stops the run (``patient_overlap: error``) or is
removed from training and validation, never from the test part (``drop``).
The same config and seed always give the same parts, so export and evaluate
find a run's validation or test images again from its ``run.json``
(:func:`parts_digest` checks that they are the same images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from training.config import DataConfig
from training.datasets import Sample, detect_kind, load_dataset
from training.splits import Split, grouped_kfold, grouped_split, official_split

__all__ = [
    "Part",
    "Parts",
    "PatientOverlapError",
    "make_parts",
    "parts_digest",
    "read_samples",
    "select_part",
    "shared_patients",
]

Part = Literal["all", "train", "val", "test"]


class PatientOverlapError(ValueError):
    """A patient is in the training part and in the validation or test part."""


@dataclass(frozen=True)
class Parts:
    """Training, validation and test samples (test may be empty)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    dropped: tuple[str, ...] = ()
    """Patients removed from training (and from validation when tested) because they
    were in two parts."""

    def get(self, part: Part) -> list[Sample]:
        if part == "all":
            return [*self.train, *self.val, *self.test]
        return list(getattr(self, part))


def read_samples(kind: str, root: Path, limit: int | None = None) -> list[Sample]:
    """A dataset's samples (``kind`` ``auto``: detected), the first ``limit`` only if set."""
    samples = load_dataset(detect_kind(root) if kind == "auto" else kind, root)
    return samples[:limit] if limit else samples


def shared_patients(first: Sequence[Sample], second: Sequence[Sample]) -> set[str]:
    """Patient ids present in both sample lists."""
    return {s.patient_id for s in first} & {s.patient_id for s in second}


def _pick(samples: Sequence[Sample], indices: Sequence[int]) -> list[Sample]:
    return [samples[i] for i in indices]


def _official_test(samples: Sequence[Sample]) -> tuple[int, ...]:
    return tuple(i for i, s in enumerate(samples) if (s.split or "").lower() == "test")


def _kfold(samples: Sequence[Sample], data: DataConfig, seed: int) -> Split:
    """Fold ``fold`` of the samples outside the test part (the official test images, or
    ``test_fraction`` of the patients)."""
    test = _official_test(samples)
    if not test and data.test_fraction > 0:
        test = grouped_split(samples, data.test_fraction, seed=seed).val
    held = set(test)
    rest = [i for i in range(len(samples)) if i not in held]
    fold = grouped_kfold([samples[i] for i in rest], data.folds, seed=seed)[data.fold]
    return Split(tuple(rest[i] for i in fold.train), tuple(rest[i] for i in fold.val), tuple(test))


def _split(samples: Sequence[Sample], data: DataConfig, seed: int) -> Split:
    if data.split == "official":
        return official_split(samples, data.val_fraction, seed=seed)
    if data.split == "kfold":
        return _kfold(samples, data, seed)
    return grouped_split(samples, data.val_fraction, data.test_fraction, seed=seed)


def make_parts(data: DataConfig, seed: int) -> Parts:
    """The config's training, validation and test samples; see the module docstring.

    Raises :class:`PatientOverlapError` for a shared patient with
    ``patient_overlap: error``, :class:`ValueError` for a dataset without the
    official split asked for. ``seed`` is the run's; ``data.split_seed`` replaces it.
    """
    if data.split_seed is not None:
        seed = data.split_seed
    samples = read_samples(data.kind, data.root, data.limit)
    if data.val_root is not None:
        val = read_samples(data.kind, data.val_root, data.limit)
        train, test = samples, []
        if data.split == "official":
            split = official_split(samples, data.val_fraction, seed=seed)
            train = _pick(samples, (*split.train, *split.val))
            test = _pick(samples, split.test)
    else:
        split = _split(samples, data, seed)
        train, val, test = (_pick(samples, part) for part in (split.train, split.val, split.test))
    shared = shared_patients(train, val) | shared_patients(train, test) | shared_patients(val, test)
    if shared and data.patient_overlap == "error":
        listed = ", ".join(sorted(shared)[:5]) + (" ..." if len(shared) > 5 else "")
        raise PatientOverlapError(
            f"{len(shared)} patient(s) are in two of the training, validation and test parts "
            f"({listed}); training or calibrating on them would leak into the evaluation. Set "
            "data.patient_overlap: drop to train and validate without them."
        )
    if shared:
        test_patients = {s.patient_id for s in test}
        train = [s for s in train if s.patient_id not in shared]
        val = [s for s in val if s.patient_id not in test_patients]
    if not train or not val:
        raise ValueError(
            f"{data.root}: the split leaves {len(train)} training and {len(val)} validation "
            "images; both must be non-empty"
        )
    return Parts(train, val, test, tuple(sorted(shared)))


def select_part(data: DataConfig, seed: int, part: Part) -> list[Sample]:
    """One part of :func:`make_parts` (``all``: every sample, in the dataset's order)."""
    if part == "all":
        samples = read_samples(data.kind, data.root, data.limit)
        return samples
    samples = make_parts(data, seed).get(part)
    if not samples:
        raise ValueError(f"{data.root}: the {part} part is empty for this split")
    return samples


def parts_digest(samples: Sequence[Sample]) -> str:
    """A short hash of the image ids and labels (to check that a part is found again)."""
    text = "\n".join(f"{s.image_id}|{s.label}" for s in samples)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
