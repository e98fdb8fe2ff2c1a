"""Grad-CAM localisation criteria: inside the mask, or near a calcification cluster's hull."""

from __future__ import annotations

import numpy as np

from node.imaging.geometry import Geometry
from training.localisation import cam_hit, criterion, is_calcification


def _identity(rows: int, cols: int) -> Geometry:
    return Geometry(
        original_shape=(rows, cols),
        crop=(0, 0, rows, cols),
        flipped=False,
        resized_shape=(rows, cols),
        pad=(0, 0),
        input_shape=(rows, cols),
    )


def _peak_at(rows: int, cols: int, row: int, col: int) -> np.ndarray:
    heat = np.zeros((rows, cols), dtype=np.float32)
    heat[row, col] = 1.0
    return heat


def test_masses_need_the_peak_inside_the_mask() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[40:60, 40:60] = True
    geometry = _identity(100, 100)
    assert cam_hit(_peak_at(100, 100, 50, 50), geometry, mask, "spiculated_mass")
    assert not cam_hit(_peak_at(100, 100, 50, 62), geometry, mask, "spiculated_mass")
    assert criterion("architectural_distortion") == "peak inside the lesion mask"


def test_calcifications_count_the_cluster_hull_and_a_margin() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    for r, c in ((30, 30), (30, 60), (60, 30), (60, 60), (45, 44)):  # specks of a cluster
        mask[r, c] = True
    geometry = _identity(100, 100)
    between = _peak_at(100, 100, 50, 50)  # between the specks, on none of them
    assert not mask[50, 50]
    assert cam_hit(between, geometry, mask, "pleomorphic_calcifications")
    # 9 pixels right of the hull's edge (x 60.5 -> 69.5): 4.5 mm at 0.5 mm pixels (within
    # the 5 mm margin), 9 mm at 1 mm pixels (outside it)
    outside = _peak_at(100, 100, 45, 69)
    assert cam_hit(outside, geometry, mask, "pleomorphic_calcifications", spacing_mm=0.5)
    assert not cam_hit(outside, geometry, mask, "pleomorphic_calcifications", spacing_mm=1.0)
    assert not cam_hit(outside, geometry, mask, "pleomorphic_calcifications")  # no spacing
    assert is_calcification("calcification") and not is_calcification("calcification+mass")
    assert "convex hull" in criterion("round_calcifications")
