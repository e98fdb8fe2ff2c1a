"""The BUSI ensemble recipe, run for one short epoch on the BUSI fixture with tiny inputs:
five architectures trained, calibrated and exported as a folder the node loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from node.config import InferenceSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.models.folder import load_model_folder
from tests.helpers.images import mg_dataset, write_dataset
from tests.training import layouts
from training.cli import main
from training.config import ConfigError
from training.ensemble import load_recipe
from training.train import load_samples

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "training" / "configs" / "busi-ensemble.yaml"
FIVE = ("efficientnet_b0", "efficientnet_b1", "resnet50", "densenet121", "convnext_tiny")


def _tiny(root: Path, out: Path) -> list[str]:
    """Overrides that make the recipe run in seconds on the fixture's three images."""
    return [
        f"train.data.root={root}",
        "train.data.val_fraction=0.4",  # a seeded, stratified holdout: each class on both sides
        f"train.data.cache_dir={out / 'cache'}",
        f"train.output={out / 'runs'}",
        "train.model.height=32",
        "train.model.width=32",
        "train.optim.epochs=1",
        "train.optim.batch_size=2",
        "train.num_workers=0",
        "train.device=cpu",
        "train.threads=1",
        f"export.out={out / 'model'}",
    ]


def test_the_recipe_names_the_five_architectures_and_the_ultrasound_training() -> None:
    recipe = load_recipe(RECIPE)
    assert tuple(m.architecture for m in recipe.members) == FIVE
    config = recipe.member_config(recipe.members[0])
    assert config.data.kind == "busi" and config.model.modalities == ("US",)
    assert config.loss.class_weights == "inverse" and config.loss.weighted_sampling
    augment = config.augment
    assert augment.elastic > 0 and augment.clahe > 0 and augment.speckle > 0
    assert augment.vflip == 0  # rows are depth
    assert recipe.export.tta == "multi" and recipe.export.weights == "nll"
    convnext = recipe.member_config(recipe.members[-1])
    assert convnext.optim.lr < config.optim.lr
    assert convnext.output == config.output.parent / "convnext_tiny"


def test_bad_recipes_are_refused_with_the_key(tmp_path: Path) -> None:
    def changed(edit: Callable[[dict[str, Any]], None]) -> Path:
        data = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
        edit(data)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    negative = changed(lambda d: d["members"][2].update(set={"optim.lr": -1}))
    with pytest.raises(ConfigError, match=r"member resnet50: train\.optim\.lr"):
        load_recipe(negative)
    with pytest.raises(ConfigError, match="two members are called the same"):
        load_recipe(changed(lambda d: d["members"].append({"architecture": "resnet50"})))
    with pytest.raises(ConfigError, match=r"export\.tta"):
        load_recipe(RECIPE, ["export.tta=five"])


@pytest.mark.slow
def test_one_short_epoch_on_the_busi_fixture_exports_a_folder_the_node_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = layouts.write_busi(tmp_path / "busi", extra=2)
    out = tmp_path / "out"
    args = ["ensemble", "--config", str(RECIPE), "--quiet"]
    for override in _tiny(root, out):
        args += ["--set", override]
    assert main(args) == 0
    assert f"wrote {out / 'model'}" in capsys.readouterr().out

    model = load_model_folder(out / "model")  # hashes, architectures, keys and shapes
    card = model.card
    assert tuple(m.spec.architecture for m in model.members) == FIVE
    assert card.modalities == ("US",) and card.ensemble.tta == "multi"
    assert card.input.channels == 3 and (card.input.height, card.input.width) == (32, 32)
    weights = [m.spec.weight for m in model.members]
    assert sum(weights) == pytest.approx(1.0, abs=1e-3) and min(weights) > 0
    assert all(m.spec.temperature > 0 for m in model.members)
    assert [p.name for p in card.operating_points] == ["sens90", "sens95"]
    assert card.training_data.datasets == ("busi",)
    recipe = load_recipe(RECIPE, _tiny(root, out))
    _, validation = load_samples(recipe.member_config(recipe.members[0]))
    assert card.metrics.evaluated_on == (
        f"validation: the runs' validation part of busi, {len(validation)} images, "
        f"{len(validation)} studies"
    )  # calibrated on the members' own validation split, never on a training image

    # the node serves it: every member on the five test-time views of an ultrasound image
    engine = InferenceEngine.load(out / "model", InferenceSettings(device="cpu"))
    assert [v.name for v in engine.views] == ["identity", "hflip", "zoom_in", "zoom_out", "shift"]
    png = root / "Dataset_BUSI_with_GT" / "malignant" / "malignant (1).png"
    pixels = np.asarray(Image.open(png), dtype=np.float32) / 255.0
    path = write_dataset(mg_dataset(pixels, modality="US", laterality=None), tmp_path / "us.dcm")
    (result,) = engine.infer_studies([StudyInput("1.2.3", (ImageInput(path, "1.2.3.4"),))])
    (image,) = result.images
    assert set(image.member_probabilities) == {m.spec.name for m in model.members}
    assert sum(image.class_probabilities.values()) == pytest.approx(1.0)
    assert result.tta == "multi" and 0.0 <= image.uncertainty <= 0.5
