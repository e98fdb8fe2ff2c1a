"""Official splits, validation carved by patient, and train/test pairs sharing a patient."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.training import layouts
from training.cli import main
from training.config import DataConfig, TrainConfig
from training.export import load_run, run_part
from training.selection import PatientOverlapError, make_parts, select_part, shared_patients
from training.train import train


def _ids(samples):  # type: ignore[no-untyped-def]
    return {s.image_id for s in samples}


def test_cbis_official_split_with_validation_by_patient(tmp_path: Path) -> None:
    root = layouts.write_cbis_tcia(tmp_path)
    parts = make_parts(DataConfig(kind="cbis-ddsm", root=root, split="official"), seed=0)
    assert _ids(parts.test) == {"Mass-Test_P_00003_LEFT_MLO"}
    assert not shared_patients(parts.train, parts.val)
    # patient 1's two images (mass file and calc file) stay together
    p1 = {s.image_id for s in [*parts.train, *parts.val] if s.patient_id == "P_00001"}
    assert p1 <= _ids(parts.train) or p1 <= _ids(parts.val)


def test_a_patient_in_train_and_test_is_refused_or_dropped(tmp_path: Path) -> None:
    root = layouts.write_cbis_tcia(tmp_path, shared_patient=True)
    data = DataConfig(kind="cbis-ddsm", root=root, split="official", val_fraction=0.3)
    with pytest.raises(PatientOverlapError, match=r"1 patient\(s\) .*\(P_00001\)"):
        make_parts(data, seed=0)
    parts = make_parts(data.model_copy(update={"patient_overlap": "drop"}), seed=0)
    assert parts.dropped == ("P_00001",)
    assert "P_00001" not in {s.patient_id for s in [*parts.train]}
    assert "Calc-Test_P_00001_RIGHT_MLO" in _ids(parts.test)  # the test set is untouched


def test_training_refuses_the_shared_patient_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = layouts.write_cbis_tcia(tmp_path / "cbis", shared_patient=True)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{kind: cbis-ddsm, root: {root}, split: official, val_fraction: 0.5}}\n"
        f"output: {tmp_path / 'run'}\n",
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config), "--dry-run"]) == 1
    assert "patient_overlap: drop" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_vindr_official_and_rsna_by_patient(tmp_path: Path) -> None:
    vindr = layouts.write_vindr(tmp_path / "vindr", more_training=2)
    parts = make_parts(DataConfig(kind="vindr-mammo", root=vindr, split="official"), seed=0)
    assert {s.study_id for s in parts.test} == {"s2"}
    assert len({s.study_id for s in parts.val}) == 1
    rsna = layouts.write_rsna(tmp_path / "rsna")
    holdout = make_parts(DataConfig(kind="rsna-2023", root=rsna, val_fraction=0.5), seed=0)
    assert not shared_patients(holdout.train, holdout.val)
    assert {len(holdout.train), len(holdout.val)} == {4}  # one patient, four images, each
    with pytest.raises(ValueError, match="no official split"):
        make_parts(DataConfig(kind="rsna-2023", root=rsna, split="official"), seed=0)


def test_kfold_keeps_the_official_test_out_of_every_fold(tmp_path: Path) -> None:
    root = layouts.write_vindr(tmp_path, more_training=3)
    seen = set()
    for fold in range(2):
        data = DataConfig(kind="vindr-mammo", root=root, split="kfold", folds=2, fold=fold)
        parts = make_parts(data, seed=0)
        assert {s.study_id for s in parts.test} == {"s2"}
        assert "s2" not in {s.study_id for s in [*parts.train, *parts.val]}
        seen |= {s.study_id for s in parts.val}
    assert seen == {"s1", "t0", "t1", "t2"}  # every training study validated once


def test_evaluate_and_export_find_a_runs_parts_again(
    tmp_path: Path,
    synthetic: Callable[..., Path],
    tiny_config: Callable[..., TrainConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run trained with a held-out validation and test part of one folder: evaluate
    scores exactly its test images, export calibrates on exactly its validation images."""
    run = tmp_path / "run"
    config = tiny_config(
        run,
        data={
            "root": str(synthetic(studies=12, seed=33)),
            "val_root": None,
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        optim={"epochs": 1},
    )
    train(config, progress=False)
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    # 12 studies (patients): a quarter of them is 3 studies of 4 images
    assert info["data"]["test_images"] == 12 and info["data"]["val_images"] == 12
    loaded = load_run(run)
    test = run_part(loaded, "test")
    assert _ids(test) == _ids(select_part(config.data, config.seed, "test"))
    assert not shared_patients(test, run_part(loaded, "val"))
    model = tmp_path / "model"
    assert main(["export", "--run", str(run), "--out", str(model), "--name", "m"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--run",
                str(run),
                "--split",
                "test",
                "--json",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["image"]["n"] == 12 and "test part" in report["data"]
