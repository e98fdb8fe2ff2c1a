"""Training: config validation, a short run that learns, exact resume, augmentations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from training.augment import Augmenter, affine, elastic, speckle
from training.checkpoint import load_checkpoint
from training.config import AugmentConfig, ConfigError, load_config
from training.metrics_log import read_metrics
from training.train import train


def test_demo_config_is_valid() -> None:
    config = load_config(Path("training/configs/demo.yaml"))
    assert config.model.architecture == "breast_cnn_small"
    card = yaml.safe_load(Path("models/demo/card.yaml").read_text(encoding="utf-8"))
    # the shipped demo model was trained with this config: same input
    assert (config.model.height, config.model.width) == (
        card["input"]["height"],
        card["input"]["width"],
    )
    assert config.model.global_pool == "max"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {root: x}\noptim: {lr: -1}\n", "optim.lr: Input should be greater than 0"),
        (
            "data: {root: x}\nmodel: {architecture: resnet_9000}\n",
            "model: unknown architecture 'resnet_9000'",
        ),
        ("data: {root: x}\noptim: {learning_rate: 1}\n", "optim.learning_rate: unknown key"),
        ("data: {root: x}\nmodel: {global_pool: median}\n", "model: unknown global_pool 'median'"),
        ("optim: {epochs: 2}\n", "data: required key is missing"),
        ("data: {root: x, fold: 5, folds: 5}\n", "data: fold 5 is not below folds"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path)


def test_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: x}\n", encoding="utf-8")
    config = load_config(path, ["model.architecture=lcnet_050", "optim.epochs=3"])
    assert config.model.architecture == "lcnet_050" and config.optim.epochs == 3
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["optim.epochs"])


def test_two_epochs_lower_the_loss(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    result = train(tiny_config(tmp_path / "run"), progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    for name in ("best.pt", "last.pt", "run.json"):
        assert (tmp_path / "run" / name).is_file()


def test_resume_continues_with_identical_state(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    sections = {
        "optim": {"epochs": 2, "schedule": "plateau"},
        "augment": {"hflip": 0.5, "affine": 0.5, "elastic": 0.5},
        "loss": {"weighted_sampling": True},
    }
    straight = train(tiny_config(tmp_path / "a", **sections), progress=False)
    first = {**sections, "optim": {"epochs": 1, "schedule": "plateau"}}
    train(tiny_config(tmp_path / "b", **first), progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt").epoch == 1
    resumed = train(tiny_config(tmp_path / "b", **sections), resume=True, progress=False)
    assert resumed.epochs_run == straight.epochs_run == 2
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a.epoch == b.epoch == 2
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    assert a.optimizer["state"].keys() == b.optimizer["state"].keys()
    rows_a = read_metrics(tmp_path / "a" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "b" / "metrics.csv")
    assert rows_a == rows_b


def test_focal_loss_and_other_architecture(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config(
        tmp_path / "run",
        model={"architecture": "lcnet_050"},
        loss={"kind": "focal", "class_weights": "inverse"},
        optim={"epochs": 1},
    )
    result = train(config, progress=False)
    assert result.epochs_run == 1 and (tmp_path / "run" / "best.pt").is_file()


def test_augmentations_keep_shape_range_and_are_seeded() -> None:
    image = torch.zeros((1, 64, 32))
    image[0, 20:30, 5:15] = 0.8
    config = AugmentConfig(vflip=0.5, elastic=1.0, clahe=0.5, speckle=1.0)
    augment = Augmenter(config)
    first = augment(image, torch.Generator().manual_seed(1))
    again = augment(image, torch.Generator().manual_seed(1))
    other = augment(image, torch.Generator().manual_seed(2))
    assert first.shape == image.shape and torch.equal(first, again)
    assert not torch.equal(first, other)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    # a pure shift by a quarter of the width moves the block by 8 columns
    shifted = affine(image, 0.0, 1.0, (0.25, 0.0))
    assert torch.allclose(shifted[0, 20:30, 13:23], image[0, 20:30, 5:15], atol=1e-5)
    # zero displacement leaves the image alone; speckle keeps the background black
    same = elastic(image, 0.0, 4, torch.Generator().manual_seed(0))
    assert torch.allclose(same, image, atol=1e-5)
    noisy = speckle(image, 0.3, torch.Generator().manual_seed(0))
    assert float(noisy[0, :10].abs().max()) == 0.0 and not torch.equal(noisy, image)
