"""The dataset recipes: each one reads its dataset's layout, splits it, builds its model and
takes a training step (``--dry-run``) on the dataset's fixture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.training import layouts
from training.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"

# recipe -> (fixture writer, overrides a fixture of a few patients needs)
RECIPES: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "cbis-ddsm": (layouts.write_cbis_tcia, ["data.val_fraction=0.5"]),
    "vindr-mammo": (lambda root: layouts.write_vindr(root, more_training=2), []),
    "rsna-2023": (layouts.write_rsna, ["data.folds=2", "data.test_fraction=0.0"]),
    "cdd-cesm": (layouts.write_cdd_cesm, ["data.test_fraction=0.0", "data.val_fraction=0.5"]),
    "busi": (layouts.write_busi, ["data.test_fraction=0.0", "data.val_fraction=0.4"]),
}


def _header(name: str) -> str:
    return (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").split("\nname:")[0]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_says_what_it_aims_at_and_costs(name: str) -> None:
    header = _header(name)
    assert "Aims at:" in header and "Expected GPU time (an estimate, not measured)" in header
    assert any(s in header for s in ("github.com", "arXiv", "Sci Data", "Kaggle"))  # a source
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert data["data"]["kind"] == name
    assert str(data["model"]["pretrained"]).startswith("weights/")  # a local file


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_dry_run_on_the_fixture(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write, overrides = RECIPES[name]
    root = write(tmp_path / "data")
    args = [
        "train",
        "--config",
        str(CONFIGS / f"{name}.yaml"),
        "--dry-run",
        "--json",
        "--set",
        f"data.root={root}",
        "--set",
        f"output={tmp_path / 'run'}",
        "--set",
        "model.height=64",
        "--set",
        "model.width=64",
        # the ImageNet file is the user's to provide; the pretrained tests write their own
        "--set",
        "model.pretrained=null",
        *(item for override in overrides for item in ("--set", override)),
    ]
    assert main(args) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    assert sum(plan["images"]["train"].values()) > 0 and sum(plan["images"]["val"].values()) > 0
    assert plan["probe_loss"] > 0 and plan["parameters"] > 0
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    if name == "cbis-ddsm":
        assert plan["images"]["test"] == {"malignant": 1}  # the official test image
        assert plan["with_lesion_outlines"] > 0  # ROI masks for the patch stage


def test_a_missing_pretrained_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = layouts.write_busi(tmp_path / "busi")
    args = ["train", "--config", str(CONFIGS / "busi.yaml"), "--dry-run"]
    args += ["--set", f"data.root={root}", "--set", "data.test_fraction=0.0"]
    assert main([*args, "--set", "model.pretrained=weights/none.safetensors"]) == 1
    assert "weights/none.safetensors: pretrained checkpoint file does not exist" in (
        capsys.readouterr().err
    )


def test_vgg16_variant_of_the_cbis_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = layouts.write_cbis_tcia(tmp_path / "cbis")
    args = ["train", "--config", str(CONFIGS / "cbis-ddsm.yaml"), "--dry-run", "--json"]
    for item in (
        f"data.root={root}",
        "data.val_fraction=0.5",
        "model.architecture=vgg16",
        "model.height=64",
        "model.width=64",
        "model.pretrained=null",
    ):
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    assert plan["architecture"] == "vgg16" and plan["resolved"]["lr"] == 0.00005
