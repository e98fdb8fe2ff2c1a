"""Export trained runs, then load and run them through the node; evaluate from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.models.folder import load_model_folder
from training.cli import main
from training.config import TrainConfig
from training.datasets import load_dataset
from training.evaluate import evaluate_model
from training.export import ExportOptions, export_model, fit_member, load_run
from training.train import train


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_data: tuple[Path, Path],
) -> list[Path]:
    """Two one-epoch runs of different architectures on the tiny data (one with max pooling)."""
    base = tmp_path_factory.mktemp("runs")
    folders = []
    for arch in ("breast_cnn_small", "lcnet_050"):
        config = TrainConfig.model_validate(
            {
                "seed": 1,
                "output": str(base / arch),
                "data": {
                    "root": str(tiny_data[0]),
                    "val_root": str(tiny_data[1]),
                    "cache_dir": str(base / "cache"),
                },
                "model": {
                    "architecture": arch,
                    "height": 64,
                    "width": 32,
                    **({"global_pool": "max"} if arch == "lcnet_050" else {}),
                },
                "optim": {"epochs": 1, "batch_size": 8},
                "device": "cpu",
            }
        )
        train(config, progress=False)
        folders.append(base / arch)
    return folders


@pytest.fixture(scope="module")
def exported(
    runs: list[Path], tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    export_model(
        ExportOptions(runs=tuple(runs), val_data=tiny_data[1], out=out, name="tiny", half=True)
    )
    return out


def test_export_loads_through_the_node(exported: Path, tiny_data: tuple[Path, Path]) -> None:
    model = load_model_folder(exported)  # checks hashes, architectures, keys and shapes
    card = model.card
    assert [m.spec.architecture for m in model.members] == ["breast_cnn_small", "lcnet_050"]
    assert [m.spec.global_pool for m in model.members] == [None, "max"]
    assert sum(m.spec.weight for m in model.members) == pytest.approx(1.0, abs=1e-3)
    assert all(0.05 <= m.spec.temperature <= 20 for m in model.members)
    assert [p.name for p in card.operating_points] == ["sens90", "sens95"]
    assert card.operating_points[1].threshold <= card.operating_points[0].threshold
    assert (card.input.height, card.input.width) == (64, 32)
    assert (exported / "breast_cnn_small-metrics.csv").is_file()

    samples = load_dataset("synthetic", tiny_data[1])
    study = samples[0].study_id
    images = tuple(ImageInput(s.path, s.image_id) for s in samples if s.study_id == study)
    engine = InferenceEngine.load(exported, InferenceSettings(device="cpu", batch_size=4))
    (result,) = engine.infer_studies([StudyInput(study, images)])
    assert len(result.images) == 4 and 0.0 <= result.score <= 1.0
    assert set(result.images[0].member_probabilities) == {"breast_cnn_small", "lcnet_050"}


def test_export_rejects_mismatched_runs(
    runs: list[Path], tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a finished training run"):
        export_model(
            ExportOptions(
                runs=(runs[0], tmp_path), val_data=tiny_data[1], out=tmp_path / "m", name="x"
            )
        )


def test_evaluate_reports_and_records(
    exported: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    samples = load_dataset("synthetic", tiny_data[1])
    report = evaluate_model(
        exported, samples, data="tiny", out=tmp_path / "eval", record=True, resamples=50
    )
    assert 0.0 <= report["auc"] <= 1.0
    assert report["image"]["n"] == 16 and report["study"]["n"] == 4
    assert report["breast"]["n"] == 8
    assert sum(map(sum, report["confusion_matrix"])) == 16
    assert report["cam_localisation"] is None or 0.0 <= report["cam_localisation"] <= 1.0
    names = {Path(p).name for p in report["plots"]}
    assert names == {
        "roc.png",
        "confusion.png",
        "calibration.png",
        "training.png",
        "disagreement.png",
    }
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {"report.json", "summary.txt"}
    # every member's AUC on the same images, and how much they disagree
    assert set(report["members"]) == {"breast_cnn_small", "lcnet_050"}
    spread = report["disagreement"]
    assert spread["cancer"]["n"] + spread["other"]["n"] == 16
    assert 0.0 <= spread["other"]["p50"] <= 0.5
    # sensitivity and specificity carry Wilson intervals
    stats = report["study"]["operating_points"]["sens90"]
    low, high = stats["specificity_ci95"]
    assert 0.0 <= low <= stats["specificity"] <= high <= 1.0
    card = load_model_folder(exported).card  # still loads: weights untouched
    assert card.metrics.values["auc_image"] == pytest.approx(report["auc"], abs=1e-4)
    assert "auc_image_member_lcnet_050" in card.metrics.values


def test_evaluate_cli_json(
    exported: Path, tiny_data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--model",
            str(exported),
            "--data",
            str(tiny_data[1]),
            "--json",
            "--bootstrap",
            "20",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert "auc" in report and len(report["auc_ci95"]) == 2


def test_cli_train_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: x}\nloss: {kind: hinge}\n", encoding="utf-8")
    assert main(["train", "--config", str(path)]) == 1
    assert "loss.kind" in capsys.readouterr().err


def test_export_without_val_data_uses_the_runs_validation_part(
    runs: list[Path], exported: Path, tmp_path: Path
) -> None:
    card = export_model(
        ExportOptions(runs=tuple(runs), out=tmp_path / "m", name="again", weights="auto")
    )
    explicit = load_model_folder(exported).card
    # the runs validated on the same folder: the same temperatures come out
    for mine, theirs in zip(card.ensemble.members, explicit.ensemble.members, strict=True):
        assert mine.temperature == pytest.approx(theirs.temperature, abs=1e-3)
    assert "validation part" in card.metrics.evaluated_on
    # auto: fitted weights only if they beat equal ones out of sample; the card says which
    text = card.ensemble.weighting
    assert text.startswith(("equal weights", "nll weights")) and "cross-fitted" in text
    if text.startswith("equal"):
        assert [m.weight for m in card.ensemble.members] == [0.5, 0.5]


def test_export_at_another_output_stride_serves_and_calibrates_there(
    runs: list[Path], tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--output-stride 8``: the same weights, a finer last feature map, fitted at it."""
    out = tmp_path / "fine"
    code = main(
        [
            "export",
            "--run",
            str(runs[0]),
            "--val-data",
            str(tiny_data[1]),
            "--out",
            str(out),
            "--name",
            "fine",
            "--output-stride",
            "8",
        ]
    )
    assert code == 0
    (member,) = load_model_folder(out).members
    assert member.spec.output_stride == 8
    with torch.no_grad():
        features = member.model.forward_features(torch.zeros(1, 1, 64, 32))
    assert tuple(features.shape[-2:]) == (8, 4)  # 64 x 32 input / 8

    samples = load_dataset("synthetic", tiny_data[1])
    everything = range(len(samples))
    fine = fit_member(load_run(runs[0], output_stride=8), samples, everything, "flip")
    trained = fit_member(load_run(runs[0]), samples, everything, "flip")
    assert member.spec.temperature == pytest.approx(fine.temperature, abs=1e-3)
    assert fine.temperature != pytest.approx(trained.temperature, abs=1e-3)
