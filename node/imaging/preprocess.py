"""One DICOM image becomes one model input; shared by serving and training.

The result is a ``float32`` array of shape ``(height, width)`` with values in ``[0, 1]``
(1 = bright = dense tissue), plus a :class:`~node.imaging.geometry.Geometry` that
records every spatial step so that anything computed on the model input maps back to
original image pixels.

Steps, each a pure function on arrays:

1. decode and scale to ``[0, 1]`` (:mod:`node.imaging.pixels`);
2. mammography: :func:`~node.imaging.breast.breast_box` and a flip to the canonical side
   (breast on the left, chest wall at the left edge). The flip follows the image (the
   edge the breast leans on); the laterality tag decides only when the image is not
   decisive. Laterality comes from ``ImageLaterality``, else ``Laterality``, else the
   breast's position. Ultrasound: :func:`~node.imaging.breast.ultrasound_box` (the
   non-black image area) and optional :func:`~node.imaging.transforms.clahe`;
3. :func:`~node.imaging.transforms.resize_and_pad`: aspect-preserving resize into the
   model input, padded with zeros at the bottom and right.

``training/`` imports this module, so what a model sees in training is what it sees in
service.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from node.errors import InferenceError
from node.imaging.breast import (
    box_from_mask,
    image_area_box,
    mask_stride,
    otsu_mask,
    side_from_mask,
)
from node.imaging.dataset import Laterality, laterality_from_tags, modality_of, view_of
from node.imaging.geometry import Box, FloatImage, Geometry
from node.imaging.pixels import decode_stored, lookup, to_unit_range, unit_table
from node.imaging.transforms import clahe, fit_longest_side, resize_and_pad

__all__ = [
    "PREPROCESSING_REVISION",
    "PreprocessOptions",
    "Preprocessed",
    "preprocess_array",
    "preprocess_dataset",
]


# Raised whenever the same image and options give another model input (revision 2: the
# breast is everything above the background, not the brighter of two Otsu classes).
# Training caches are keyed on it, so a model never trains on inputs the node no longer
# computes.
PREPROCESSING_REVISION = 2


@dataclass(frozen=True)
class PreprocessOptions:
    """The input contract of a model (from its card) and a few switches.

    Attributes:
        height, width: model input size in pixels (default 1024 x 512).
        crop: crop to the breast (mammography) or the image area (ultrasound).
        canonical_flip: mirror mammograms so the breast lies on the left.
        ultrasound_clahe: contrast-limited adaptive histogram equalisation on
            ultrasound images.
        clahe_clip_limit: histogram clip as a multiple of the mean bin count
            (OpenCV's meaning; 1 disables the contrast limit's effect entirely).
        clahe_tiles: ``(rows, columns)`` of the CLAHE tile grid.
    """

    height: int = 1024
    width: int = 512
    crop: bool = True
    canonical_flip: bool = True
    ultrasound_clahe: bool = True
    clahe_clip_limit: float = 2.0
    clahe_tiles: tuple[int, int] = (8, 8)

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")
        if self.clahe_clip_limit < 1:
            raise ValueError("clahe_clip_limit must be at least 1")
        if min(self.clahe_tiles) < 1:
            raise ValueError("clahe_tiles must be positive")


@dataclass(frozen=True)
class Preprocessed:
    """One model input and where it came from.

    Attributes:
        image: ``float32`` ``(height, width)``, values in ``[0, 1]``.
        geometry: the spatial steps, for mapping results back.
        modality: ``"MG"`` or ``"US"``.
        laterality: ``"L"``/``"R"`` (tag, else inferred for mammograms), ``"U"``.
        laterality_source: ``"ImageLaterality"``, ``"Laterality"``, ``"image"``
            (inferred from the breast position) or ``"none"``.
        view: ``ViewPosition`` (``CC``, ``MLO``, ...) or ``""``.
        display: the whole original image in ``[0, 1]`` as a viewer shows it,
            scaled so its longest side is at most ``display_size`` (only when
            asked for): what result pictures are drawn on, without decoding again.
    """

    image: FloatImage
    geometry: Geometry
    modality: str
    laterality: Laterality
    laterality_source: str
    view: str
    display: FloatImage | None = field(default=None, repr=False, compare=False)


def preprocess_array(
    image: FloatImage,
    modality: str,
    laterality: Laterality | None = None,
    options: PreprocessOptions | None = None,
    *,
    laterality_source: str = "tag",
    display_size: int | None = None,
) -> Preprocessed:
    """Crop, flip, resize and pad a ``[0, 1]`` image (the output of :func:`to_unit_range`).

    Args:
        image: ``(rows, columns)`` float array in ``[0, 1]``.
        modality: ``"MG"`` or ``"US"``; anything else raises :class:`InferenceError`.
        laterality: from the tags, or ``None`` to infer it (mammography).
        options: the model's input contract.
        laterality_source: recorded in the result when ``laterality`` is given.
        display_size: also keep :attr:`Preprocessed.display` with at most this
            longest side (0: the original size); ``None``: no display copy.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 1:
        raise InferenceError(f"expected a 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InferenceError("the image contains non-finite values")
    return _preprocess(
        _ArrayPixels(img), modality, laterality, options, laterality_source, display_size
    )


class _ArrayPixels:
    """A ``[0, 1]`` image held in memory."""

    def __init__(self, image: FloatImage) -> None:
        self.image = image
        self.shape = (int(image.shape[0]), int(image.shape[1]))

    def strided(self, stride: int) -> FloatImage:
        return self.image[::stride, ::stride]

    def region(self, box: Box, flipped: bool) -> FloatImage:
        top, left, bottom, right = box
        region = self.image[top:bottom, left:right]
        return region[:, ::-1] if flipped else region


class _TablePixels:
    """A ``[0, 1]`` image as stored integers and a table (:func:`unit_table`).

    Only the pixels asked for are converted: the reduced copy for breast
    finding and the crop, which comes out flipped and contiguous in the same
    gather, ready for resizing.
    """

    def __init__(self, stored: npt.NDArray[Any], table: FloatImage) -> None:
        self.stored = stored
        self.table = table
        self.shape = (int(stored.shape[0]), int(stored.shape[1]))

    def strided(self, stride: int) -> FloatImage:
        return lookup(self.table, self.stored[::stride, ::stride])

    def region(self, box: Box, flipped: bool) -> FloatImage:
        top, left, bottom, right = box
        region = self.stored[top:bottom, left:right]
        return lookup(self.table, region[:, ::-1] if flipped else region)


def _preprocess(
    pixels: _ArrayPixels | _TablePixels,
    modality: str,
    laterality: Laterality | None,
    options: PreprocessOptions | None,
    laterality_source: str,
    display_size: int | None = None,
) -> Preprocessed:
    """:func:`preprocess_array` on a checked image, however it is held."""
    opts = options or PreprocessOptions()
    modality = modality.upper()
    flipped = False
    source = laterality_source if laterality is not None else "none"
    whole: Box = (0, 0, *pixels.shape)
    if modality not in ("MG", "US"):
        raise InferenceError(f"unsupported modality {modality!r} (expected MG or US)")
    stride = mask_stride(pixels.shape)
    small = pixels.strided(stride)
    if modality == "MG":
        mask = otsu_mask(small)  # one mask for the box and the side
        box = box_from_mask(mask, stride, pixels.shape) if opts.crop else whole
        side = side_from_mask(mask)
        if laterality is None and side is not None:
            # standard display: a left breast leans on the left edge
            laterality, source = ("L" if side == "left" else "R"), "image"
        if opts.canonical_flip:
            flipped = side == "right" if side is not None else laterality == "R"
    else:
        box = image_area_box(small, stride, pixels.shape) if opts.crop else whole

    region = pixels.region(box, flipped)
    if modality == "US" and opts.ultrasound_clahe:
        region = clahe(region, opts.clahe_clip_limit, opts.clahe_tiles)
    out, resized, pad = resize_and_pad(region, opts.height, opts.width)
    geometry = Geometry(
        original_shape=pixels.shape,
        crop=box,
        flipped=flipped,
        resized_shape=resized,
        pad=pad,
        input_shape=(opts.height, opts.width),
    )
    return Preprocessed(
        image=out,
        geometry=geometry,
        modality=modality,
        laterality=laterality if laterality is not None else "U",
        laterality_source=source,
        view="",
        display=None
        if display_size is None
        else fit_longest_side(pixels.region(whole, False), display_size),
    )


def preprocess_dataset(
    ds: Dataset, options: PreprocessOptions | None = None, *, display_size: int | None = None
) -> Preprocessed:
    """Decode and preprocess one DICOM image; :class:`InferenceError` on any failure.

    The same result as ``preprocess_array(to_unit_range(ds, decode(ds)), ...)``
    with the tags' modality and laterality. Greyscale 8/16-bit images take a
    shorter road to it: the decoded array is used as decoded (no unused-bits
    pass, no copy of natively encoded pixels) and only the reduced copy and the
    crop are converted to ``[0, 1]``, through the table of :func:`to_unit_range`.
    ``display_size``: as for :func:`preprocess_array`.
    """
    modality = modality_of(ds)
    if modality not in ("MG", "US"):
        raise InferenceError(
            f"unsupported modality {modality or '(missing)'!r} (expected MG or US)"
        )
    stored = decode_stored(ds, stored_bits_only=False)
    laterality, source = laterality_from_tags(ds)
    table = unit_table(ds, stored) if min(stored.shape[:2]) >= 1 else None
    if table is not None and np.isfinite(table).all():
        result = _preprocess(
            _TablePixels(stored, table), modality, laterality, options, source, display_size
        )
    else:
        pixels = to_unit_range(ds, stored)
        result = preprocess_array(
            pixels,
            modality,
            laterality,
            options,
            laterality_source=source,
            display_size=display_size,
        )
    return replace(result, view=view_of(ds))
