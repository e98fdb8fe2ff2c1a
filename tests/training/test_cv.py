"""``breast-train cv`` end to end on a fixture: k folds, out-of-fold calibration, k members."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.models.folder import load_model_folder
from training.cli import main
from training.config import TrainConfig
from training.datasets import load_dataset


def test_cv_trains_one_member_per_fold_and_calibrates_out_of_fold(
    tmp_path: Path,
    tiny_data: tuple[Path, Path],
    tiny_config: Callable[..., TrainConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tiny_config(
        tmp_path / "cv",
        data={"val_root": None, "split": "kfold", "folds": 2, "test_fraction": 0.2},
        optim={"epochs": 1},
    )
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    model = tmp_path / "model"
    args = ["cv", "--config", str(path), "--out", str(model), "--name", "folds", "--quiet"]
    assert main([*args, "--tta", "none"]) == 0
    assert "out-of-fold image AUC" in capsys.readouterr().out

    loaded = load_model_folder(model)
    card = loaded.card
    assert [m.spec.name for m in loaded.members] == [
        "breast_cnn_small-fold0",
        "breast_cnn_small-fold1",
    ]
    # one architecture: its fold members cannot be told apart and weigh the same
    assert [m.spec.weight for m in loaded.members] == [0.5, 0.5]
    assert card.ensemble.weighting.startswith("one architecture")
    assert "out-of-fold" in card.metrics.evaluated_on

    # every image outside the held-out test patients predicted once, by the member that
    # did not train on it
    with (tmp_path / "cv" / "oof.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    samples = load_dataset("synthetic", tiny_data[0])
    assert len(rows) == 20 and len({r["image_id"] for r in rows}) == 20
    folds = {r["patient_id"]: r["fold"] for r in rows}
    for fold in ("0", "1"):
        run = json.loads(
            (tmp_path / "cv" / f"breast_cnn_small-fold{fold}" / "run.json").read_text()
        )
        assert run["data"]["val_images"] == sum(r["fold"] == fold for r in rows)
        # each fold its own seed (initialisation, augmentation), all on one split
        assert run["config"]["seed"] == config.seed + int(fold)
        assert run["config"]["data"]["split_seed"] == config.seed
    assert len(folds) == 5 and set(folds.values()) == {"0", "1"}
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text(encoding="utf-8"))
    assert summary["images"] == 20 and len(summary["oof_auc_image_ci95"]) == 2
    assert (tmp_path / "cv" / "oof-roc.png").is_file()

    # the node serves the k-member folder
    study = samples[0].study_id
    images = tuple(ImageInput(s.path, s.image_id) for s in samples if s.study_id == study)
    engine = InferenceEngine.load(model, InferenceSettings(device="cpu", cam=False))
    (result,) = engine.infer_studies([StudyInput(study, images)])
    assert set(result.images[0].member_probabilities) == {
        "breast_cnn_small-fold0",
        "breast_cnn_small-fold1",
    }

    # --resume keeps finished folds; --fold K trains (or keeps) that fold only
    assert main([*args, "--resume", "--tta", "none"]) == 0
    err = capsys.readouterr().err
    assert "finished earlier, kept" in err
    assert "it/s" not in err  # --quiet: no progress bars while calibrating either
    assert main(["cv", "--config", str(path), "--fold", "1", "--resume", "--quiet"]) == 0
    assert capsys.readouterr().err.count("kept") == 1
    # a finished fold of another config is not silently mixed in
    other = ["cv", "--config", str(path), "--fold", "0", "--resume", "--set", "optim.lr=0.1"]
    assert main(other) == 1
    assert "finished with another config" in capsys.readouterr().err
