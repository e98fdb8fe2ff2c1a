"""Does a Grad-CAM map point at the lesion? One criterion per kind of lesion.

The map's peak (the arg-max of the combined map at the model input, mapped back
to original pixels through the preprocessing geometry) is compared with the
lesion's mask in original pixels:

* masses, architectural distortions and anything that is not a calcification:
  the peak lies **inside the mask**;
* calcifications (a cluster of specks, whose mask is the specks themselves):
  the peak lies inside the **convex hull of the cluster's specks** or within
  :data:`CALC_MARGIN_MM` of it (without a pixel spacing: inside the hull). A
  map cell is coarser than a speck, so "on a speck" would ask the map for a
  precision it does not have; a radiologist marks a cluster as one region.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CALC_MARGIN_MM", "cam_hit", "criterion", "is_calcification", "peak_point"]

CALC_MARGIN_MM = 5.0
"""How far outside a calcification cluster's hull a peak may lie (millimetres)."""


def is_calcification(lesion_type: str) -> bool:
    """Whether a lesion type names calcifications only (``pleomorphic_calcifications``)."""
    parts = [p for p in lesion_type.split("+") if p]
    return bool(parts) and all("calc" in p for p in parts)


def criterion(lesion_type: str) -> str:
    """The criterion used for ``lesion_type``, in words (for reports)."""
    if is_calcification(lesion_type):
        return f"peak inside the cluster's convex hull or within {CALC_MARGIN_MM:g} mm of it"
    return "peak inside the lesion mask"


def peak_point(heatmap: npt.NDArray[np.float32], geometry: Any) -> tuple[float, float]:
    """The map's peak ``(x, y)`` in original pixels."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ((x, y),) = geometry.to_original([[col + 0.5, row + 0.5]])
    return float(x), float(y)


def _hull_distance(points: npt.NDArray[np.float64], x: float, y: float) -> float:
    """Distance (pixels) from ``(x, y)`` to the convex hull of ``points``; 0 inside."""
    from scipy.spatial import ConvexHull, QhullError

    target = np.array([x, y])
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # fewer than 3 points, or all on a line
        return float(np.min(np.hypot(*(points - target).T)))
    # inside when on the inner side of every facet (a x + b y + c <= 0)
    if np.all(hull.equations[:, :2] @ target + hull.equations[:, 2] <= 1e-9):
        return 0.0
    vertices = points[hull.vertices]
    best = np.inf
    for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        ab = b - a
        t = float(np.clip(np.dot(target - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0, 1))
        best = min(best, float(np.hypot(*(a + t * ab - target))))
    return best


def cam_hit(
    heatmap: npt.NDArray[np.float32],
    geometry: Any,
    mask: npt.NDArray[np.bool_],
    lesion_type: str = "",
    spacing_mm: float | None = None,
) -> bool:
    """Whether the map's peak meets :func:`criterion` for the lesion in ``mask``."""
    x, y = peak_point(heatmap, geometry)
    if is_calcification(lesion_type):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            return False
        points = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
        margin = CALC_MARGIN_MM / spacing_mm if spacing_mm else 0.0
        return _hull_distance(points, x, y) <= margin
    r = min(max(int(y), 0), mask.shape[0] - 1)
    c = min(max(int(x), 0), mask.shape[1] - 1)
    return bool(mask[r, c])
