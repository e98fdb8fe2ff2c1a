"""Grad-CAM arithmetic, outlines, regions, and back-projection through the engine."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from node.config import InferenceSettings
from node.imaging.geometry import Geometry
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.inference.explain import combine_cams, extract_regions, grad_cam, outline
from tests.helpers.images import breast_phantom, mg_dataset, write_dataset
from tests.helpers.models import bright_spot_state, write_random_model_folder


def inside(polygon: np.ndarray, x: float, y: float) -> bool:
    """Even-odd rule point-in-polygon test (polygon closed, first point repeated)."""
    result = False
    for (x0, y0), (x1, y1) in pairwise(polygon):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            result = not result
    return result


def identity_geometry(rows: int, cols: int) -> Geometry:
    return Geometry((rows, cols), (0, 0, rows, cols), False, (rows, cols), (0, 0), (rows, cols))


def test_grad_cam_of_a_linear_head_is_the_weighted_feature_sum() -> None:
    features = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[0.0, 3.0], [0.0, 0.0]]]]).requires_grad_(
        True
    )
    weights = torch.tensor([2.0, -1.0])
    score = (features.mean(dim=(2, 3)) * weights).sum(dim=1)
    cam = grad_cam(features, score)
    # alpha = weights / 4; relu(0.5 * A0 - 0.25 * A1)
    expected = torch.tensor([[[0.5, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(cam, expected)


def test_combine_cams_scales_weights_and_masks_padding() -> None:
    a = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    b = torch.tensor([[[4.0, 0.0], [0.0, 0.0]]])
    out = combine_cams([a, b], [3.0, 1.0], (2, 2))
    np.testing.assert_allclose(out[0], [[0.25, 0.75], [0.0, 0.0]])
    masked = combine_cams([a, b], [3.0, 1.0], (2, 2), valid=[(0, 0, 2, 1)])
    # member a has nothing left inside the valid area, so it adds nothing
    np.testing.assert_allclose(masked[0], [[0.25, 0.0], [0.0, 0.0]])


def test_outline_of_simple_shapes() -> None:
    square = np.zeros((5, 5), dtype=bool)
    square[1:3, 2:4] = True
    assert outline(square) == [(2, 1), (4, 1), (4, 3), (2, 3), (2, 1)]
    ell = np.zeros((4, 4), dtype=bool)
    ell[0:3, 0] = True
    ell[2, 0:3] = True
    assert outline(ell) == [(0, 0), (1, 0), (1, 2), (3, 2), (3, 3), (0, 3), (0, 0)]


@pytest.mark.parametrize("seed", range(6))
def test_outline_contains_exactly_the_component(seed: int) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((24, 24)) > 0.45)
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    component = labels == int(np.argmax(sizes)) + 1
    filled = ndimage.binary_fill_holes(component)
    polygon = np.asarray(outline(component), dtype=float)
    for r in range(24):
        for c in range(24):
            assert inside(polygon, c + 0.5, r + 0.5) == filled[r, c], (r, c)


def test_regions_sorted_by_peak_in_original_coordinates() -> None:
    heatmap = np.zeros((32, 32), dtype=np.float32)
    heatmap[4:8, 4:8] = 0.6
    heatmap[20:28, 16:24] = 1.0
    heatmap[22, 18] = 1.0
    geometry = Geometry((64, 64), (0, 0, 64, 64), True, (32, 32), (0, 0), (32, 32))  # 2x, mirrored
    regions = extract_regions(heatmap, geometry, threshold=0.5, cell=1)
    assert [round(r.peak, 3) for r in regions] == [1.0, 0.6]
    big, small = (np.asarray(r.polygon) for r in regions)
    # model columns 16..24 at 2x, mirrored in a 64-wide crop: original columns 16..32
    assert big[:, 0].min() == 16 and big[:, 0].max() == 32
    assert big[:, 1].min() == 40 and big[:, 1].max() == 56
    assert regions[0].area == pytest.approx(16 * 16)
    assert small[:, 0].min() == 48 and small[:, 0].max() == 56
    assert extract_regions(heatmap, geometry, max_regions=1) == regions[:1]
    assert extract_regions(np.zeros((8, 8), dtype=np.float32), identity_geometry(8, 8)) == ()


@pytest.mark.parametrize(("side", "laterality"), [("left", "L"), ("right", "R")])
def test_cam_lands_on_the_bright_spot_in_original_coordinates(
    tmp_path: Path, side: str, laterality: str
) -> None:
    folder = write_random_model_folder(
        tmp_path / "model", height=256, width=128, states={"m0": bright_spot_state()}
    )
    engine = InferenceEngine.load(folder, InferenceSettings(tta="none", cam_threshold=0.5))
    row, col = 130, 30 if side == "left" else 150 - 30
    image = breast_phantom(rows=260, cols=150, side=side, spot=(row, col), spot_radius=8)
    path = write_dataset(mg_dataset(image, laterality=laterality), tmp_path / "image.dcm")
    (result,) = engine.infer_studies([StudyInput("1.2.3", (ImageInput(path, "1.2.3.4"),))])
    image_result = result.images[0]
    assert image_result.geometry.flipped is (side == "right")
    assert image_result.probability > 0.5  # the detector fires

    heat = image_result.heatmap_original()
    assert heat is not None and heat.shape == image.shape
    # the map is one feature cell (32 model pixels) coarse
    cell = 32 / min(image_result.geometry.scale)
    assert heat[row, col] >= 0.99 * heat.max()
    assert heat[20, 75 if side == "left" else 5] == 0.0  # outside the breast box
    tops = np.argwhere(heat >= 0.99 * heat.max())
    # the top is at most one cell from the spot, or one and a half at a border cell
    assert np.abs(tops - [row, col]).max() <= 1.5 * cell

    region = image_result.regions[0]
    assert inside(np.asarray(region.polygon), col + 0.5, row + 0.5)
    assert (
        abs(region.peak_point[0] - col) <= cell / 2 and abs(region.peak_point[1] - row) <= cell / 2
    )
    assert region.peak == pytest.approx(1.0)
