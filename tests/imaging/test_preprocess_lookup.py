"""The table road of preprocessing gives what the direct ``float64`` evaluation gives.

:func:`preprocess_dataset` converts stored values to ``[0, 1]`` through a table
(:func:`node.imaging.pixels.unit_table`) and only for the pixels it needs;
:func:`to_unit_range` uses the same table. Both are checked here against a copy of
the straightforward implementation they replaced (``ds.pixel_array``, the Modality
and VOI transforms in ``float64`` on the whole image, then crop and resize), for
every photometric interpretation, rescale, window function, VOI and Modality LUT
Sequence, signed data and stray bits above Bits Stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from node.errors import InferenceError
from node.imaging.dataset import laterality_from_tags
from node.imaging.pixels import decode, to_unit_range
from node.imaging.preprocess import PreprocessOptions, preprocess_array, preprocess_dataset
from tests.helpers.images import breast_phantom, mg_dataset, write_dataset

OPTIONS = PreprocessOptions(height=128, width=64)
ATOL = 1e-6


def reference_unit_range(ds: Dataset) -> npt.NDArray[np.float32]:
    """The implementation before the table, kept verbatim as the reference."""
    arr = ds.pixel_array
    values: npt.NDArray[Any] = arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds or slope != 1.0 or intercept != 0.0:
        values = apply_modality_lut(values, ds)
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        windowed = apply_voi_lut(values, ds, index=0)
        probe = np.array([-(2**31), 2**31 - 1], dtype=np.int64)
        with np.errstate(over="ignore"):
            ends = apply_voi_lut(probe, ds, index=0).astype(np.float64)
        low, high = float(ends.min()), float(ends.max())
        result = windowed.astype(np.float64)
    else:
        result = values.astype(np.float64)
        low, high = float(result.min()), float(result.max())
    if high <= low:
        scaled = np.zeros(result.shape, dtype=np.float32)
    else:
        scaled = np.clip((result - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def textured(side: str = "right", seed: int = 0) -> npt.NDArray[np.float32]:
    """A breast phantom with noise, so that many stored values occur."""
    image = breast_phantom(rows=240, cols=150, side=side, spot=(100, 60), spot_radius=5)
    noise = np.random.default_rng(seed).normal(0, 0.05, image.shape)
    return np.clip(image + noise * (image > 0), 0, 1).astype(np.float32)


def voi_lut_item(entries: int = 4096, first: int = 0, bits: int = 16) -> Dataset:
    lut = np.sqrt(np.arange(entries) / (entries - 1.0)) * (2**bits - 1)
    item = Dataset()
    item.LUTDescriptor = [entries, first, bits]
    item.LUTData = lut.astype(np.uint16).tolist()
    return item


def dataset(case: str, photometric: str) -> Dataset:
    """A 12-bit mammogram with the transforms of ``case``."""
    ds = mg_dataset(textured(), laterality="R", photometric=photometric)
    stored = ds.pixel_array.astype(np.int64)
    if case == "none":
        pass
    elif case == "linear":
        ds.WindowCenter, ds.WindowWidth = [1700, 1500], [1801, 900]
    elif case == "linear_exact":
        ds.update({"WindowCenter": 1500, "WindowWidth": 2200.5, "VOILUTFunction": "LINEAR_EXACT"})
    elif case == "sigmoid":
        ds.update({"WindowCenter": 1600, "WindowWidth": 900, "VOILUTFunction": "SIGMOID"})
    elif case == "voi_lut":
        ds.VOILUTSequence = [voi_lut_item(3000, first=200)]
    elif case == "rescale_linear":
        ds.update({"RescaleSlope": 2, "RescaleIntercept": -100})
        ds.update({"WindowCenter": 3000, "WindowWidth": 4001})
    elif case == "rescale_fraction_voi_lut":
        # rescaled values are not integers: the VOI LUT sees floats, as before
        ds.update({"RescaleSlope": 0.5, "RescaleIntercept": 0.25})
        ds.VOILUTSequence = [voi_lut_item(2048)]
    elif case == "rescale_integers_voi_lut":
        ds.update({"RescaleSlope": 1, "RescaleIntercept": -50})
        ds.VOILUTSequence = [voi_lut_item(4096, first=-50)]
    elif case == "rescale_negative_no_voi":
        ds.update({"RescaleSlope": -1.5, "RescaleIntercept": 10})
    elif case == "modality_lut":
        item = voi_lut_item(4096, bits=16)
        ds.ModalityLUTSequence = [item]
        ds.update({"WindowCenter": 30000, "WindowWidth": 40000})
    elif case == "modality_lut_no_voi":
        ds.ModalityLUTSequence = [voi_lut_item(4096, bits=16)]
    elif case == "stray_high_bits":
        # values above Bits Stored: pydicom clears them; so must the table
        junk = stored.copy()
        junk[::7, ::5] |= 0xA000
        ds.PixelData = junk.astype(np.uint16).tobytes()
        ds.WindowCenter, ds.WindowWidth = 1700, 1801
    elif case == "stray_high_bits_no_voi":
        # on the darkest stored values only, so the array's maximum is not the data's
        junk = stored.copy()
        low = junk <= np.percentile(junk, 30)
        junk[low] |= 0x5000
        ds.PixelData = junk.astype(np.uint16).tobytes()
    elif case in ("signed", "signed_no_voi", "signed_unextended"):
        signed = stored - 2048  # -2048 .. 2047 in 12 bits
        ds.PixelRepresentation = 1
        if case == "signed_unextended":
            # two's complement in 12 bits, the 4 bits above left clear
            ds.PixelData = (signed & 0x0FFF).astype(np.uint16).tobytes()
        else:
            ds.PixelData = signed.astype(np.int16).tobytes()
        if case != "signed_no_voi":
            ds.update({"RescaleSlope": 1, "RescaleIntercept": 1024})
            ds.update({"WindowCenter": 600, "WindowWidth": 2500})
    elif case == "flat":
        ds.PixelData = np.full(stored.shape, 1000, dtype=np.uint16).tobytes()
    else:
        raise AssertionError(case)
    return ds


def eight_bit(photometric: str) -> Dataset:
    ds = mg_dataset(textured(side="left"), photometric=photometric, bits=8)
    stored = ds.pixel_array.astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = stored.tobytes()
    ds.WindowCenter, ds.WindowWidth = 120, 200
    return ds


CASES = [
    "none",
    "linear",
    "linear_exact",
    "sigmoid",
    "voi_lut",
    "rescale_linear",
    "rescale_fraction_voi_lut",
    "rescale_integers_voi_lut",
    "rescale_negative_no_voi",
    "modality_lut",
    "modality_lut_no_voi",
    "stray_high_bits",
    "stray_high_bits_no_voi",
    "signed",
    "signed_no_voi",
    "signed_unextended",
    "flat",
]


@pytest.mark.filterwarnings("ignore:Applying a VOI LUT on a float input")
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("case", CASES)
def test_table_matches_the_direct_float64_transform(case: str, photometric: str) -> None:
    ds = dataset(case, photometric)
    expected = reference_unit_range(ds)
    assert expected.max() > expected.min() or case == "flat"
    np.testing.assert_allclose(to_unit_range(ds, decode(ds)), expected, rtol=0, atol=ATOL)

    # the whole step: the table road against the reference image through preprocess_array
    laterality, source = laterality_from_tags(ds)
    want = preprocess_array(expected, "MG", laterality, OPTIONS, laterality_source=source)
    got = preprocess_dataset(ds, OPTIONS)
    assert got.geometry == want.geometry
    assert (got.laterality, got.laterality_source) == (want.laterality, want.laterality_source)
    np.testing.assert_allclose(got.image, want.image, rtol=0, atol=ATOL)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_eight_bit_data_goes_through_the_table_too(photometric: str) -> None:
    ds = eight_bit(photometric)
    expected = reference_unit_range(ds)
    np.testing.assert_allclose(to_unit_range(ds, decode(ds)), expected, rtol=0, atol=ATOL)
    want = preprocess_array(expected, "MG", "L", OPTIONS, laterality_source="ImageLaterality")
    got = preprocess_dataset(ds, OPTIONS)
    assert got.geometry == want.geometry
    np.testing.assert_allclose(got.image, want.image, rtol=0, atol=ATOL)


def test_thirty_two_bit_data_takes_the_direct_road() -> None:
    ds = mg_dataset(textured(), laterality="R", WindowCenter=1700, WindowWidth=1801)
    stored = ds.pixel_array.astype(np.uint32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 12, 11
    ds.PixelData = stored.tobytes()
    expected = reference_unit_range(ds)
    np.testing.assert_allclose(to_unit_range(ds, decode(ds)), expected, rtol=0, atol=ATOL)
    want = preprocess_array(expected, "MG", "R", OPTIONS, laterality_source="ImageLaterality")
    np.testing.assert_allclose(preprocess_dataset(ds, OPTIONS).image, want.image, atol=ATOL)


@pytest.mark.parametrize("syntax", ["j2k", "jpegls", "rle"])
def test_compressed_files_match_the_reference(tmp_path: Path, syntax: str) -> None:
    ds = dataset("linear", "MONOCHROME1")
    path = write_dataset(ds, tmp_path / "packed.dcm", syntax)
    packed = pydicom.dcmread(path)
    expected = reference_unit_range(packed)
    want = preprocess_array(expected, "MG", "R", OPTIONS, laterality_source="ImageLaterality")
    got = preprocess_dataset(pydicom.dcmread(path), OPTIONS)
    assert got.geometry == want.geometry
    np.testing.assert_allclose(got.image, want.image, rtol=0, atol=ATOL)


def test_decode_returns_a_writeable_array_of_the_stored_values() -> None:
    ds = dataset("stray_high_bits", "MONOCHROME2")
    arr = decode(ds)
    assert arr.flags.writeable
    assert int(arr.max()) < 2**12
    np.testing.assert_array_equal(arr, ds.pixel_array)


def test_invalid_window_is_still_a_clear_error() -> None:
    ds = dataset("none", "MONOCHROME2")
    ds.update({"WindowCenter": 1000, "WindowWidth": 0})
    with pytest.raises(InferenceError, match="invalid VOI LUT or window"):
        preprocess_dataset(ds, OPTIONS)
    with pytest.raises(InferenceError, match="invalid VOI LUT or window"):
        to_unit_range(ds, decode(ds))
