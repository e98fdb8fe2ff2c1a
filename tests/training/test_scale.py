"""Training at scale: compact cache, warm-up, accumulation, weight averaging, and class-balanced
sampling shared out between torchrun processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from training.config import TrainConfig
from training.data import cache_images, load_cached
from training.datasets import load_dataset
from training.ema import WeightAverage
from training.loop import Normaliser, Precision, Stepper, train_epoch
from training.metrics_log import read_metrics
from training.sampling import EpochSampler
from training.schedule import LRSchedule

ROOT = Path(__file__).resolve().parents[2]


def test_uint16_cache_takes_two_bytes_a_pixel(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    from node.imaging.preprocess import PreprocessOptions

    samples = load_dataset("synthetic", tiny_data[1])[:2]
    options = PreprocessOptions(height=128, width=64)
    wide = cache_images(
        samples, options, ("normal", "benign", "malignant"), tmp_path, dtype="float32"
    )
    compact = cache_images(samples, options, ("normal", "benign", "malignant"), tmp_path)
    for a, b in zip(wide, compact, strict=True):
        assert a.image != b.image  # the storage type is part of the key
        assert np.load(b.image).dtype == np.uint16
        assert b.image.stat().st_size - 128 == 128 * 64 * 2  # .npy header + 2 bytes a pixel
        np.testing.assert_allclose(load_cached(b.image), load_cached(a.image), atol=1 / 65535)
    half = cache_images(
        samples, options, ("normal", "benign", "malignant"), tmp_path, dtype="float16"
    )
    np.testing.assert_allclose(load_cached(half[0].image), load_cached(wide[0].image), atol=1e-3)


def test_a_new_preprocessing_revision_is_not_served_from_an_old_cache(
    tiny_data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.imaging.preprocess import PreprocessOptions

    samples = load_dataset("synthetic", tiny_data[1])[:1]
    options = PreprocessOptions(height=128, width=64)
    labels = ("normal", "benign", "malignant")
    (before,) = cache_images(samples, options, labels, tmp_path)
    monkeypatch.setattr("training.data.PREPROCESSING_REVISION", 10**6)
    (after,) = cache_images(samples, options, labels, tmp_path)
    assert after.image != before.image and after.image.exists()


def test_warm_up_then_cosine() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = LRSchedule(optimizer, "cosine", total_steps=10, warmup_steps=4)
    rates = []
    for _ in range(10):
        rates.append(schedule.lr)
        schedule.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)])
    fresh = torch.optim.SGD(model.parameters(), lr=1.0)
    plateau = LRSchedule(fresh, "plateau", total_steps=10, plateau_patience=1)
    for score in (0.5, 0.6, 0.6, 0.6):
        plateau.end_epoch(score)
    assert plateau.lr == pytest.approx(0.3)  # two epochs without a better score


def _linear_steps(
    batches: list[tuple[torch.Tensor, torch.Tensor]], accumulate: int
) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper = Stepper(optimizer, torch.amp.GradScaler("cpu", enabled=False), accumulate=accumulate)
    train_epoch(
        model,
        batches,
        nn.CrossEntropyLoss(),
        stepper,
        Normaliser(1, (0.0,), (1.0,)),
        Precision(torch.device("cpu"), False),
        classes=3,
    )
    return model[1].weight.detach().clone()


def test_accumulating_two_half_batches_is_one_full_batch() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 1, 2, 2, generator=generator)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    full = _linear_steps([(images, targets)], accumulate=1)
    halves = _linear_steps([(images[:4], targets[:4]), (images[4:], targets[4:])], accumulate=2)
    torch.testing.assert_close(halves, full)
    two_steps = _linear_steps([(images[:4], targets[:4]), (images[4:], targets[4:])], accumulate=1)
    assert not torch.allclose(two_steps, full)


def test_weight_average_follows_the_formula() -> None:
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 0.0)
    average = WeightAverage(model, decay=0.9)
    expected = 0.0
    for n in range(1, 6):
        nn.init.constant_(model.weight, float(n))
        average.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * n
    assert float(average.model.weight) == pytest.approx(expected)


def test_ranks_share_out_exactly_the_single_process_draw() -> None:
    weights = torch.tensor([1.0] * 8 + [4.0] * 2)
    single = EpochSampler(10, seed=5, weights=weights)
    single.set_epoch(3)
    ranks = [EpochSampler(10, seed=5, weights=weights, rank=r, world_size=2) for r in range(2)]
    shares = []
    for sampler in ranks:
        sampler.set_epoch(3)
        shares.append(list(sampler))
    assert sorted(shares[0] + shares[1]) == sorted(single)
    assert len(shares[0]) == len(shares[1]) == 5
    plain = [EpochSampler(7, seed=1, rank=r, world_size=2) for r in range(2)]
    union = [i for s in plain for i in s]
    assert len(union) == 8 and set(union) == set(range(7))  # padded by wrapping round


@pytest.mark.slow
def test_weighted_sampling_under_torchrun(
    tmp_path: Path, tiny_data: tuple[Path, Path], tiny_config: Callable[..., TrainConfig]
) -> None:
    """Two gloo processes: the classes are drawn equally often in every epoch, as one
    process would draw them, and training resumes and finishes."""
    config = tiny_config(
        tmp_path / "run",
        loss={"weighted_sampling": True},
        optim={"epochs": 2, "batch_size": 4, "accumulate": 2, "ema": 0.5, "warmup_epochs": 0.5},
    )
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "training.cli",
            "train",
            "--config",
            str(path),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        seen = [int(row[f"seen_{name}"]) for name in ("normal", "benign", "malignant")]
        # 24 images, 2 processes x 3 batches of 4: all 24 draws are seen, about 8 a class
        # (16 normal, 6 benign, 2 malignant in the data)
        assert sum(seen) == 24
        assert min(seen) >= 3, seen
    assert (tmp_path / "run" / "training.png").is_file()
