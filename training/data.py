"""From samples to training tensors, through the node's own preprocessing.

Every image goes through :mod:`node.imaging.preprocess` exactly as the node
would run it (DICOM: :func:`~node.imaging.preprocess.preprocess_dataset`;
PNG/JPEG datasets: the same crop/flip/resize via
:func:`~node.imaging.preprocess.preprocess_array`). That runs once per image:
the result is cached as ``.npy`` under the cache folder, keyed by the file, the
input contract and the storage type, so later epochs and later runs only read
arrays. Images are stored as uint16 (``round(x * 65535)``, the default), float16
or float32: 1 MiB per image at 1024 x 512 and 4 MiB at 2048 x 1024 in two
bytes a pixel, twice that in float32; masks as one byte a pixel.
Augmentation then runs on the cached tensors (:mod:`training.augment`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from node.imaging.dataset import read_dataset
from node.imaging.geometry import Geometry
from node.imaging.preprocess import (
    PREPROCESSING_REVISION,
    Preprocessed,
    PreprocessOptions,
    preprocess_array,
    preprocess_dataset,
)
from node.imaging.transforms import resize_and_pad
from training.augment import Augmenter
from training.datasets.sample import Sample, lesion_mask

__all__ = [
    "CACHE_DTYPES",
    "CachedImage",
    "ImageDataset",
    "cache_images",
    "label_index",
    "load_cached",
    "mask_to_model",
    "preprocess_sample",
]


CACHE_DTYPES = ("uint16", "float16", "float32")
"""How cached images may be stored (``data.cache_dtype``)."""

_UINT16_MAX = 65535.0


def _encode(image: npt.NDArray[np.floating], dtype: str) -> npt.NDArray[np.generic]:
    if dtype == "uint16":
        scaled = np.rint(np.clip(image, 0.0, 1.0) * _UINT16_MAX)
        return scaled.astype(np.uint16)  # type: ignore[no-any-return]
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"unknown cache dtype {dtype!r}; known: {', '.join(CACHE_DTYPES)}")
    return image.astype(dtype)


def load_cached(path: Path) -> npt.NDArray[np.float32]:
    """A cached image as float32 in ``[0, 1]``, whatever it is stored as."""
    array = np.load(path)
    if array.dtype == np.uint16:
        array = array.astype(np.float32) / np.float32(_UINT16_MAX)
    out: npt.NDArray[np.float32] = array.astype(np.float32, copy=False)
    return out


def label_index(label: str, labels: Sequence[str]) -> int:
    """Index of a sample label among the model's labels.

    With two labels (``normal``/``malignant`` or similar) a benign image counts
    as not malignant.
    """
    if label in labels:
        return list(labels).index(label)
    if label == "malignant":
        raise ValueError(f"labels {list(labels)} have no 'malignant'")
    negatives = [i for i, name in enumerate(labels) if name != "malignant"]
    return negatives[0]


def _read_image_file(path: Path) -> npt.NDArray[np.float32]:
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
        if mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(img, dtype=np.float32)
            return (arr / max(float(arr.max()), 1.0)).astype(np.float32)
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)


def preprocess_sample(sample: Sample, options: PreprocessOptions) -> Preprocessed:
    """The model input of one sample, as the node computes it."""
    if sample.is_dicom:
        return preprocess_dataset(read_dataset(sample.path), options)
    side = sample.laterality if sample.laterality in ("L", "R") else None
    return preprocess_array(
        _read_image_file(sample.path),
        sample.modality,
        side,  # type: ignore[arg-type]
        options,
        laterality_source="dataset",
    )


def mask_to_model(mask: npt.NDArray[np.bool_], geometry: Geometry) -> npt.NDArray[np.bool_]:
    """A mask on the original image carried through the crop, flip and resize (a model
    pixel is in the mask when the lesion covers more than 5 % of it)."""
    top, left, bottom, right = geometry.crop
    region = mask[top:bottom, left:right].astype(np.float32)
    if geometry.flipped:
        region = region[:, ::-1]
    out, _, _ = resize_and_pad(region, *geometry.input_shape)
    # every model pixel the lesion touches: a calcification smaller than a pixel stays
    return out > 0.05


@dataclass(frozen=True)
class CachedImage:
    """A preprocessed image on disk and its label index."""

    image: Path
    mask: Path | None
    target: int


def _key(sample: Sample, options: PreprocessOptions, dtype: str) -> str:
    stat = sample.path.stat()
    text = (
        f"{sample.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{options}|"
        f"{[str(p) for p in sample.mask_paths]}|{sample.shapes}|{dtype}|"
        f"revision {PREPROCESSING_REVISION}"
    )
    return hashlib.sha1(text.encode()).hexdigest()


def cache_images(
    samples: Sequence[Sample],
    options: PreprocessOptions,
    labels: Sequence[str],
    cache_dir: Path,
    *,
    dtype: str = "uint16",
    progress: bool = False,
) -> list[CachedImage]:
    """Preprocess every sample once into ``cache_dir`` (``.npy`` of ``dtype``) and return
    the entries."""
    from training.progress import progress_bar

    cache_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for sample in progress_bar(samples, "preprocess", enabled=progress):
        key = _key(sample, options, dtype)
        image_path = cache_dir / f"{key}.npy"
        mask_path = cache_dir / f"{key}-mask.npy"
        if not image_path.exists():
            result = preprocess_sample(sample, options)
            rows, cols = result.geometry.original_shape
            mask = lesion_mask(sample, rows, cols)
            if mask is not None:
                _save(mask_path, mask_to_model(mask, result.geometry))
            _save(image_path, _encode(result.image, dtype))
        entries.append(
            CachedImage(
                image=image_path,
                mask=mask_path if mask_path.exists() else None,
                target=label_index(sample.label, labels),
            )
        )
    return entries


def _save(path: Path, array: npt.NDArray[np.generic]) -> None:
    # write then rename, so an interrupted run never leaves a truncated cache entry and
    # runs filling one cache at once never write the same temporary file
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Cached images as ``(1, H, W)`` tensors in ``[0, 1]`` with their label index.

    Augmentation is seeded per ``(seed, epoch, index)``: set :attr:`epoch` before
    each epoch and the same epoch always sees the same augmented images,
    whatever the number of workers or a resume in between.
    """

    def __init__(
        self, entries: Sequence[CachedImage], augmenter: Augmenter | None = None, seed: int = 0
    ) -> None:
        self.entries = list(entries)
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def targets(self) -> list[int]:
        return [e.target for e in self.entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        entry = self.entries[index]
        image = torch.from_numpy(load_cached(entry.image))[None]
        if self.augmenter is not None:
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 1_000_003 + index
            )
            image = self.augmenter(image, generator)
        return image, entry.target
