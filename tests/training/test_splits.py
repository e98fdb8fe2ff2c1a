"""Patient-grouped splits: no patient in two parts; folds keep the label mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.datasets import Sample
from training.splits import grouped_kfold, grouped_split, official_split, patient_labels


def _samples(patients: int = 60, images: int = 4) -> list[Sample]:
    out = []
    for p in range(patients):
        worst = ("normal", "benign", "malignant")[p % 3 if p % 5 else 2]
        for i in range(images):
            # only the first image of a patient carries the finding
            label = worst if i == 0 else "normal"
            out.append(
                Sample(
                    path=Path(f"/x/{p}/{i}.dcm"),
                    patient_id=f"P{p}",
                    study_id=f"S{p}",
                    image_id=f"{p}-{i}",
                    laterality="L" if i < 2 else "R",
                    view="CC",
                    label=label,  # type: ignore[arg-type]
                    split="test" if p >= 50 else "train",
                )
            )
    return out


def _patients(samples: list[Sample], indices: tuple[int, ...]) -> set[str]:
    return {samples[i].patient_id for i in indices}


def test_holdout_groups_patients() -> None:
    samples = _samples()
    split = grouped_split(samples, 0.2, 0.1, seed=1)
    train, val, test = (_patients(samples, part) for part in (split.train, split.val, split.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train) + len(val) + len(test) == 60
    assert len(split.train) + len(split.val) + len(split.test) == len(samples)
    assert 9 <= len(val) <= 15 and 3 <= len(test) <= 9
    assert grouped_split(samples, 0.2, 0.1, seed=1) == split
    assert grouped_split(samples, 0.2, 0.1, seed=2) != split


def test_kfold_is_grouped_and_stratified() -> None:
    samples = _samples()
    folds = grouped_kfold(samples, 5, seed=0)
    worst = patient_labels(samples)
    seen: list[str] = []
    for fold in folds:
        val = _patients(samples, fold.val)
        assert not (val & _patients(samples, fold.train))
        seen.extend(val)
        per_label = [sum(worst[p] == rank for p in val) for rank in range(3)]
        totals = [sum(r == rank for r in worst.values()) for rank in range(3)]
        for count, total in zip(per_label, totals, strict=True):
            assert abs(count - total / 5) <= 1
    assert sorted(seen) == sorted(worst)  # every patient validated exactly once


def test_official_split_carves_validation_by_patient() -> None:
    samples = _samples()
    split = official_split(samples, 0.2, seed=0)
    assert _patients(samples, split.test) == {f"P{p}" for p in range(50, 60)}
    assert not (_patients(samples, split.val) & _patients(samples, split.train))
    assert _patients(samples, split.val) | _patients(samples, split.train) == {
        f"P{p}" for p in range(50)
    }
    plain = [
        Sample(s.path, s.patient_id, s.study_id, s.image_id, s.laterality, s.view, s.label)
        for s in samples
    ]
    with pytest.raises(ValueError, match="no official split"):
        official_split(plain)
