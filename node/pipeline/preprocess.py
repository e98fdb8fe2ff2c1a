"""Image preprocessing shared by serving and training.

One DICOM image becomes one model input: a ``float32`` array of shape
``(height, width)`` with values in ``[0, 1]`` (1 = bright = dense tissue), plus a
:class:`Geometry` that records every spatial step so that anything computed on
the model input (a heat map, a polygon) maps back to original image pixels.

Steps, each a pure function on arrays:

1. :func:`decode` the stored pixels with the installed codecs (JPEG 2000, JPEG-LS,
   JPEG lossless, RLE, ...); colour ultrasound becomes grey.
2. :func:`to_unit_range`: the Modality LUT only when it is not the identity, then
   the VOI LUT or window (LINEAR, LINEAR_EXACT, SIGMOID, VOI LUT Sequence) on the
   integer data, scaled to ``[0, 1]`` by the VOI's output range; MONOCHROME1 is
   inverted. For 8/16-bit greyscale data this is evaluated once per possible
   stored value into a table and applied as one gather; :func:`preprocess_dataset`
   gathers only the pixels it keeps (see ``bench/decode.py``).
3. Mammography: :func:`breast_box` (Otsu threshold, largest component, falling
   back to the whole image) and a flip to the canonical side (breast on the
   left, chest wall at the left edge). The flip follows the image (the edge the
   breast leans on); the laterality tag decides only when the image is not
   decisive. Laterality comes from ``ImageLaterality``, else ``Laterality``,
   else the breast's position. Ultrasound: :func:`ultrasound_box` (the
   non-black image area) and optional :func:`clahe`.
4. :func:`resize_and_pad`: aspect-preserving resize into the model input, padded
   with zeros at the bottom and right.

Coordinates follow the DICOM SCOORD convention: ``(x, y) = (column, row)`` as
floats, ``(0, 0)`` the top-left corner of the top-left pixel, so pixel
``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)`` and its centre is
``(c + 0.5, r + 0.5)``. In that convention every step is an exact affine map.

``training/`` imports this module, so what a model sees in training is what it
sees in service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pydicom
import torch
import torch.nn.functional as F  # noqa: N812
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless
from scipy import ndimage

from node.errors import InferenceError

__all__ = [
    "Geometry",
    "Laterality",
    "PreprocessOptions",
    "Preprocessed",
    "breast_box",
    "chest_wall_side",
    "clahe",
    "decode",
    "laterality_from_tags",
    "modality_of",
    "otsu_threshold",
    "preprocess_array",
    "preprocess_dataset",
    "read_dataset",
    "resize_and_pad",
    "to_unit_range",
    "ultrasound_box",
    "view_of",
]

FloatImage = npt.NDArray[np.float32]
Laterality = Literal["L", "R", "U"]
"""Left breast, right breast, unknown (ultrasound without the tag)."""

Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in pixels, half-open: rows ``top:bottom``."""

# A side is "decisive" when one half of the image holds this much more of the
# breast mask than the other; below that the tags decide the flip.
_SIDE_MARGIN = 0.1
# Components smaller than this fraction of the image are not a breast.
_MIN_BREAST_FRACTION = 0.01
# Breast finding runs on a copy at most this many pixels on its long side.
_MASK_LONG_SIDE = 512
# Ultrasound pixels at or below this (of full scale) count as black background.
_US_BLACK = 0.02
# Pixels per block of the table lookup (the block's index copy stays in cache).
_LOOKUP_BLOCK = 1 << 16


