"""``train(config)``: one model trained from a config, with checkpoints, logs and resume.

Writes into ``config.output`` (the run folder):

* ``last.pt``: full checkpoint after every epoch (resume from it with ``resume=True``);
* ``best.pt``: the model state of the epoch with the best validation AUC (the
  weight average's with ``optim.ema``);
* ``metrics.csv``: one row per epoch (train loss, validation loss, AUC, accuracy,
  learning rate, images seen per class);
* ``patch.pt``, ``patch-metrics.csv``: the patch stage, when ``patch.epochs > 0``;
* ``training.png``: the curves of ``metrics.csv``;
* ``run.json``: the config, the settings it resolved to, the input contract, the
  pretrained start, the data parts and the outcome (read by export).
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
from torch.utils.data import DataLoader

from node.inference.ensemble import calibrated_probabilities
from node.models.card import InputSpec
from node.models.registry import create_model
from training.architectures import Resolved, resolve
from training.augment import Augmenter
from training.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from training.config import TrainConfig
from training.data import CachedImage, ImageDataset, cache_images
from training.datasets import Sample
from training.distributed import (
    DistInfo,
    barrier,
    broadcast,
    init_distributed,
    mean_over_ranks,
    shutdown,
    sum_over_ranks,
)
from training.ema import WeightAverage
from training.loop import Normaliser, Precision, Stepper, collapse_warning, predict, train_epoch
from training.losses import build_loss, class_weights, sample_weights
from training.metrics import roc_auc
from training.metrics_log import MetricsLog
from training.pretrained import PretrainedLoad, load_pretrained
from training.sampling import EpochSampler
from training.schedule import LRSchedule
from training.selection import Parts, make_parts, parts_digest

__all__ = [
    "RUN_FILE",
    "TrainResult",
    "build_model",
    "input_spec",
    "load_samples",
    "seed_everything",
    "train",
]

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
    resolved = resolve(config)
    return InputSpec(
        height=config.model.height,
        width=config.model.width,
        channels=config.model.channels,
        mean=resolved.mean,
        std=resolved.std,
    )


def load_samples(config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples as the config's ``data`` section says."""
    parts = make_parts(config.data, config.seed)
    return parts.train, parts.val


def build_model(
    config: TrainConfig, resolved: Resolved | None = None
) -> tuple[nn.Module, PretrainedLoad | None]:
    """The config's model, seeded, started from ``model.pretrained`` when it names a file."""
    resolved = resolved or resolve(config)
    torch.manual_seed(config.seed)
    model = create_model(
        config.model.architecture,
        num_classes=len(config.model.labels),
        in_chans=config.model.channels,
        global_pool=config.model.global_pool,
        output_stride=config.model.output_stride,
        drop_path_rate=resolved.drop_path_rate,
    )
    loaded = None
    if config.model.pretrained is not None:
        loaded = load_pretrained(model, config.model.pretrained)
    scale = config.model.head_init_scale
    if scale is not None:
        head = model.get_classifier()  # type: ignore[operator]
        with torch.no_grad():
            for parameter in head.parameters():
                parameter.mul_(scale)
    return model, loaded


