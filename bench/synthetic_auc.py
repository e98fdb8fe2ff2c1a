"""How hard is the synthetic task? Train a small CNN on CPU, print AUC.

Generates ``--train`` + ``--test`` small studies (different seeds, so no study is
shared) of ``--modality`` (``mg``: screening mammography, ``us``: breast
ultrasound), reads every For Presentation image back from DICOM and runs it through
the node's own preprocessing (:func:`node.imaging.preprocess.preprocess_dataset`:
VOI window, breast crop, canonical flip, aspect-preserving resize and pad to
``--size``, 512 x 256 by default; ultrasound: image-area crop and CLAHE,
224 x 288 by default). The preprocessed arrays are cached (keyed by
the generator's source, the modality, the seeds, the difficulty and the input size),
so a second run only trains. It then trains the registered ``breast_cnn_small`` from
scratch with AdamW, a one-cycle learning rate, class-balanced loss weights and flips
(top-bottom for mammograms, whose breast is flipped to the left; left-right for
ultrasound, whose rows are depth) for ``--epochs`` epochs, and prints the per-image
AUC for malignant versus not (benign and normal images are negatives) on the
held-out studies, overall and per lesion type. A few minutes on two CPU cores::

    .venv/bin/python bench/synthetic_auc.py --train 200 --test 60
    .venv/bin/python bench/synthetic_auc.py --size 384x192 --difficulty 1.5
    .venv/bin/python bench/synthetic_auc.py --pool max --epochs 16
    .venv/bin/python bench/synthetic_auc.py --modality us --pool max

``--pool`` chooses the model's global pooling (``avg``, ``max``, ``avgmax``,
``catavgmax``): a single small finding is one peak in the last feature map,
which average pooling dilutes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from node.imaging.dataset import read_dataset
from node.imaging.preprocess import PreprocessOptions, preprocess_dataset
from node.models.registry import GLOBAL_POOLS, create_model
from training.synthetic import SynthOptions, write_studies
from training.synthetic.options import Modality

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "breast-ai-node/synthetic-auc"
)


@dataclass(frozen=True)
class Split:
    """Preprocessed images of one set of studies.

    ``x``: float32 ``(N, 1, H, W)`` in [0, 1]; ``y``: 1.0 for malignant images;
    ``kinds``: lesion type per image; ``studies``: study index per image.
    """

    x: NDArray[np.float32]
    y: NDArray[np.float32]
    kinds: NDArray[np.str_]
    studies: NDArray[np.int64]


def generator_digest() -> str:
    """Hash of the generator's and the preprocessing's source (invalidates the cache)."""
    digest = hashlib.sha256()
    sources = sorted((ROOT / "training/synthetic").glob("*.py"))
    sources.extend(sorted((ROOT / "node/imaging").glob("*.py")))
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_split(
    studies: int, seed: int, difficulty: float, height: int, width: int, modality: Modality = "mg"
) -> Split:
    """Generate ``studies`` studies of ``seed`` and preprocess their images."""
    options = SynthOptions(size="small", difficulty=difficulty, modality=modality)
    preprocess = PreprocessOptions(height=height, width=width)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = write_studies(folder, studies, seed, options)
        arrays = [
            preprocess_dataset(read_dataset(folder / img.path), preprocess).image for img in images
        ]
    return Split(
        x=np.stack(arrays)[:, None].astype(np.float32),
        y=np.array([img.label == "malignant" for img in images], dtype=np.float32),
        kinds=np.array([img.lesion_type for img in images]),
        studies=np.array([int(img.path.split("/")[0][6:]) for img in images], dtype=np.int64),
    )


def load_splits(
    cache: Path,
    sets: list[tuple[int, int]],
    difficulty: float,
    height: int,
    width: int,
    modality: Modality = "mg",
) -> list[Split]:
    """:func:`build_split` for each ``(studies, seed)``, from ``cache`` when computed before.

    Missing sets are built in parallel, one process each (at most two).
    """
    digest = generator_digest()
    paths = [
        cache / f"{digest}-{modality}-s{seed}-n{n}-d{difficulty:g}-{height}x{width}.npz"
        for n, seed in sets
    ]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=min(2, len(missing))) as pool:
            jobs = {
                i: pool.submit(build_split, *sets[i], difficulty, height, width, modality)
                for i in missing
            }
            for i, job in jobs.items():
                split = job.result()
                tmp = paths[i].with_name(paths[i].name + ".tmp.npz")
                np.savez(tmp, x=split.x, y=split.y, kinds=split.kinds, studies=split.studies)
                tmp.replace(paths[i])
    splits = []
    for path in paths:
        with np.load(path) as data:
            splits.append(Split(data["x"], data["y"], data["kinds"], data["studies"]))
    return splits


def auc(scores: NDArray[np.floating], labels: NDArray[np.floating]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def train(
    split: Split,
    epochs: int,
    seed: int,
    batch: int = 16,
    log: bool = True,
    pool: str = "avg",
    flip_axis: int = -2,
) -> nn.Module:
    """Train ``breast_cnn_small`` (one logit, ``pool`` global pooling) on ``split``;
    returns it in eval mode. ``flip_axis``: the axis of the random flips (-2, top-bottom,
    for mammograms, whose breast is flipped to the left; -1, left-right, for ultrasound,
    whose rows are depth)."""
    torch.manual_seed(seed)
    model = create_model("breast_cnn_small", num_classes=1, in_chans=1, global_pool=pool).train()
    steps = epochs * ((len(split.y) + batch - 1) // batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.2
    )
    positives = float(split.y.sum())
    pos_weight = torch.tensor((len(split.y) - positives) / max(positives, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    xt = torch.from_numpy(split.x)
    yt = torch.from_numpy(split.y)
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    for epoch in range(epochs):
        order = rng.permutation(len(yt))
        total = 0.0
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i : i + batch])
            inputs = (xt[idx] - 0.5) / 0.5
            if rng.random() < 0.5:
                inputs = inputs.flip(flip_axis)
            optimiser.zero_grad()
            loss = loss_fn(model(inputs).squeeze(1), yt[idx])
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        if log:
            print(
                f"epoch {epoch + 1:2d}: loss {total / len(yt):.3f} "
                f"({time.monotonic() - start:.0f} s)",
                flush=True,
            )
    return model.eval()


def predict(model: nn.Module, split: Split, batch: int = 64) -> NDArray[np.float32]:
    """Malignancy logits of every image of ``split``."""
    with torch.no_grad():
        out = [
            model((torch.from_numpy(split.x[i : i + batch]) - 0.5) / 0.5).squeeze(1)
            for i in range(0, len(split.x), batch)
        ]
    return torch.cat(out).numpy()


def report(scores: NDArray[np.float32], test: Split) -> float:
    """Print the AUC table; returns the overall per-image AUC."""
    overall = auc(scores, test.y)
    negatives = test.y == 0
    print(f"{'lesion type':<28} {'images':>6} {'AUC':>6}")
    print(f"{'all (malignant vs not)':<28} {int(test.y.sum()):>6} {overall:>6.3f}")
    for kind in sorted({str(k) for k, y in zip(test.kinds, test.y, strict=True) if y == 1}):
        sel = (test.kinds == kind) | negatives
        count = int(((test.kinds == kind) & ~negatives).sum())
        print(f"  {kind:<26} {count:>6} {auc(scores[sel], test.y[sel]):>6.3f}")
    benign = (test.kinds == "circumscribed_mass") | (test.kinds == "round_calcifications")
    if benign.any():
        sel = test.y == 1
        sel = sel | benign
        print(
            f"  {'malignant vs benign only':<26} {int(benign.sum()):>6} "
            f"{auc(scores[sel], test.y[sel]):>6.3f}"
        )
    return overall


def parse_size(text: str) -> tuple[int, int]:
    """``"512x256"`` -> ``(512, 256)`` (height, width)."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, default=200, help="training studies")
    parser.add_argument("--test", type=int, default=60, help="held-out studies")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--modality", choices=("mg", "us"), default="mg")
    parser.add_argument(
        "--size", type=parse_size, default=None, help="HxW model input (mg 512x256, us 224x288)"
    )
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pool", choices=GLOBAL_POOLS, default="avg", help="global pooling")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = args.size or ((224, 288) if args.modality == "us" else (512, 256))
    start = time.monotonic()
    train_split, test_split = load_splits(
        args.cache,
        [(args.train, args.seed), (args.test, args.seed + 1000)],
        args.difficulty,
        height,
        width,
        args.modality,
    )
    print(
        f"{len(train_split.y)} training images ({int(train_split.y.sum())} malignant), "
        f"{len(test_split.y)} held-out images ({int(test_split.y.sum())} malignant), "
        f"{height}x{width}, ready in {time.monotonic() - start:.0f} s",
        flush=True,
    )
    t0 = time.monotonic()
    flip_axis = -1 if args.modality == "us" else -2
    model = train(train_split, args.epochs, args.seed, pool=args.pool, flip_axis=flip_axis)
    print(f"trained {args.epochs} epochs ({args.pool} pooling) in {time.monotonic() - t0:.0f} s")
    report(predict(model, test_split), test_split)
    print(f"total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
