"""One mammographic projection: anatomy plus an optional lesion, as stored pixels.

The For Presentation image is 12 bits stored, MONOCHROME2 (more attenuation is
brighter), with the periphery equalised the way vendor processing does. The For
Processing image is the unequalised 14-bit detector signal (MONOCHROME1: more
X-ray intensity is a higher value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from training.synthetic.anatomy import (
    MU_FAT,
    MU_GLAND,
    MU_MUSCLE,
    BreastShape,
    Grid,
    breast_view,
    glandular_map,
)
from training.synthetic.lesions import LesionPatch, LesionSpec, render_lesion

__all__ = [
    "BITS_FOR_PRESENTATION",
    "BITS_FOR_PROCESSING",
    "RenderedView",
    "bounding_box",
    "render_view",
]

BITS_FOR_PRESENTATION = 12
BITS_FOR_PROCESSING = 14

_MU_MASS = 3000.0
_CALC_BRIGHTNESS = 1700.0
_BACKGROUND = 60.0


@dataclass(frozen=True)
class RenderedView:
    """The pixels of one view and its ground truth.

    ``pixels``: For Presentation stored values, MONOCHROME2, 12 bits.
    ``raw``: For Processing stored values, MONOCHROME1, 14 bits.
    ``mask``: lesion pixels (None without a lesion). ``bbox``: ``(x0, y0, x1, y1)``,
    half-open, in pixels.
    """

    pixels: NDArray[np.uint16]
    raw: NDArray[np.uint16]
    mask: NDArray[np.bool_] | None
    bbox: tuple[int, int, int, int] | None


def bounding_box(mask: NDArray[np.bool_]) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of the true pixels of ``mask`` (half-open), or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _window(
    patch: LesionPatch, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the image and of the patch where they overlap."""
    h, w = patch.mask.shape
    r0, c0 = max(patch.row, 0), max(patch.col, 0)
    r1, c1 = min(patch.row + h, shape[0]), min(patch.col + w, shape[1])
    image = (slice(r0, r1), slice(c0, c1))
    local = (slice(r0 - patch.row, r1 - patch.row), slice(c0 - patch.col, c1 - patch.col))
    return image, local


def _pull(
    gland: NDArray[np.float32], center: tuple[float, float], radius: float
) -> NDArray[np.float32]:
    """Architectural distortion: tissue drawn towards a point (a radial contraction)."""
    half = int(radius * 1.6) + 2
    r0, c0 = max(int(center[0]) - half, 0), max(int(center[1]) - half, 0)
    r1, c1 = min(int(center[0]) + half, gland.shape[0]), min(int(center[1]) + half, gland.shape[1])
    if r1 <= r0 or c1 <= c0:
        return gland
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dy, dx = yy - np.float32(center[0]), xx - np.float32(center[1])
    dist = np.hypot(dy, dx)
    scale = 1.0 + 0.6 * np.exp(-((dist / np.float32(radius)) ** 2))
    src = [np.float32(center[0]) + dy * scale, np.float32(center[1]) + dx * scale]
    out = gland.copy()
    out[r0:r1, c0:c1] = ndimage.map_coordinates(gland, src, order=1, mode="nearest")
    return out


def render_view(
    shape: BreastShape,
    laterality: str,
    view: str,
    grid: Grid,
    lesion: LesionSpec | None,
    rng: np.random.Generator,
) -> RenderedView:
    """Render ``view`` (``CC``/``MLO``) of the ``laterality`` (``L``/``R``) breast.

    ``lesion`` is drawn only when it belongs to this breast.
    """
    bv = breast_view(shape, view, grid, rng)
    gland = glandular_map(bv, rng)
    patch = None
    calc_gain = 0.0
    if lesion is not None and lesion.laterality == laterality:
        calc_gain = _CALC_BRIGHTNESS * (0.3 + lesion.contrast)
        center = bv.point(lesion.rho, lesion.transverse(view))
        patch = render_lesion(lesion, view, center, grid.spacing)
        if lesion.kind == "architectural_distortion":
            gland = _pull(gland, center, lesion.radius / grid.spacing)

    mu = np.float32(MU_FAT) + gland * np.float32(MU_GLAND - MU_FAT)
    mask = None
    if patch is not None:
        image_sl, local_sl = _window(patch, mu.shape)
        tissue = patch.tissue[local_sl]
        mu[image_sl] += tissue * (np.float32(_MU_MASS) - mu[image_sl])
    # pectoral muscle: denser towards the axilla
    rows_frac = np.linspace(1.08, 0.92, grid.rows, dtype=np.float32)[:, None]
    muscle = np.float32(MU_MUSCLE) * rows_frac
    mu = mu * (1.0 - bv.pectoral) + muscle * bv.pectoral

    dist_mm = (1.0 - bv.rho) * bv.edge * np.float32(grid.spacing)
    thickness = np.sqrt(np.clip(dist_mm / np.float32(14.0), 0.0, 1.0))
    skin = np.float32(300.0) * np.exp(-(((dist_mm - 0.7) / np.float32(0.8)) ** 2))
    alpha = np.clip(dist_mm / np.float32(grid.spacing) + 0.5, 0.0, 1.0)

    presented = mu * (np.float32(0.62) + np.float32(0.38) * thickness) + skin
    raw_signal = (mu - np.float32(900.0)) * thickness + skin * 0.5
    if patch is not None:
        image_sl, local_sl = _window(patch, mu.shape)
        calc = patch.calc[local_sl] * np.float32(calc_gain)
        presented[image_sl] += calc
        raw_signal[image_sl] += calc * 0.8
        mask = np.zeros(mu.shape, bool)
        mask[image_sl] = patch.mask[local_sl]
        mask &= alpha > 0.5

    noise = rng.standard_normal(mu.shape, dtype=np.float32)
    presented = presented * alpha + np.float32(_BACKGROUND) * (1.0 - alpha)
    presented += noise * (np.float32(10.0) + presented * np.float32(0.006))
    raw = np.float32(15200.0) - (raw_signal * alpha) * np.float32(4.2) + noise * np.float32(30.0)

    pixels = np.clip(np.rint(presented), 0, 2**BITS_FOR_PRESENTATION - 1).astype(np.uint16)
    raw_pixels = np.clip(np.rint(raw), 0, 2**BITS_FOR_PROCESSING - 1).astype(np.uint16)
    if laterality == "R":
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        raw_pixels = np.ascontiguousarray(raw_pixels[:, ::-1])
        mask = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
    bbox = None if mask is None else bounding_box(mask)
    if bbox is None:
        mask = None
    return RenderedView(pixels, raw_pixels, mask, bbox)