def _device(config: TrainConfig, info: DistInfo) -> torch.device:
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    return torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")


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
    dtype = config.data.cache_dtype
    # rank 0 fills the cache; the others then find every entry there
    if info.is_main:
        cache_images([*train, *val], options, labels, cache, dtype=dtype, progress=progress)
    barrier(info)
    return (
        cache_images(train, options, labels, cache, dtype=dtype),
        cache_images(val, options, labels, cache, dtype=dtype),
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


def _describe(info: DistInfo, parts: Parts, labels: Sequence[str]) -> None:
    def counts(samples: Sequence[Sample]) -> str:
        found = [s.label for s in samples]
        return ", ".join(f"{found.count(name)} {name}" for name in dict.fromkeys(found))

    _say(info, f"training: {len(parts.train)} images ({counts(parts.train)})")
    _say(info, f"validation: {len(parts.val)} images ({counts(parts.val)})")
    if parts.test:
        _say(info, f"test (not trained on): {len(parts.test)} images ({counts(parts.test)})")
    if parts.dropped:
        _say(info, f"left out of training: {len(parts.dropped)} patients also validated/tested")


def _start_from_patches(
    config: TrainConfig,
    info: DistInfo,
    core: nn.Module,
    items: tuple[list[CachedImage], list[CachedImage]],
    resolved: Resolved,
    normalise: Normaliser,
    precision: Precision,
    progress: bool,
) -> Path:
    """Run the patch stage on rank 0 (unless ``patch.pt`` is there) and load its weights."""
    from training.patches import PATCH_FILE, train_patch_stage

    path = config.output / PATCH_FILE
    if info.is_main and not path.exists():
        _say(
            info, f"patch stage: {config.patch.epochs} epochs on {config.patch.size}-pixel patches"
        )
        train_patch_stage(
            config,
            core,
            *items,
            lr=config.patch.lr or resolved.lr,
            weight_decay=resolved.weight_decay,
            normalise=normalise,
            precision=precision,
            say=lambda text: _say(info, text),
            progress=progress,
        )
    barrier(info)
    core.load_state_dict(torch.load(path, map_location=precision.device, weights_only=True))
    return path


def _train(config: TrainConfig, info: DistInfo, *, resume: bool, progress: bool) -> TrainResult:
    seed_everything(config.seed)
    device = _device(config, info)
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    labels = config.model.labels
    malignant = labels.index("malignant")
    resolved = resolve(config)
    parts = make_parts(config.data, config.seed)
    _describe(info, parts, labels)
    train_items, val_items = _cached(config, info, parts.train, parts.val, progress)

    train_set = ImageDataset(train_items, Augmenter(config.augment), seed=config.seed)
    val_set = ImageDataset(val_items)
    targets = train_set.targets
    weights = sample_weights(targets, len(labels)) if config.loss.weighted_sampling else None
    sampler = EpochSampler(
        len(train_set), config.seed, weights, rank=info.rank, world_size=info.world_size
    )
    batch = config.optim.batch_size
    train_loader = DataLoader(
        train_set, batch_size=batch, sampler=sampler, num_workers=config.num_workers, drop_last=True
    )
    val_loader = DataLoader(val_set, batch_size=batch * 2, num_workers=config.num_workers)

    model, pretrained = build_model(config, resolved)
    model = model.to(device)
    core = model
    spec = input_spec(config)
    normalise = Normaliser(spec.channels, spec.mean, spec.std)
    precision = Precision(device, config.optim.amp)
    last_path = out / "last.pt"
    resuming = resume and last_path.exists()
    patch_file = None
    if config.patch.epochs > 0:
        items = (train_items, val_items)
        patch_file = _start_from_patches(
            config, info, core, items, resolved, normalise, precision, progress
        )
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    weight = class_weights(targets, len(labels), config.loss.class_weights).to(device)
    loss_fn = build_loss(
        config.loss.kind,
        weight,
        gamma=config.loss.focal_gamma,
        label_smoothing=config.loss.label_smoothing,
    ).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=resolved.lr, weight_decay=resolved.weight_decay
    )
    optim = config.optim
    steps_per_epoch = max(math.ceil(len(train_loader) / optim.accumulate), 1)
    schedule = LRSchedule(
        optimizer,
        optim.schedule,
        total_steps=steps_per_epoch * optim.epochs,
        warmup_steps=math.ceil(optim.warmup_epochs * steps_per_epoch),
        plateau_patience=optim.plateau_patience,
        plateau_factor=optim.plateau_factor,
    )
    ema = WeightAverage(core, optim.ema) if optim.ema > 0 else None
    stepper = Stepper(
        optimizer,
        precision.scaler(),
        schedule,
        ema,
        grad_clip=optim.grad_clip,
        accumulate=optim.accumulate,
    )

    start_epoch, best_auc, best_epoch, stale = 1, -math.inf, 0, 0
    if resuming:
        state = load_checkpoint(last_path)
        core.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if state.scheduler is not None:
            schedule.load_state_dict(state.scheduler)
        if ema is not None and "ema" in state.extra:
            ema.load_state_dict(state.extra["ema"])
        set_rng_state(state.rng)
        start_epoch, best_auc, stale = state.epoch + 1, state.best_score, state.stale_epochs
        best_epoch = int(state.extra.get("best_epoch", 0))
        _say(info, f"resuming after epoch {state.epoch}")
    log = MetricsLog(out, resume_after=start_epoch - 1) if info.is_main else None

    stopped_early = False
    train_loss = float("nan")
    epoch = start_epoch - 1
    for epoch in range(start_epoch, optim.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        result = train_epoch(
            model,
            train_loader,
            loss_fn,
            stepper,
            normalise,
            precision,
            classes=len(labels),
            core=core,
            progress=progress,
            label=f"epoch {epoch}/{optim.epochs}",
        )
        train_loss = mean_over_ranks(info, result.loss)
        seen = sum_over_ranks(info, result.class_counts)
        stop = False
        if info.is_main:
            evaluated = ema.model if ema is not None else core
            logits, val_targets = predict(evaluated, val_loader, normalise, precision)
            probs = calibrated_probabilities(logits, 1.0)
            val_loss = float(
                nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_targets))
            )
            auc = roc_auc(val_targets == malignant, probs[:, malignant])
            predicted = probs.argmax(axis=1)
            warning = collapse_warning(predicted, labels)
            if warning:
                _say(info, f"warning: epoch {epoch}: {warning}")
            row: dict[str, float | int] = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "val_loss": round(val_loss, 6),
                "val_auc": round(auc, 6) if not math.isnan(auc) else float("nan"),
                "val_accuracy": round(float((predicted == val_targets).mean()), 6),
                "lr": schedule.lr,
            }
            row.update({f"seen_{name}": count for name, count in zip(labels, seen, strict=True)})
            assert log is not None
            log.log(row)
            _say(
                info,
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val AUC {auc:.4f}, lr {schedule.lr:.2e}, seen " + "/".join(str(c) for c in seen),
            )
            score = -val_loss if math.isnan(auc) else auc
            if score > best_auc:
                best_auc, best_epoch, stale = score, epoch, 0
                torch.save(evaluated.state_dict(), out / "best.pt")
            else:
                stale += 1
            schedule.end_epoch(score)
            extra: dict[str, Any] = {"best_epoch": best_epoch}
            if ema is not None:
                extra["ema"] = ema.state_dict()
            save_checkpoint(
                last_path,
                model=core,
                optimizer=optimizer,
                scheduler=schedule,
                epoch=epoch,
                best_score=best_auc,
                stale_epochs=stale,
                extra=extra,
            )
            stop = 0 < optim.early_stopping <= stale
        if info.enabled:
            # every rank follows rank 0's plateau schedule and early stop
            stop = bool(broadcast(info, stop))
            schedule.load_state_dict(broadcast(info, schedule.state_dict()))
        if stop:
            _say(info, f"early stop: no better validation AUC for {stale} epochs")
            stopped_early = True
            break
    if log is not None:
        log.close()
    result_out = TrainResult(out, epoch, best_epoch, best_auc, stopped_early, train_loss)
    if info.is_main:
        _write_run(config, result_out, resolved, pretrained, parts, patch_file)
        from training.plots import training_plot

        training_plot(out / "training.png", sorted(out.glob("*metrics.csv")))
    return result_out


def _write_run(
    config: TrainConfig,
    result: TrainResult,
    resolved: Resolved,
    pretrained: PretrainedLoad | None,
    parts: Parts,
    patch_file: Path | None,
) -> None:
    data = {
        "config": config.model_dump(mode="json"),
        "resolved": asdict(resolved),
        "input": input_spec(config).model_dump(mode="json"),
        "pretrained": asdict(pretrained) if pretrained is not None else None,
        "patch_stage": str(patch_file) if patch_file is not None else None,
        "data": {
            "train_images": len(parts.train),
            "val_images": len(parts.val),
            "test_images": len(parts.test),
            "val_digest": parts_digest(parts.val),
            "test_digest": parts_digest(parts.test) if parts.test else None,
            "patients_left_out": list(parts.dropped),
        },
        "result": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()},
    }
    (config.output / RUN_FILE).write_text(json.dumps(data, indent=2), encoding="utf-8")
