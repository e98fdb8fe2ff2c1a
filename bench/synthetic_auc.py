"""How hard is the synthetic mammography task? Train a tiny CNN on CPU, print AUC.

Generates ``--train`` + ``--test`` small studies (different seeds, so no study is
shared), reads every For Presentation image back from DICOM, applies its VOI
window and trains a five-layer CNN on the 512 x 416 images for
``--epochs`` epochs to tell malignant images from the rest. Prints the per-image
AUC on the held-out studies (and per lesion type). Runs in a few minutes on
two CPU cores::

    .venv/bin/python bench/synthetic_auc.py --train 200 --test 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.pixels import apply_voi_lut
from torch import nn

from training.synthetic import SynthImage, SynthOptions, write_studies


def load(folder: Path, images: list[SynthImage]) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 1, 512, 416) in [0, 1] and malignant labels."""
    arrays = []
    for img in images:
        ds = pydicom.dcmread(folder / img.path)
        pixels = apply_voi_lut(ds.pixel_array, ds, index=0).astype(np.float32)
        pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1.0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            pixels = 1.0 - pixels
        arrays.append(pixels)
    x = np.stack(arrays)[:, None]
    y = np.array([img.label == "malignant" for img in images], dtype=np.float32)
    return x, y


def tiny_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16),
        *block(16, 32),
        *block(32, 48),
        *block(48, 64),
        *block(64, 64),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=200, help="training studies")
    parser.add_argument("--test", type=int, default=60, help="held-out studies")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    options = SynthOptions(size="small", difficulty=args.difficulty)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = Path(tmp) / "train", Path(tmp) / "test"
        train_images = write_studies(train_dir, args.train, args.seed, options)
        test_images = write_studies(test_dir, args.test, args.seed + 1000, options)
        x_train, y_train = load(train_dir, train_images)
        x_test, y_test = load(test_dir, test_images)
    elapsed = time.monotonic() - start
    print(f"generated and loaded {len(y_train)} + {len(y_test)} images in {elapsed:.0f} s")
    model = tiny_cnn()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=args.epochs * ((len(y_train) + 31) // 32)
    )
    pos_weight = torch.tensor((len(y_train) - y_train.sum()) / max(y_train.sum(), 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(yt))
        total = 0.0
        for i in range(0, len(order), 32):
            idx = torch.from_numpy(order[i : i + 32])
            batch = xt[idx]
            if rng.random() < 0.5:
                batch = batch.flip(-1)
            if rng.random() < 0.5:
                batch = batch.flip(-2)
            optimiser.zero_grad()
            loss = loss_fn(model(batch).squeeze(1), yt[idx])
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(yt):.3f} ({time.monotonic() - start:.0f} s)")
    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [model(torch.from_numpy(x_test[i : i + 64])) for i in range(0, len(x_test), 64)]
        )
    scores_np = scores.squeeze(1).numpy()
    overall = auc(scores_np, y_test)
    print(f"per-image AUC, malignant vs not, {args.test} held-out studies: {overall:.3f}")
    negatives = np.array([img.label != "malignant" for img in test_images])
    for kind in sorted({img.lesion_type for img in test_images if img.label == "malignant"}):
        sel = np.array([img.lesion_type == kind for img in test_images]) | negatives
        count = int((sel & ~negatives).sum())
        print(f"  {kind}: AUC {auc(scores_np[sel], y_test[sel]):.3f} ({count} images)")
    print(f"total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
