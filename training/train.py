"""``train(config)``: one model trained from a config, with checkpoints, logs and resume.

Writes into ``config.output``:

* ``last.pt``: full checkpoint after every epoch (resume from it with ``resume=True``);
* ``best.pt``: the model state of the epoch with the best validation AUC;
* ``metrics.csv``: one row per epoch (train loss, validation loss, AUC, accuracy, lr);
* ``run.json``: the config, the input contract and the outcome (read by export).
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from node.inference.ensemble import calibrated_probabilities
from node.models.card import InputSpec
from node.models.registry import create_model
from training.augment import Augmenter
from training.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from training.config import TrainConfig
from training.data import CachedImage, ImageDataset, cache_images
from training.datasets import Sample, detect_kind, load_dataset
from training.distributed import (
    DistInfo,
    barrier,
    broadcast,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from training.loop import Normaliser, Precision, collapse_warning, predict, train_epoch
from training.losses import build_loss, class_weights, sample_weights
from training.metrics import roc_auc
from training.metrics_log import MetricsLog
from training.splits import Split, grouped_kfold, grouped_split, official_split

__all__ = ["RUN_FILE", "TrainResult", "input_spec", "load_samples", "seed_everything", "train"]

RUN_FILE = "run.json"


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`."""

    output: Path
    epochs_run: int
    best_epoch: int
    best_auc: float
    stopped_early: bool
    last_train_loss: float


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def input_spec(config: TrainConfig) -> InputSpec:
    """The card's input contract for this config (preprocessing options come from it)."""
    channels = config.model.channels
    return InputSpec(
        height=config.model.height,
        width=config.model.width,
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


def _read(kind: str, root: Path, limit: int | None) -> list[Sample]:
    samples = load_dataset(detect_kind(root) if kind == "auto" else kind, root)
    return samples[:limit] if limit else samples


def load_samples(config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples as the config's ``data`` section says."""
    data = config.data
    samples = _read(data.kind, data.root, data.limit)
    if data.val_root is not None:
        return samples, _read(data.kind, data.val_root, data.limit)
    split: Split
    if data.split == "official":
        split = official_split(samples, data.val_fraction, seed=config.seed)
    elif data.split == "kfold":
        split = grouped_kfold(samples, data.folds, seed=config.seed)[data.fold]
    else:
        split = grouped_split(samples, data.val_fraction, seed=config.seed)
    return [samples[i] for i in split.train], [samples[i] for i in split.val]


class _EpochSampler(Sampler[int]):
    """Indices for one epoch, seeded by ``(seed, epoch)``: weighted draws or a permutation."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None) -> None:
        self.size, self.seed, self.weights, self.epoch = size, seed, weights, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        if self.weights is not None:
            drawn = torch.multinomial(
                self.weights, self.size, replacement=True, generator=generator
            )
        else:
            drawn = torch.randperm(self.size, generator=generator)
        return iter(drawn.tolist())


def _device(config: TrainConfig, info: DistInfo) -> torch.device:
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    return torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    optim = config.optim
    if optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    if optim.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=optim.plateau_factor, patience=optim.plateau_patience
        )
    return None


def _say(info: DistInfo, text: str) -> None:
    if info.is_main:
        print(text, file=sys.stderr, flush=True)


def _cached(
    config: TrainConfig,
    info: DistInfo,
    train: Sequence[Sample],
    val: Sequence[Sample],
    progress: bool,
) -> tuple[list[CachedImage], list[CachedImage]]:
    options = input_spec(config).preprocess_options()
    cache = config.data.cache_dir or config.output / "cache"
    labels = config.model.labels
    # rank 0 fills the cache; the others then find every entry there
    if info.is_main:
        cache_images([*train, *val], options, labels, cache, progress=progress)
    barrier(info)
    return (
        cache_images(train, options, labels, cache),
        cache_images(val, options, labels, cache),
    )


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train one model; with ``resume`` continue from ``output/last.pt`` if it exists."""
    if config.threads:
        torch.set_num_threads(config.threads)
    info = init_distributed(
        config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    )
    try:
        return _train(config, info, resume=resume, progress=progress and info.is_main)
    finally:
        shutdown(info)


def _train(config: TrainConfig, info: DistInfo, *, resume: bool, progress: bool) -> TrainResult:
    seed_everything(config.seed)
    device = _device(config, info)
    out = config.output
    labels = config.model.labels
    malignant = labels.index("malignant")
    train_samples, val_samples = load_samples(config)
    train_items, val_items = _cached(config, info, train_samples, val_samples, progress)
    _say(info, f"{len(train_items)} training and {len(val_items)} validation images")

    train_set = ImageDataset(train_items, Augmenter(config.augment), seed=config.seed)
    val_set = ImageDataset(val_items)
    targets = train_set.targets
    sampler: _EpochSampler | DistributedSampler[int]
    if info.enabled:
        sampler = DistributedSampler(
            train_set, num_replicas=info.world_size, rank=info.rank, seed=config.seed
        )
    else:
        weights = sample_weights(targets, len(labels)) if config.loss.weighted_sampling else None
        sampler = _EpochSampler(len(train_set), config.seed, weights)
    batch = config.optim.batch_size
    train_loader = DataLoader(
        train_set, batch_size=batch, sampler=sampler, num_workers=config.num_workers, drop_last=True
    )
    val_loader = DataLoader(val_set, batch_size=batch * 2, num_workers=config.num_workers)

    torch.manual_seed(config.seed)
    model: nn.Module = create_model(
        config.model.architecture,
        num_classes=len(labels),
        in_chans=config.model.channels,
        global_pool=config.model.global_pool,
    ).to(device)
    core = model
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    spec = input_spec(config)
    normalise = Normaliser(spec.channels, spec.mean, spec.std)
    precision = Precision(device, config.optim.amp)
    scaler = precision.scaler()
    weight = class_weights(targets, len(labels), config.loss.class_weights).to(device)
    loss_fn = build_loss(
        config.loss.kind,
        weight,
        gamma=config.loss.focal_gamma,
        label_smoothing=config.loss.label_smoothing,
    ).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    scheduler = _scheduler(config, optimizer)

    start_epoch, best_auc, best_epoch, stale = 1, -math.inf, 0, 0
    last_path = out / "last.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        core.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        set_rng_state(state.rng)
        start_epoch, best_auc, stale = state.epoch + 1, state.best_score, state.stale_epochs
        best_epoch = int(state.extra.get("best_epoch", 0))
        _say(info, f"resuming after epoch {state.epoch}")
    log = MetricsLog(out, resume_after=start_epoch - 1) if info.is_main else None

    stopped_early = False
    train_loss = float("nan")
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.optim.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        train_loss = train_epoch(
            model,
            train_loader,
            loss_fn,
            optimizer,
            normalise,
            precision,
            scaler,
            grad_clip=config.optim.grad_clip,
            progress=progress,
            label=f"epoch {epoch}/{config.optim.epochs}",
        )
        train_loss = mean_over_ranks(info, train_loss)
        stop = False
        if info.is_main:
            logits, val_targets = predict(core, val_loader, normalise, precision)
            probs = calibrated_probabilities(logits, 1.0)
            val_loss = float(
                nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_targets))
            )
            auc = roc_auc(val_targets == malignant, probs[:, malignant])
            predicted = probs.argmax(axis=1)
            warning = collapse_warning(predicted, labels)
            if warning:
                _say(info, f"warning: epoch {epoch}: {warning}")
            lr = optimizer.param_groups[0]["lr"]
            row = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "val_loss": round(val_loss, 6),
                "val_auc": round(auc, 6) if not math.isnan(auc) else float("nan"),
                "val_accuracy": round(float((predicted == val_targets).mean()), 6),
                "lr": lr,
            }
            assert log is not None
            log.log(row)
            _say(
                info,
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val AUC {auc:.4f}, lr {lr:.2e}",
            )
            score = -val_loss if math.isnan(auc) else auc
            if score > best_auc:
                best_auc, best_epoch, stale = score, epoch, 0
                torch.save(core.state_dict(), out / "best.pt")
            else:
                stale += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(score)
            elif scheduler is not None:
                scheduler.step()
            save_checkpoint(
                last_path,
                model=core,
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=epoch,
                best_score=best_auc,
                stale_epochs=stale,
                extra={"best_epoch": best_epoch},
            )
            stop = 0 < config.optim.early_stopping <= stale
        elif scheduler is not None and not isinstance(
            scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
        ):
            scheduler.step()
        if info.enabled:
            # every rank follows rank 0's plateau schedule and early stop
            stop = bool(broadcast(info, stop))
            lr = broadcast(info, optimizer.param_groups[0]["lr"])
            for group in optimizer.param_groups:
                group["lr"] = lr
        if stop:
            _say(info, f"early stop: no better validation AUC for {stale} epochs")
            stopped_early = True
            break
    if log is not None:
        log.close()
    result = TrainResult(out, epoch, best_epoch, best_auc, stopped_early, train_loss)
    if info.is_main:
        _write_run(config, result)
    return result


def _write_run(config: TrainConfig, result: TrainResult) -> None:
    data = {
        "config": config.model_dump(mode="json"),
        "input": input_spec(config).model_dump(mode="json"),
        "result": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()},
    }
    (config.output / RUN_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")