# --------------------------------------------------------------------------- #
# Geometry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Geometry:
    """How an original image became a model input; exact and invertible.

    Attributes:
        original_shape: ``(rows, columns)`` of the original image.
        crop: ``(top, left, bottom, right)`` of the kept region in original
            pixels, half-open.
        flipped: the cropped region was mirrored left-right.
        resized_shape: ``(rows, columns)`` of the crop after resizing.
        pad: ``(top, left)`` offset of the resized crop inside the model input.
        input_shape: ``(rows, columns)`` of the model input.
    """

    original_shape: tuple[int, int]
    crop: Box
    flipped: bool
    resized_shape: tuple[int, int]
    pad: tuple[int, int]
    input_shape: tuple[int, int]

    def __post_init__(self) -> None:
        top, left, bottom, right = self.crop
        rows, cols = self.original_shape
        if not (0 <= top < bottom <= rows and 0 <= left < right <= cols):
            raise ValueError(
                f"crop {self.crop} is not inside an image of shape {self.original_shape}"
            )
        if min(self.resized_shape) < 1:
            raise ValueError(f"resized shape {self.resized_shape} is empty")
        if (
            self.pad[0] < 0
            or self.pad[1] < 0
            or self.pad[0] + self.resized_shape[0] > self.input_shape[0]
            or self.pad[1] + self.resized_shape[1] > self.input_shape[1]
        ):
            raise ValueError(f"resized crop with pad {self.pad} does not fit {self.input_shape}")

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the cropped region."""
        top, left, bottom, right = self.crop
        return bottom - top, right - left

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: model pixels per original pixel along rows and columns."""
        ch, cw = self.crop_shape
        return self.resized_shape[0] / ch, self.resized_shape[1] / cw

    def to_model(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 2)`` original ``(x, y)`` coordinates to model-input coordinates."""
        pts = _points(points)
        top, left, _, _ = self.crop
        sy, sx = self.scale
        x = pts[:, 0] - left
        if self.flipped:
            x = self.crop_shape[1] - x
        out = np.empty_like(pts)
        out[:, 0] = x * sx + self.pad[1]
        out[:, 1] = (pts[:, 1] - top) * sy + self.pad[0]
        return out

    def to_original(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 2)`` model-input ``(x, y)`` coordinates to original ``(x, y)``.

        The exact inverse of :meth:`to_model`. Points in the padding map outside
        the crop; callers clip if they need to.
        """
        pts = _points(points)
        top, left, _, _ = self.crop
        sy, sx = self.scale
        x = (pts[:, 0] - self.pad[1]) / sx
        if self.flipped:
            x = self.crop_shape[1] - x
        out = np.empty_like(pts)
        out[:, 0] = x + left
        out[:, 1] = (pts[:, 1] - self.pad[0]) / sy + top
        return out

    def map_to_original(self, heatmap: npt.ArrayLike) -> FloatImage:
        """Resample a map over the model input onto the original pixel grid.

        Args:
            heatmap: ``(h, w)`` array covering the whole model input (any
                resolution: a feature map or the input itself); cell ``(i, j)``
                covers an ``H/h x W/w`` block of model pixels.

        Returns:
            ``float32`` array of shape :attr:`original_shape`; bilinear inside the
            crop, 0 outside it.
        """
        return self.map_to_grid(heatmap, self.original_shape)

    def map_to_grid(self, heatmap: npt.ArrayLike, shape: tuple[int, int]) -> FloatImage:
        """:meth:`map_to_original` onto a scaled copy of the original: a ``shape`` grid
        covering the whole original image (e.g. a reduced picture of it)."""
        hm = np.asarray(heatmap, dtype=np.float32)
        if hm.ndim != 2 or min(hm.shape) < 1:
            raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {hm.shape}")
        rows, cols = int(shape[0]), int(shape[1])
        # the grid cells' centres in original pixel coordinates
        ys = (np.arange(rows, dtype=np.float64) + 0.5) * (self.original_shape[0] / rows)
        xs = (np.arange(cols, dtype=np.float64) + 0.5) * (self.original_shape[1] / cols)
        top, left, bottom, right = self.crop
        inside_rows = np.flatnonzero((ys >= top) & (ys < bottom))
        inside_cols = np.flatnonzero((xs >= left) & (xs < right))
        out = np.zeros((rows, cols), dtype=np.float32)
        if inside_rows.size == 0 or inside_cols.size == 0:
            return out
        ys, xs = ys[inside_rows], xs[inside_cols]
        model_y = self.to_model(np.stack([np.zeros_like(ys), ys], axis=1))[:, 1]
        model_x = self.to_model(np.stack([xs, np.zeros_like(xs)], axis=1))[:, 0]
        h, w = hm.shape
        ys_index = model_y * (h / self.input_shape[0]) - 0.5
        xs_index = model_x * (w / self.input_shape[1]) - 0.5
        cropped = _interp_axis(_interp_axis(hm, ys_index, axis=0), xs_index, axis=1)
        out[inside_rows[0] : inside_rows[-1] + 1, inside_cols[0] : inside_cols[-1] + 1] = cropped
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "original_shape": list(self.original_shape),
            "crop": list(self.crop),
            "flipped": self.flipped,
            "resized_shape": list(self.resized_shape),
            "pad": list(self.pad),
            "input_shape": list(self.input_shape),
        }


