"""``breast-train train --dry-run`` and ``breast-train cache``: check a run before it runs.

:func:`dry_run` reads the dataset, makes the split (patient-overlap check
included), resolves the settings, builds the model from its pretrained file,
preprocesses the first training images through the node's preprocessing and
runs one forward and backward pass on them: every mistake a long run would
meet in its first minutes, met in seconds. Nothing is written. :func:`fill_cache`
preprocesses every training and validation image once, so that runs started
side by side (ensemble members, folds, ``torchrun`` processes) only read the cache.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.architectures import resolve
from training.config import TrainConfig
from training.data import cache_images, label_index, preprocess_sample
from training.datasets import Sample
from training.loop import Normaliser
from training.losses import build_loss
from training.selection import make_parts
from training.train import build_model, input_spec

__all__ = ["dry_run", "fill_cache", "plan_lines"]

_PROBE_IMAGES = 2


def _counts(samples: Sequence[Sample]) -> dict[str, int]:
    return dict(Counter(s.label for s in samples))


def dry_run(config: TrainConfig) -> dict[str, Any]:
    """The run's plan (JSON-ready); raises what the real run would raise."""
    parts = make_parts(config.data, config.seed)
    resolved = resolve(config)
    model, pretrained = build_model(config, resolved)
    spec = input_spec(config)
    options = spec.preprocess_options()
    probe = parts.train[:_PROBE_IMAGES]
    images = torch.from_numpy(np.stack([preprocess_sample(s, options).image for s in probe]))[
        :, None
    ]
    targets = torch.tensor([label_index(s.label, config.model.labels) for s in probe])
    normalise = Normaliser(spec.channels, spec.mean, spec.std)
    model.train()
    features = model.forward_features(normalise(images))  # type: ignore[operator]
    logits = model.forward_head(features)  # type: ignore[operator]
    loss = build_loss(config.loss.kind, None)(logits.float(), targets)
    loss.backward()
    batches = len(parts.train) // config.optim.batch_size
    optim = config.optim
    return {
        "architecture": config.model.architecture,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input": spec.model_dump(mode="json"),
        "feature_map": list(features.shape[1:]),
        "resolved": asdict(resolved),
        "pretrained": asdict(pretrained) if pretrained is not None else None,
        "images": {
            "train": _counts(parts.train),
            "val": _counts(parts.val),
            "test": _counts(parts.test),
        },
        "patients_left_out": len(parts.dropped),
        "with_lesion_outlines": sum(s.has_lesion_outline for s in parts.train),
        "steps_per_epoch": math.ceil(batches / optim.accumulate),
        "effective_batch": optim.batch_size * optim.accumulate,
        "probe_loss": float(loss.detach()),
        "output": str(config.output),
    }


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The plan as readable lines."""
    resolved = plan["resolved"]
    pretrained = plan["pretrained"]
    start = (
        f"from {pretrained['file']} ({pretrained['loaded']} tensors; adapted "
        f"{', '.join(pretrained['adapted']) or 'none'}; new {', '.join(pretrained['reset'])})"
        if pretrained
        else "from random weights"
    )
    images = plan["images"]
    return [
        f"model: {plan['architecture']}, {plan['parameters']:,} parameters, {start}",
        f"input: {plan['input']['height']} x {plan['input']['width']} x "
        f"{plan['input']['channels']}, mean {resolved['mean']}, std {resolved['std']}; "
        f"last feature map {plan['feature_map']}",
        f"lr {resolved['lr']:g}, weight decay {resolved['weight_decay']:g}, "
        f"drop path {resolved['drop_path_rate']:g}; {plan['steps_per_epoch']} optimiser "
        f"steps per epoch, effective batch {plan['effective_batch']} per process",
        *(f"{part}: {sum(c.values())} images {c}" for part, c in images.items() if c),
        f"training images with lesion outlines (patch stage): {plan['with_lesion_outlines']}",
        f"patients left out of training (also validated/tested): {plan['patients_left_out']}",
        f"one step on {_PROBE_IMAGES} real images: loss {plan['probe_loss']:.4f}; "
        f"the run would write to {plan['output']}",
    ]


def fill_cache(config: TrainConfig, *, progress: bool = True) -> Path:
    """Preprocess the training and validation images into the cache; returns the folder."""
    parts = make_parts(config.data, config.seed)
    cache = config.data.cache_dir or config.output / "cache"
    cache_images(
        [*parts.train, *parts.val],
        input_spec(config).preprocess_options(),
        config.model.labels,
        Path(cache),
        dtype=config.data.cache_dtype,
        progress=progress,
    )
    return Path(cache)
