"""The patch stage: lesion and background patches from the masks; its weights start the
whole-image model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig
from training.data import CachedImage, load_cached
from training.metrics_log import read_metrics
from training.patches import PatchDataset, crop
from training.train import train


def _entry(tmp_path: Path) -> CachedImage:
    image = np.zeros((64, 32), dtype=np.float32)
    image[4:60, 2:30] = 0.5  # the breast
    mask = np.zeros((64, 32), dtype=bool)
    mask[40:46, 20:26] = True
    image[mask] = 0.9
    np.save(tmp_path / "i.npy", image)
    np.save(tmp_path / "m.npy", mask)
    return CachedImage(tmp_path / "i.npy", tmp_path / "m.npy", target=2)


def test_lesion_and_background_patches(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    data = PatchDataset([entry], ("normal", "benign", "malignant"), 16, 3, 3, seed=1)
    assert len(data) == 6 and data.targets == [2, 2, 2, 0, 0, 0]
    for index in range(6):
        patch, target = data[index]
        assert patch.shape == (1, 16, 16)
        if target == 2:  # jittered by at most a quarter: the lesion is in view
            assert float(patch.max()) == np.float32(0.9)
        else:  # inside the breast, off the lesion
            assert float(patch.max()) <= 0.5 and float((patch > 0.02).float().mean()) >= 0.5
    again = PatchDataset([entry], ("normal", "benign", "malignant"), 16, 3, 3, seed=1)
    assert torch.equal(again[0][0], data[0][0])
    data.epoch = 1
    assert not torch.equal(again[0][0], data[0][0])  # new patches every epoch
    edge = crop(load_cached(entry.image), 0, 0, 8)
    assert edge.shape == (8, 8) and float(edge[:4].max()) == 0.0  # zero outside the image


def test_patch_stage_weights_start_the_whole_image_model(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(
        tmp_path / "run",
        model={"height": 128, "width": 64},
        optim={"epochs": 1, "lr": 1e-6},
        patch={"epochs": 1, "size": 32, "batch_size": 16, "lr": 0.003},
    )
    train(config, progress=False)
    rows = read_metrics(tmp_path / "run" / "patch-metrics.csv")
    assert len(rows) == 1 and int(rows[0]["patches"]) > 0
    patch = torch.load(tmp_path / "run" / "patch.pt", weights_only=True)
    whole = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    fresh = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    # a whole-image step at lr 1e-6 barely moves what the patch stage learnt at 0.003
    for key in ("stem.0.weight", "fc.weight"):
        assert (whole[key] - patch[key]).abs().max() < 1e-4
        assert torch.equal(whole[key], fresh[key])
    info = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert info["patch_stage"].endswith("patch.pt")
    assert (tmp_path / "run" / "training.png").is_file()
