"""Preprocessing: pixel transforms, breast finding, flips and the exact geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from scipy import ndimage

from node.errors import InferenceError
from node.imaging.breast import breast_box, otsu_threshold, ultrasound_box
from node.imaging.dataset import laterality_from_tags
from node.imaging.geometry import Geometry
from node.imaging.pixels import decode, to_unit_range
from node.imaging.preprocess import PreprocessOptions, preprocess_array, preprocess_dataset
from node.imaging.transforms import clahe
from tests.helpers.images import breast_phantom, mg_dataset, write_dataset

OPTIONS = PreprocessOptions(height=256, width=128)


def ramp(rows: int = 16, cols: int = 256) -> np.ndarray:
    return np.tile(np.linspace(0, 1, cols, dtype=np.float32), (rows, 1))


# --------------------------------------------------------------------------- pixels
def test_monochrome1_is_inverted_to_match_monochrome2() -> None:
    image = breast_phantom(spot=(100, 30), spot_radius=3)
    mono2 = mg_dataset(image, photometric="MONOCHROME2")
    mono1 = mg_dataset(image, photometric="MONOCHROME1")
    assert not np.array_equal(mono1.pixel_array, mono2.pixel_array)
    a = to_unit_range(mono2, decode(mono2))
    b = to_unit_range(mono1, decode(mono1))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, image, atol=1 / 4095)


def test_monochrome1_window_is_applied_before_inversion() -> None:
    ds = mg_dataset(ramp(), photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1024)
    out = to_unit_range(ds, decode(ds))
    stored = ds.pixel_array.astype(np.float64)
    expected = 1 - np.clip((stored - (2048 - 0.5)) / (1024 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_linear_window() -> None:
    ds = mg_dataset(ramp(), WindowCenter=1000, WindowWidth=501)
    out = to_unit_range(ds, decode(ds))
    x = ds.pixel_array.astype(np.float64)
    expected = np.clip((x - 999.5) / 500 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() == 0 and out.max() == 1


def test_sigmoid_window() -> None:
    ds = mg_dataset(ramp(), WindowCenter=2000, WindowWidth=800, VOILUTFunction="SIGMOID")
    out = to_unit_range(ds, decode(ds))
    x = ds.pixel_array.astype(np.float64)
    expected = 1 / (1 + np.exp(-4 * (x - 2000) / 800))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_voi_lut_sequence_is_applied_to_the_integer_data() -> None:
    ds = mg_dataset(ramp())
    lut = np.sqrt(np.arange(4096) / 4095.0) * 65535
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.astype(np.uint16).tolist()
    ds.VOILUTSequence = [item]
    out = to_unit_range(ds, decode(ds))
    table = lut.astype(np.uint16).astype(np.float64)
    expected = (table[ds.pixel_array] - table.min()) / (table.max() - table.min())
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_modality_lut_only_when_not_identity_and_before_the_window() -> None:
    ds = mg_dataset(
        ramp(), RescaleSlope=2, RescaleIntercept=-100, WindowCenter=3000, WindowWidth=2001
    )
    out = to_unit_range(ds, decode(ds))
    x = ds.pixel_array.astype(np.float64) * 2 - 100
    expected = np.clip((x - 2999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("syntax", ["j2k", "jpegls", "rle"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_compressed_inputs_decode_to_the_same_model_input(
    tmp_path: Path, syntax: str, photometric: str
) -> None:
    image = breast_phantom(side="right", spot=(80, 90), spot_radius=4)
    plain = write_dataset(
        mg_dataset(image, laterality="R", photometric=photometric), tmp_path / "plain.dcm"
    )
    packed = write_dataset(
        mg_dataset(image, laterality="R", photometric=photometric), tmp_path / "packed.dcm", syntax
    )
    ds = pydicom.dcmread(packed)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    a = preprocess_dataset(pydicom.dcmread(plain), OPTIONS)
    b = preprocess_dataset(ds, OPTIONS)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.geometry == b.geometry
    assert b.laterality == "R" and b.geometry.flipped


def test_missing_pixels_multiframe_and_modality_are_clear_errors() -> None:
    ds = mg_dataset(ramp())
    del ds.PixelData
    with pytest.raises(InferenceError, match="no pixel data"):
        decode(ds)
    ds = mg_dataset(ramp(), NumberOfFrames=2)
    with pytest.raises(InferenceError, match="multi-frame"):
        decode(ds)
    with pytest.raises(InferenceError, match="unsupported modality 'CT'"):
        preprocess_dataset(mg_dataset(ramp(), modality="CT"))
    broken = mg_dataset(ramp())
    broken.PixelData = broken.PixelData[:100]
    with pytest.raises(InferenceError, match="cannot decode pixel data"):
        decode(broken)


def test_pixel_data_longer_than_the_header_says_is_refused_not_read_as_colour() -> None:
    """Rows and Columns of 3 over a larger image's Pixel Data (found by the fuzz): pydicom
    returns the excess as frames of 3 x 3, shaped like the rows of an RGB image."""
    shrunk = mg_dataset(ramp())
    shrunk.Rows, shrunk.Columns = 3, 3
    with (
        pytest.warns(UserWarning, match="extra frames"),
        pytest.raises(InferenceError, match="not the header's 3 x 3 x 1"),
    ):
        decode(shrunk)


# --------------------------------------------------------------------------- laterality
def test_laterality_tags_in_order_of_preference() -> None:
    ds = mg_dataset(ramp(), laterality="R", Laterality="L")
    assert laterality_from_tags(ds) == ("R", "ImageLaterality")
    del ds.ImageLaterality
    assert laterality_from_tags(ds) == ("L", "Laterality")
    del ds.Laterality
    assert laterality_from_tags(ds) == (None, "none")
    ds.ImageLaterality = "B"  # both breasts: not a side
    assert laterality_from_tags(ds) == (None, "none")


@pytest.mark.parametrize(
    ("side", "laterality", "flipped"), [("left", "L", False), ("right", "R", True)]
)
def test_laterality_inferred_from_the_breast_position(
    side: str, laterality: str, flipped: bool
) -> None:
    ds = mg_dataset(breast_phantom(side=side), laterality=None)
    result = preprocess_dataset(ds, OPTIONS)
    assert (result.laterality, result.laterality_source) == (laterality, "image")
    assert result.geometry.flipped is flipped
    # canonical: the breast leans on the left edge of the model input
    columns = result.image.sum(axis=0)
    assert columns[: OPTIONS.width // 4].sum() > columns[-OPTIONS.width // 4 :].sum()


def test_flip_follows_the_tag_when_the_image_is_not_decisive() -> None:
    flat = np.full((64, 64), 0.5, dtype=np.float32)
    assert preprocess_array(flat, "MG", "R", OPTIONS).geometry.flipped
    assert not preprocess_array(flat, "MG", "L", OPTIONS).geometry.flipped
    unknown = preprocess_array(flat, "MG", None, OPTIONS)
    assert (unknown.laterality, unknown.laterality_source) == ("U", "none")


# --------------------------------------------------------------------------- regions
def test_breast_box_finds_the_breast_and_ignores_a_small_marker() -> None:
    image = breast_phantom(rows=200, cols=120, side="left")
    image[5:12, 100:115] = 1.0  # a burnt-in marker
    top, left, bottom, right = breast_box(image)
    rows, cols = np.nonzero(breast_phantom(rows=200, cols=120, side="left"))
    assert left == 0 and abs(top - rows.min()) <= 1 and abs(bottom - rows.max() - 1) <= 1
    assert abs(right - cols.max() - 1) <= 1


def test_breast_box_keeps_the_breast_when_the_pectoral_muscle_is_brightest() -> None:
    # an MLO whose pectoral muscle is far brighter than the breast tissue: background,
    # tissue and muscle in the proportions of a synthetic MLO that cropped to the muscle
    rows, cols = 512, 416
    y, x = np.mgrid[0:rows, 0:cols]
    breast = ((y - 256) / 250.0) ** 2 + (x / 300.0) ** 2 <= 1.0
    muscle = breast & (x < 150 - 0.55 * y)
    texture = ndimage.gaussian_filter(np.random.default_rng(0).random((rows, cols)), 8)
    texture = (texture - texture.min()) / np.ptp(texture)
    image = np.full((rows, cols), 0.01, dtype=np.float32)
    image[breast] = (0.15 + 0.35 * texture)[breast]
    image[muscle] = 0.9
    assert otsu_threshold(image) > 0.4  # two classes: the muscle against everything else
    top, left, bottom, right = breast_box(image)
    breast_rows, breast_cols = np.nonzero(breast)
    assert left == 0 and abs(top - breast_rows.min()) <= 2
    assert abs(bottom - breast_rows.max() - 1) <= 2 and abs(right - breast_cols.max() - 1) <= 2


def test_every_synthetic_lesion_and_the_whole_breast_stay_inside_the_crop(synthetic) -> None:  # type: ignore[no-untyped-def]
    # seed 4: the right MLO of the second study has a bright pectoral muscle and a cancer
    # low in the breast, which a crop to the muscle would cut away
    from training.datasets import load_dataset

    samples = load_dataset("synthetic", synthetic(studies=2, seed=4))
    for sample in samples:
        ds = pydicom.dcmread(sample.path)
        unit = to_unit_range(ds, decode(ds))
        geometry = preprocess_dataset(ds, OPTIONS).geometry
        top, left, bottom, right = geometry.crop
        inside = np.zeros(unit.shape, dtype=bool)
        inside[top:bottom, left:right] = True
        tissue = unit > 0.1  # the breast; the crop may shave the faint skin line
        assert (tissue & inside).sum() >= 0.97 * tissue.sum(), sample.path
        for x0, y0, x1, y1 in sample.boxes:
            assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, sample.path


def test_breast_box_falls_back_to_the_whole_image() -> None:
    assert breast_box(np.zeros((50, 40), dtype=np.float32)) == (0, 0, 50, 40)
    assert breast_box(np.full((50, 40), 0.7, dtype=np.float32)) == (0, 0, 50, 40)


def test_otsu_separates_two_levels() -> None:
    values = np.concatenate([np.full(100, 0.2), np.full(300, 0.8)])
    assert 0.2 <= otsu_threshold(values) < 0.8


def test_ultrasound_crop_to_the_image_area_and_no_flip() -> None:
    image = np.zeros((120, 160), dtype=np.float32)
    rng = np.random.default_rng(0)
    image[20:100, 30:140] = rng.uniform(0.2, 0.8, size=(80, 110))
    assert ultrasound_box(image) == (20, 30, 100, 140)
    result = preprocess_array(image, "US", None, OPTIONS)
    assert result.geometry.crop == (20, 30, 100, 140)
    assert not result.geometry.flipped and result.laterality == "U"


def test_clahe_with_one_tile_and_no_limit_is_histogram_equalisation() -> None:
    rng = np.random.default_rng(1)
    image = rng.beta(2, 5, size=(64, 64)).astype(np.float32)
    levels = np.rint(image * 255).astype(int)
    cdf = np.cumsum(np.bincount(levels.ravel(), minlength=256)) / levels.size
    out = clahe(image, clip_limit=1e6, tiles=(1, 1))
    np.testing.assert_allclose(out, cdf[levels], atol=1e-6)


def test_clahe_raises_local_contrast_and_keeps_the_range() -> None:
    image = (0.4 + 0.05 * ramp(64, 64)).astype(np.float32)
    strong = clahe(image, clip_limit=40.0, tiles=(4, 4))
    limited = clahe(image, clip_limit=2.0, tiles=(4, 4))
    assert strong.min() >= 0 and strong.max() <= 1
    assert strong.std() > 3 * image.std()
    assert image.std() < limited.std() < strong.std()  # the clip limits the gain
    flat = clahe(np.full((40, 40), 0.3, dtype=np.float32), clip_limit=2.0, tiles=(4, 4))
    assert np.ptp(flat) < 1e-6  # identical tiles blend to one curve


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(("side", "laterality"), [("left", "L"), ("right", "R")])
def test_a_marked_pixel_maps_to_the_model_and_back(side: str, laterality: str) -> None:
    row, col = 90, 25 if side == "left" else 94
    image = breast_phantom(rows=200, cols=120, side=side, spot=(row, col))
    result = preprocess_array(image, "MG", laterality, OPTIONS)
    geometry = result.geometry
    assert geometry.flipped is (side == "right")
    assert min(geometry.scale) >= 1  # up-sampled: one original pixel is at least one model pixel

    centre = np.array([[col + 0.5, row + 0.5]])
    model_point = geometry.to_model(centre)[0]
    peak_y, peak_x = np.unravel_index(int(np.argmax(result.image)), result.image.shape)
    assert abs(peak_x + 0.5 - model_point[0]) <= 1 and abs(peak_y + 0.5 - model_point[1]) <= 1

    back = geometry.to_original([[peak_x + 0.5, peak_y + 0.5]])[0]
    assert (int(back[0]), int(back[1])) == (col, row) or np.hypot(*(back - centre[0])) <= 1
    np.testing.assert_allclose(geometry.to_original(geometry.to_model(centre)), centre, atol=1e-9)

    heatmap = np.zeros(OPTIONS.height * OPTIONS.width, dtype=np.float32).reshape(
        OPTIONS.height, OPTIONS.width
    )
    heatmap[peak_y, peak_x] = 1.0
    original = geometry.map_to_original(heatmap)
    assert original.shape == image.shape
    found = np.unravel_index(int(np.argmax(original)), original.shape)
    assert abs(found[0] - row) <= 1 and abs(found[1] - col) <= 1


def test_map_to_original_from_a_coarse_map_and_zero_outside_the_crop() -> None:
    geometry = Geometry((100, 80), (10, 20, 90, 60), True, (64, 32), (0, 0), (64, 32))
    coarse = np.zeros((4, 2), dtype=np.float32)
    coarse[:, 0] = 1.0  # left half of the model input = right side of the crop (flipped)
    out = geometry.map_to_original(coarse)
    assert out[:10].max() == 0 and out[:, :20].max() == 0 and out[:, 60:].max() == 0
    assert out[50, 59] == pytest.approx(1.0) and out[50, 20] == pytest.approx(0.0)


def test_geometry_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="not inside"):
        Geometry((10, 10), (0, 0, 11, 10), False, (5, 5), (0, 0), (5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        Geometry((10, 10), (0, 0, 10, 10), False, (6, 5), (0, 0), (5, 5))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(8, 400),
    cols=st.integers(8, 400),
    flipped=st.booleans(),
    fraction=st.floats(0.1, 1.0),
    xs=st.lists(st.floats(-50, 450), min_size=1, max_size=5),
)
def test_geometry_round_trip_is_exact(
    rows: int, cols: int, flipped: bool, fraction: float, xs: list[float]
) -> None:
    crop = (
        rows // 4,
        cols // 5,
        rows // 4 + max(1, int(rows * fraction * 0.7)),
        cols // 5 + max(1, int(cols * fraction * 0.7)),
    )
    crop = (crop[0], crop[1], min(crop[2], rows), min(crop[3], cols))
    geometry = Geometry((rows, cols), crop, flipped, (37, 23), (3, 2), (64, 32))
    points = np.array([[x, x * 0.7 + 3] for x in xs])
    np.testing.assert_allclose(
        geometry.to_original(geometry.to_model(points)), points, rtol=1e-9, atol=1e-7
    )
    np.testing.assert_allclose(
        geometry.to_model(geometry.to_original(points)), points, rtol=1e-9, atol=1e-7
    )
