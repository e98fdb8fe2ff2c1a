"""The patch stage: lesion and background patches from the cached images and masks.

Shen et al. (2019, "Deep learning to improve breast cancer detection on
screening mammography", the reference pipeline of CBIS-DDSM) first train a
patch classifier on patches around the annotated lesions and on background
patches, then turn it into the whole-image classifier, which starts from the
patch classifier's weights. Here the network is the same in both stages (a
fully convolutional backbone with global pooling takes any input size), so the
patch classifier *is* the whole-image model trained on patches:

* a lesion patch is a ``size x size`` crop of the preprocessed image around a
  random pixel of its lesion mask (centre jittered by up to a quarter of the
  patch), labelled with the image's label (benign or malignant);
* a background patch is a crop of any image with at least half its pixels
  inside the breast and no lesion pixel, labelled ``normal``;
* each epoch draws new patches, seeded by ``(seed, epoch, image)``.

:func:`train_patch_stage` writes ``patch.pt`` (the weights) and
``patch-metrics.csv`` into the run folder; :func:`training.train.train` then
starts the whole-image model from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from node.inference.ensemble import calibrated_probabilities
from training.augment import Augmenter
from training.config import TrainConfig
from training.data import CachedImage, label_index, load_cached
from training.loop import Normaliser, Precision, Stepper, predict, train_epoch
from training.losses import build_loss, class_weights
from training.metrics import roc_auc
from training.metrics_log import MetricsLog
from training.sampling import EpochSampler
from training.schedule import LRSchedule

__all__ = ["PATCH_FILE", "PatchDataset", "crop", "patch_plan", "train_patch_stage"]

PATCH_FILE = "patch.pt"
_BREAST = 0.02  # preprocessed intensity above which a pixel counts as breast
_TRIES = 30


@dataclass(frozen=True)
class _Patch:
    entry: int
    lesion: bool
    draw: int


def crop(image: npt.NDArray[np.float32], row: int, col: int, size: int) -> npt.NDArray[np.float32]:
    """The ``size x size`` crop of ``image`` centred at ``(row, col)``, zero outside it."""
    out = np.zeros((size, size), dtype=np.float32)
    top, left = row - size // 2, col - size // 2
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, image.shape[0]), min(left + size, image.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return out


def patch_plan(entries: Sequence[CachedImage], per_lesion: int, background: int) -> list[_Patch]:
    """The patches of one epoch: ``per_lesion`` per image with a non-empty mask,
    ``background`` per image."""
    plan: list[_Patch] = []
    for i, entry in enumerate(entries):
        if entry.mask is not None and np.load(entry.mask).any():
            plan.extend(_Patch(i, True, k) for k in range(per_lesion))
        plan.extend(_Patch(i, False, k) for k in range(background))
    return plan


class PatchDataset(Dataset[tuple[torch.Tensor, int]]):
    """Patches as ``(1, size, size)`` tensors with their label index; see the module docstring."""

    def __init__(
        self,
        entries: Sequence[CachedImage],
        labels: Sequence[str],
        size: int,
        per_lesion: int,
        background: int,
        *,
        seed: int = 0,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.entries = list(entries)
        self.size = size
        self.plan = patch_plan(self.entries, per_lesion, background)
        self.normal = label_index("normal", labels)
        self.seed, self.epoch = seed, 0
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def targets(self) -> list[int]:
        return [self.entries[p.entry].target if p.lesion else self.normal for p in self.plan]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        patch = self.plan[index]
        entry = self.entries[patch.entry]
        image = load_cached(entry.image)
        mask = np.load(entry.mask) if entry.mask is not None else None
        rng = self._rng(index)
        if patch.lesion:
            assert mask is not None
            rows, cols = np.nonzero(mask)
            k = int(rng.integers(0, rows.size))
            jitter = rng.integers(-self.size // 4, self.size // 4 + 1, size=2)
            out = crop(image, int(rows[k] + jitter[0]), int(cols[k] + jitter[1]), self.size)
            target = entry.target
        else:
            out = self._background(image, mask, rng)
            target = self.normal
        tensor = torch.from_numpy(out)[None]
        if self.augmenter is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            tensor = self.augmenter(tensor, generator)
        return tensor, target

    def _background(
        self,
        image: npt.NDArray[np.float32],
        mask: npt.NDArray[np.bool_] | None,
        rng: np.random.Generator,
    ) -> npt.NDArray[np.float32]:
        rows, cols = image.shape
        half = self.size // 2
        best = crop(image, rows // 2, cols // 2, self.size)
        for _ in range(_TRIES):
            r = int(rng.integers(0, rows))
            c = int(rng.integers(0, cols))
            out = crop(image, r, c, self.size)
            if (out > _BREAST).mean() < 0.5:
                continue
            if (
                mask is not None
                and mask[max(r - half, 0) : r + half, max(c - half, 0) : c + half].any()
            ):
                continue
            return out
        return best


def train_patch_stage(
    config: TrainConfig,
    model: nn.Module,
    train_items: Sequence[CachedImage],
    val_items: Sequence[CachedImage],
    *,
    lr: float,
    weight_decay: float,
    normalise: Normaliser,
    precision: Precision,
    say: object = print,
    progress: bool = False,
) -> Path:
    """Train ``model`` on patches for ``config.patch.epochs``; write and return ``patch.pt``."""
    patch = config.patch
    labels = config.model.labels
    malignant = labels.index("malignant")
    train_set = PatchDataset(
        train_items,
        labels,
        patch.size,
        patch.per_lesion,
        patch.background,
        seed=config.seed,
        augmenter=Augmenter(config.augment),
    )
    val_set = PatchDataset(
        val_items, labels, patch.size, patch.per_lesion, patch.background, seed=config.seed + 1
    )
    if not any(p.lesion for p in train_set.plan):
        raise ValueError(
            "the patch stage needs lesion masks or outlines in the training data; "
            "this dataset has none (set patch.epochs: 0)"
        )
    targets = train_set.targets
    sampler = EpochSampler(len(train_set), config.seed)
    loader = DataLoader(
        train_set,
        batch_size=patch.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=len(train_set) > patch.batch_size,
    )
    val_loader = DataLoader(val_set, batch_size=patch.batch_size, num_workers=config.num_workers)
    weight = class_weights(targets, len(labels), config.loss.class_weights).to(precision.device)
    loss_fn = build_loss(config.loss.kind, weight, gamma=config.loss.focal_gamma).to(
        precision.device
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(len(loader), 1) * patch.epochs
    schedule = LRSchedule(
        optimizer,
        "cosine",
        total_steps=steps,
        warmup_steps=math.ceil(config.optim.warmup_epochs * max(len(loader), 1)),
    )
    stepper = Stepper(optimizer, precision.scaler(), schedule, grad_clip=config.optim.grad_clip)
    log = MetricsLog(config.output, name="patch-metrics.csv")
    for epoch in range(1, patch.epochs + 1):
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        result = train_epoch(
            model,
            loader,
            loss_fn,
            stepper,
            normalise,
            precision,
            classes=len(labels),
            progress=progress,
            label=f"patch epoch {epoch}/{patch.epochs}",
        )
        logits, val_targets = predict(model, val_loader, normalise, precision)
        auc = roc_auc(val_targets == malignant, calibrated_probabilities(logits, 1.0)[:, malignant])
        log.log(
            {
                "epoch": epoch,
                "train_loss": round(result.loss, 6),
                "val_auc": round(auc, 6) if not math.isnan(auc) else float("nan"),
                "patches": len(train_set),
                "lr": schedule.lr,
            }
        )
        if callable(say):
            say(
                f"patch epoch {epoch}: train loss {result.loss:.4f}, "
                f"val patch AUC {auc:.4f} ({len(train_set)} patches)"
            )
    log.close()
    path = config.output / PATCH_FILE
    torch.save(model.state_dict(), path)
    return path
