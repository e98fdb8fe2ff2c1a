"""Stored pixels to values in ``[0, 1]``: decoding and the Modality and VOI transforms.

1. :func:`decode` the stored pixels with the installed codecs (JPEG 2000, JPEG-LS,
   JPEG lossless, RLE, ...); colour ultrasound stays RGB here.
2. :func:`to_unit_range`: the Modality LUT only when it is not the identity, then the
   VOI LUT or window (LINEAR, LINEAR_EXACT, SIGMOID, VOI LUT Sequence) on the integer
   data, scaled to ``[0, 1]`` by the VOI's output range; MONOCHROME1 is inverted. For
   8/16-bit greyscale data this is evaluated once per possible stored value into a
   table (:func:`unit_table`) and applied as one gather (:func:`lookup`), so that
   :mod:`node.imaging.preprocess` converts only the pixels it keeps (see
   ``bench/decode.py``).

Pure NumPy and pydicom: result objects import this module without the model runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

from node.errors import InferenceError
from node.imaging.geometry import FloatImage

__all__ = ["decode", "decode_stored", "lookup", "to_unit_range", "unit_table"]

# Pixels per block of the table lookup (the block's index copy stays in cache).
_LOOKUP_BLOCK = 1 << 16


def decode(ds: Dataset) -> npt.NDArray[Any]:
    """Decode the stored pixel data to an array of the stored values.

    Returns ``(rows, columns)`` for greyscale or ``(rows, columns, 3)`` RGB, a
    new writeable array (the dataset does not keep it). Raises
    :class:`InferenceError` for missing or undecodable pixel data and for
    multi-frame images.
    """
    return decode_stored(ds, stored_bits_only=True)


def decode_stored(ds: Dataset, *, stored_bits_only: bool) -> npt.NDArray[Any]:
    """:func:`decode`; with ``stored_bits_only=False`` unused high bits are left as stored.

    Without the unused-bits correction natively encoded pixels come back as a
    read-only view on the dataset's Pixel Data (no copy) and decoded frames
    skip two passes over the image; :func:`unit_table` applies the
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
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pydicom raises many types for codec problems
        # BaseException: a decoder written in Rust (pylibjpeg-rle) panics on some broken
        # streams with pyo3's PanicException, which derives from BaseException
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise InferenceError(f"cannot decode pixel data ({name}): {exc}") from exc
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise InferenceError(f"unsupported pixel array shape {arr.shape}")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if arr.shape[:2] != (rows, columns) or (arr.ndim == 3) != (ds.get("SamplesPerPixel") == 3):
        # e.g. more Pixel Data than Rows x Columns need: pydicom returns the excess as
        # further frames, which must not pass for the rows of a colour image
        raise InferenceError(
            f"the pixel data decodes to {'x'.join(map(str, arr.shape))}, not the header's "
            f"{rows} x {columns} x {ds.get('SamplesPerPixel')} sample(s)"
        )
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
    (:func:`unit_table`): the whole transform is evaluated once per possible
    stored value and the image becomes one gather, giving the values the
    direct ``float64`` evaluation gives, pixel for pixel.
    """
    if arr.ndim == 3:
        gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        full = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
        return np.clip(gray / full, 0.0, 1.0).astype(np.float32)
    table = unit_table(ds, arr)
    if table is not None:
        return lookup(table, arr)
    return _to_unit_range_direct(ds, arr)


def _to_unit_range_direct(ds: Dataset, arr: npt.NDArray[Any]) -> FloatImage:
    """The transform of :func:`to_unit_range` evaluated on the image itself, in ``float64``."""
    values: npt.NDArray[Any] = arr
    if _modality_lut_needed(ds):
        values = apply_modality_lut(values, ds)
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            # keep integers so a VOI LUT Sequence indexes them exactly
            values = values.astype(np.int64)
    result, window = _windowed(ds, values)
    low, high = window if window is not None else (float(result.min()), float(result.max()))
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


def _windowed(
    ds: Dataset, values: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], tuple[float, float] | None]:
    """``values`` through the VOI LUT or window, as ``float64``, and the VOI's output
    range; without a VOI, the values themselves and ``None`` (the caller finds the range)."""
    if not _voi_applies(ds):
        return values.astype(np.float64), None
    windowed, low, high = _apply_voi(ds, values)
    return windowed.astype(np.float64), (low, high)


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
    slope = _rescale_value(ds, "RescaleSlope", 1.0)
    intercept = _rescale_value(ds, "RescaleIntercept", 0.0)
    return slope != 1.0 or intercept != 0.0


def _rescale_value(ds: Dataset, keyword: str, default: float) -> float:
    """Rescale Slope or Intercept as a finite number; :class:`InferenceError` naming it."""
    try:
        raw = ds.get(keyword, default)
        value = float(raw if raw not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"invalid {keyword}: {exc}") from exc
    if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
        raise InferenceError(f"invalid {keyword} {value}")
    return value


def unit_table(ds: Dataset, arr: npt.NDArray[Any]) -> FloatImage | None:
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
    result, window = _windowed(ds, values)
    if window is not None:
        low, high = window
    else:
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


def lookup(table: FloatImage, arr: npt.NDArray[Any]) -> FloatImage:
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