def _points(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    return pts


def _interp_axis(
    values: npt.NDArray[np.float32], coords: npt.NDArray[np.float64], axis: int
) -> npt.NDArray[np.float32]:
    """Linear interpolation of ``values`` at fractional indices along one axis (edges clamped)."""
    n = values.shape[axis]
    c = np.clip(coords, 0.0, n - 1)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (c - i0).astype(np.float32)
    shape = [1, 1]
    shape[axis] = -1
    frac = frac.reshape(shape)
    result = np.take(values, i0, axis=axis) * (1 - frac) + np.take(values, i1, axis=axis) * frac
    return np.asarray(result, dtype=np.float32)


# --------------------------------------------------------------------------- #
# Options and result
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# DICOM: reading, tags and pixels
# --------------------------------------------------------------------------- #
def read_dataset(path: str | Path) -> Dataset:
    """Read a DICOM file (pixels included); :class:`InferenceError` if it is not one."""
    try:
        return pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError) as exc:
        raise InferenceError(f"cannot read DICOM file {Path(path).name}: {exc}") from exc


def modality_of(ds: Dataset) -> str:
    """``Modality`` upper-cased (``"MG"``, ``"US"``, ...), ``""`` when absent."""
    return str(ds.get("Modality", "") or "").strip().upper()


