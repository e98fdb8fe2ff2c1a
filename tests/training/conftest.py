"""Fixtures for the training tests: tiny synthetic datasets and configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from training.config import TrainConfig


@pytest.fixture(scope="session")
def tiny_data(synthetic: Callable[..., Path]) -> tuple[Path, Path]:
    """(training, validation) folders of small synthetic studies, different seeds."""
    return synthetic(studies=6, seed=31), synthetic(studies=4, seed=32)


@pytest.fixture
def tiny_config(
    tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., TrainConfig]:
    """A fast config (64 x 32 inputs, no augmentation); keyword sections override it."""
    cache = tmp_path_factory.getbasetemp() / "tiny-cache"

    def make(output: Path, **sections: Any) -> TrainConfig:
        data: dict[str, Any] = {
            "seed": 3,
            "output": str(output),
            "data": {
                "root": str(tiny_data[0]),
                "val_root": str(tiny_data[1]),
                "cache_dir": str(cache),
            },
            "model": {"height": 64, "width": 32},
            "optim": {"epochs": 2, "batch_size": 8, "lr": 0.003},
            "augment": {"hflip": 0.0, "affine": 0.0, "brightness_contrast": 0.0},
            "device": "cpu",
        }
        for key, value in sections.items():
            data.setdefault(key, {}).update(value)
        return TrainConfig.model_validate(data)

    return make