def laterality_from_tags(ds: Dataset) -> tuple[Laterality | None, str]:
    """Laterality from ``ImageLaterality``, else ``Laterality``; ``(None, "none")`` if neither."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value, keyword  # type: ignore[return-value]
    return None, "none"


def view_of(ds: Dataset) -> str:
    """``ViewPosition`` (``CC``, ``MLO``, ...), ``""`` when absent."""
    return str(ds.get("ViewPosition", "") or "").strip().upper()


def decode(ds: Dataset) -> npt.NDArray[Any]:
    """Decode the stored pixel data to an array of the stored values.

    Returns ``(rows, columns)`` for greyscale or ``(rows, columns, 3)`` RGB, a
    new writeable array (the dataset does not keep it). Raises
    :class:`InferenceError` for missing or undecodable pixel data and for
    multi-frame images.
    """
    return _decode(ds, stored_bits_only=True)


def _decode(ds: Dataset, *, stored_bits_only: bool) -> npt.NDArray[Any]:
    """:func:`decode`; with ``stored_bits_only=False`` unused high bits are left as stored.

    Without the unused-bits correction natively encoded pixels come back as a
    read-only view on the dataset's Pixel Data (no copy) and decoded frames
    skip two passes over the image; :func:`_unit_table` applies the
    correction to the table instead.
    """
    if "PixelData" not in ds:
        raise InferenceError("the image has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise InferenceError(f"multi-frame images are not supported ({frames} frames)")
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    options: dict[str, Any] = {}
    if not stored_bits_only:
        options.update(correct_unused_bits=False, view_only=True)
    plugin = _preferred_plugin(syntax)
    try:
        try:
            arr = pixel_array(ds, decoding_plugin=plugin, **options)
        except Exception:  # the preferred plugin failed: let pydicom try every plugin
            if not plugin:
                raise
            arr = pixel_array(ds, **options)
    except Exception as exc:  # pydicom raises many types for codec problems
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise InferenceError(f"cannot decode pixel data ({name}): {exc}") from exc
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise InferenceError(f"unsupported pixel array shape {arr.shape}")
    return arr


def _preferred_plugin(syntax: object) -> str:
    """The fastest installed decoding plugin for ``syntax``, ``""`` for pydicom's own order.

    JPEG-LS: CharLS (pyjpegls) decodes a detector-size mammogram about three
    times faster than libjpeg (pylibjpeg-libjpeg), which pydicom tries first.
    """
    if not isinstance(syntax, str) or syntax not in _PREFERRED_PLUGINS:
        return ""
    plugin = _PREFERRED_PLUGINS[syntax]
    try:
        available = get_decoder(syntax).available_plugins
    except NotImplementedError:
        return ""
    return plugin if plugin in available else ""


_PREFERRED_PLUGINS: dict[str, str] = {
    str(JPEGLSLossless): "pyjpegls",
    str(JPEGLSNearLossless): "pyjpegls",
}


def to_unit_range(ds: Dataset, arr: npt.NDArray[Any]) -> FloatImage:
    """Apply the Modality and VOI transforms and scale to ``[0, 1]``, bright = dense.

    ``arr`` is the output of :func:`decode` for ``ds``. RGB input (ultrasound)
    is converted to luminance and scaled by its bit depth; VOI does not apply.

    Greyscale integers of 8 or 16 bits (every mammogram) go through a table
    (:func:`_unit_table`): the whole transform is evaluated once per possible
    stored value and the image becomes one gather, giving the values the
    direct ``float64`` evaluation gives, pixel for pixel.
    """
    if arr.ndim == 3:
        gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        full = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
        return np.clip(gray / full, 0.0, 1.0).astype(np.float32)
    table = _unit_table(ds, arr)
    if table is not None:
        return _lookup(table, arr)
    return _to_unit_range_direct(ds, arr)


def _to_unit_range_direct(ds: Dataset, arr: npt.NDArray[Any]) -> FloatImage:
    """The transform of :func:`to_unit_range` evaluated on the image itself, in ``float64``."""
    values: npt.NDArray[Any] = arr
    if _modality_lut_needed(ds):
        values = apply_modality_lut(values, ds)
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            # keep integers so a VOI LUT Sequence indexes them exactly
            values = values.astype(np.int64)
    if _voi_applies(ds):
        windowed, low, high = _apply_voi(ds, values)
        result = windowed.astype(np.float64)
    else:
        result = values.astype(np.float64)
        low, high = float(result.min()), float(result.max())
    return _scale(ds, result, low, high)


def _voi_applies(ds: Dataset) -> bool:
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def _apply_voi(ds: Dataset, values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], float, float]:
    """The VOI LUT or window applied to ``values``, and the VOI's output range."""
    try:
        windowed = apply_voi_lut(values, ds, index=0)
        # the VOI's output range, from its response to extreme inputs
        probe = np.array([-(2**31), 2**31 - 1], dtype=np.int64)
        with np.errstate(over="ignore"):  # a SIGMOID saturates at the extremes
            ends = apply_voi_lut(probe, ds, index=0).astype(np.float64)
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise InferenceError(f"invalid VOI LUT or window: {exc}") from exc
    return windowed, float(ends.min()), float(ends.max())


def _scale(ds: Dataset, result: npt.NDArray[np.float64], low: float, high: float) -> FloatImage:
    """``[low, high]`` to ``[0, 1]`` as ``float32``, inverted for MONOCHROME1."""
    if high <= low:
        scaled = np.zeros(result.shape, dtype=np.float32)
    else:
        scaled = np.clip((result - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def _modality_lut_needed(ds: Dataset) -> bool:
    if "ModalityLUTSequence" in ds:
        return True
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return slope != 1.0 or intercept != 0.0


def _unit_table(ds: Dataset, arr: npt.NDArray[Any]) -> FloatImage | None:
    """:func:`to_unit_range`'s output for every bit pattern of ``arr``'s dtype, or ``None``.

    ``None`` unless ``arr`` is a 2-D native-endian integer array of 8 or 16 bits.
    Entry ``i`` is the output for a pixel whose bits read as unsigned are ``i``:
    the unused high bits are removed first (as pydicom does), so ``arr`` may
    come straight from the decoder. The transform is the one
    :func:`_to_unit_range_direct` applies, on the same dtype, so each pixel
    gets the same value; the two steps that look at the image as a whole
    (whether rescaled values are integers, for a VOI LUT Sequence, and the
    data range when there is no VOI) look at the values that occur in it.
    """
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2:
        return None
    if not arr.dtype.isnative:
        return None
    index_type = np.dtype(f"u{arr.dtype.itemsize}")
    patterns = np.arange(2 ** (8 * arr.dtype.itemsize), dtype=index_type)
    stored = patterns.view(arr.dtype)
    shift = 8 * arr.dtype.itemsize - int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 0)
    if 0 < shift < 8 * arr.dtype.itemsize:
        # pydicom's unused-bits correction: zero-fill (unsigned) or sign-extend (signed)
        stored = np.right_shift(np.left_shift(stored, shift), shift)

    occurring: npt.NDArray[np.bool_] | None = None

    def occurs() -> npt.NDArray[np.bool_]:
        """Which table entries occur in the image (one counting pass, computed once)."""
        nonlocal occurring
        if occurring is None:
            counts = np.bincount(arr.view(index_type).ravel(), minlength=patterns.size)
            occurring = counts > 0
        return occurring

    values: npt.NDArray[Any] = stored
    rescaled = _modality_lut_needed(ds)
    if rescaled:
        values = apply_modality_lut(values, ds)
        if np.issubdtype(values.dtype, np.floating) and "VOILUTSequence" in ds:
            # only a VOI LUT Sequence tells integers from floats (windows compute in float64)
            seen = values[occurs()]
            if np.array_equal(seen, np.round(seen)):
                values = values.astype(np.int64)
    if _voi_applies(ds):
        windowed, low, high = _apply_voi(ds, values)
        result = windowed.astype(np.float64)
    else:
        result = values.astype(np.float64)
        # the data range: with a monotonic modality transform (none or a rescale) the
        # smallest and largest stored values settle it, else every value that occurs
        ends = None if "ModalityLUTSequence" in ds else _range_entries(arr, stored, index_type)
        seen_values = result[ends if ends is not None else occurs()]
        low, high = float(seen_values.min()), float(seen_values.max())
    return _scale(ds, result, low, high)


def _range_entries(
    arr: npt.NDArray[Any], stored: npt.NDArray[Any], index_type: np.dtype[Any]
) -> npt.NDArray[np.intp] | None:
    """Table entries of the smallest and largest value in ``arr``, or ``None``.

    ``None`` when either has unused high bits set: then the array's extremes
    are not the extremes of the stored values.
    """
    ends = np.array([arr.min(), arr.max()], dtype=arr.dtype)
    entries = ends.view(index_type).astype(np.intp)
    return entries if np.array_equal(stored[entries], ends) else None


def _lookup(table: FloatImage, arr: npt.NDArray[Any]) -> FloatImage:
    """``table[arr]`` for a 2-D 8/16-bit integer ``arr`` (any strides), as a new contiguous array.

    Row blocks keep the index conversion NumPy makes in cache, instead of an
    ``intp`` copy of the whole image.
    """
    index = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    out = np.empty(index.shape, dtype=np.float32)
    step = max(1, _LOOKUP_BLOCK // max(1, index.shape[1]))
    for row in range(0, index.shape[0], step):
        np.take(table, index[row : row + step], out=out[row : row + step], mode="clip")
    return out


# --------------------------------------------------------------------------- #
# Regions
# --------------------------------------------------------------------------- #
def otsu_threshold(values: npt.ArrayLike, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (the level that best separates two classes)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return low
    hist, edges = np.histogram(data, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _largest_component_box(
    mask: npt.NDArray[np.bool_], stride: int, shape: tuple[int, int]
) -> Box | None:
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < _MIN_BREAST_FRACTION * mask.size:
        return None
    rows, cols = np.nonzero(labels == best)
    top, left = int(rows.min()) * stride, int(cols.min()) * stride
    bottom = min(shape[0], (int(rows.max()) + 1) * stride)
    right = min(shape[1], (int(cols.max()) + 1) * stride)
    return top, left, bottom, right


def _stride(shape: tuple[int, ...]) -> int:
    """Step of the reduced copy that breast and image-area finding run on."""
    return max(1, math.ceil(max(shape) / _MASK_LONG_SIDE))


def _small(image: FloatImage) -> tuple[FloatImage, int]:
    stride = _stride(image.shape)
    return image[::stride, ::stride], stride


def _otsu_mask(small: FloatImage) -> npt.NDArray[np.bool_]:
    smooth = ndimage.uniform_filter(small, size=5)
    return np.asarray(smooth > otsu_threshold(smooth))


def breast_mask(image: FloatImage) -> tuple[npt.NDArray[np.bool_], int]:
    """Otsu foreground of a reduced copy of ``image`` and the reduction stride."""
    small, stride = _small(image)
    return _otsu_mask(small), stride


def breast_box(image: FloatImage) -> Box:
    """Bounding box of the breast: the largest Otsu component; the whole image if none."""
    mask, stride = breast_mask(image)
    return _box_from_mask(mask, stride, (int(image.shape[0]), int(image.shape[1])))


def _box_from_mask(mask: npt.NDArray[np.bool_], stride: int, shape: tuple[int, int]) -> Box:
    box = _largest_component_box(mask, stride, shape) if mask.any() and not mask.all() else None
    return box if box is not None else (0, 0, shape[0], shape[1])


def chest_wall_side(image: FloatImage) -> Literal["left", "right"] | None:
    """Which image edge the breast leans on, or ``None`` when the image is not decisive."""
    mask, _ = breast_mask(image)
    return _side_from_mask(mask)


def _side_from_mask(mask: npt.NDArray[np.bool_]) -> Literal["left", "right"] | None:
    half = mask.shape[1] // 2
    left, right = float(mask[:, :half].sum()), float(mask[:, mask.shape[1] - half :].sum())
    total = left + right
    if total == 0 or abs(left - right) / total < _SIDE_MARGIN:
        return None
    return "left" if left > right else "right"


def ultrasound_box(image: FloatImage) -> Box:
    """Bounding box of the non-black image area; the whole image if there is none."""
    small, stride = _small(image)
    return _image_area_box(small, stride, (int(image.shape[0]), int(image.shape[1])))


def _image_area_box(small: FloatImage, stride: int, shape: tuple[int, int]) -> Box:
    # opening removes isolated noise pixels without moving the area's edges
    mask = ndimage.binary_opening(small > _US_BLACK, structure=np.ones((3, 3), dtype=bool))
    box = _largest_component_box(mask, stride, shape) if mask.any() else None
    return box if box is not None else (0, 0, shape[0], shape[1])


def clahe(
    image: FloatImage, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)
) -> FloatImage:
    """Contrast-limited adaptive histogram equalisation of a ``[0, 1]`` image.

    Each tile's histogram (256 bins) is clipped at ``clip_limit`` times the mean
    bin count, the excess spread evenly, and the tiles' equalisation curves
    blended bilinearly between tile centres. Returns ``float32`` in ``[0, 1]``.
    """
    bins = 256
    rows, cols = image.shape
    ty, tx = min(tiles[0], rows), min(tiles[1], cols)
    th, tw = math.ceil(rows / ty), math.ceil(cols / tx)
    levels = np.clip(np.rint(image * (bins - 1)), 0, bins - 1).astype(np.intp)
    padded = np.pad(levels, ((0, ty * th - rows), (0, tx * tw - cols)), mode="reflect")
    blocks = padded.reshape(ty, th, tx, tw).transpose(0, 2, 1, 3).reshape(ty * tx, th * tw)
    offsets = (np.arange(ty * tx) * bins)[:, None]
    hist = np.bincount((blocks + offsets).ravel(), minlength=ty * tx * bins).reshape(ty * tx, bins)
    limit = max(1.0, clip_limit * th * tw / bins)
    clipped = np.minimum(hist, limit)
    clipped += (hist.sum(axis=1, keepdims=True) - clipped.sum(axis=1, keepdims=True)) / bins
    cdf = np.cumsum(clipped, axis=1)
    curves = (cdf / cdf[:, -1:]).reshape(ty, tx, bins)

    def grid(
        n: int, size: int, count: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        pos = np.clip((np.arange(n) + 0.5) / size - 0.5, 0, count - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, count - 1), pos - lo

    y0, y1, wy = grid(rows, th, ty)
    x0, x1, wx = grid(cols, tw, tx)
    wy2, wx2 = wy[:, None], wx[None, :]
    top = (
        curves[y0[:, None], x0[None, :], levels] * (1 - wx2)
        + curves[y0[:, None], x1[None, :], levels] * wx2
    )
    bottom = (
        curves[y1[:, None], x0[None, :], levels] * (1 - wx2)
        + curves[y1[:, None], x1[None, :], levels] * wx2
    )
    return np.asarray(np.clip(top * (1 - wy2) + bottom * wy2, 0.0, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------- #
# Resize
# --------------------------------------------------------------------------- #
def resize_and_pad(
    image: FloatImage, height: int, width: int
) -> tuple[FloatImage, tuple[int, int], tuple[int, int]]:
    """Resize keeping the aspect ratio to fit ``height x width``, pad with zeros.

    The image sits at the top-left corner. Returns ``(output, resized_shape, pad)``
    where ``pad = (top, left)`` is always ``(0, 0)`` here but is recorded so that
    :class:`Geometry` does not depend on that choice. Antialiased bilinear.
    """
    rows, cols = image.shape
    scale = min(height / rows, width / cols)
    new_rows = min(height, max(1, round(rows * scale)))
    new_cols = min(width, max(1, round(cols * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if (new_rows, new_cols) != (rows, cols):
        tensor = F.interpolate(
            tensor, size=(new_rows, new_cols), mode="bilinear", align_corners=False, antialias=True
        )
    out = np.zeros((height, width), dtype=np.float32)
    out[:new_rows, :new_cols] = tensor[0, 0].numpy()
    return out, (new_rows, new_cols), (0, 0)


# --------------------------------------------------------------------------- #
# The whole step
# --------------------------------------------------------------------------- #
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
    """A ``[0, 1]`` image as stored integers and a table (:func:`_unit_table`).

    Only the pixels asked for are converted: the reduced copy for breast
    finding and the crop, which comes out flipped and contiguous in the same
    gather, ready for resizing.
    """

    def __init__(self, stored: npt.NDArray[Any], table: FloatImage) -> None:
        self.stored = stored
        self.table = table
        self.shape = (int(stored.shape[0]), int(stored.shape[1]))

    def strided(self, stride: int) -> FloatImage:
        return _lookup(self.table, self.stored[::stride, ::stride])

    def region(self, box: Box, flipped: bool) -> FloatImage:
        top, left, bottom, right = box
        region = self.stored[top:bottom, left:right]
        return _lookup(self.table, region[:, ::-1] if flipped else region)


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
    stride = _stride(pixels.shape)
    small = pixels.strided(stride)
    if modality == "MG":
        mask = _otsu_mask(small)  # one mask for the box and the side
        box = _box_from_mask(mask, stride, pixels.shape) if opts.crop else whole
        side = _side_from_mask(mask)
        if laterality is None and side is not None:
            # standard display: a left breast leans on the left edge
            laterality, source = ("L" if side == "left" else "R"), "image"
        if opts.canonical_flip:
            flipped = side == "right" if side is not None else laterality == "R"
    else:
        box = _image_area_box(small, stride, pixels.shape) if opts.crop else whole

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


def fit_longest_side(image: FloatImage, longest_side: int) -> FloatImage:
    """``image`` scaled (antialiased bilinear) so its longest side is ``longest_side``.

    ``0``, or a size at least the image's, returns it unchanged.
    """
    rows, cols = image.shape
    if longest_side <= 0 or max(rows, cols) <= longest_side:
        return image
    scale = longest_side / max(rows, cols)
    size = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return np.asarray(resized[0, 0].numpy(), dtype=np.float32)


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
    stored = _decode(ds, stored_bits_only=False)
    laterality, source = laterality_from_tags(ds)
    table = _unit_table(ds, stored) if min(stored.shape[:2]) >= 1 else None
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
