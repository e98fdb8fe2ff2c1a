"""The breast as a projection: outline, skin line, pectoral muscle and
fibroglandular texture, in a canonical frame.

The canonical frame is that of a left breast as DICOM displays it: the chest
wall along the first column, the nipple pointing to the right, the lateral
(CC) or superolateral (MLO) side at the top. Right breasts are the mirror image
(columns reversed); :mod:`training.synthetic.mammogram` does the flip.

Intensities are in display units of a 12-bit For Presentation image
(MONOCHROME2: more attenuation is brighter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import fft, ndimage

__all__ = [
    "DENSITY_FRACTION",
    "MU_FAT",
    "MU_GLAND",
    "MU_MUSCLE",
    "BreastShape",
    "BreastView",
    "Grid",
    "breast_view",
    "draw_breast_shape",
    "glandular_map",
    "power_noise",
]

Float = NDArray[np.float32]

#: Display value of fatty tissue, of fibroglandular tissue and of the pectoral muscle.
MU_FAT = 1350.0
MU_GLAND = 1950.0
MU_MUSCLE = 2600.0

#: Fraction of the breast area that is fibroglandular, by ACR density category.
DENSITY_FRACTION = {"A": 0.07, "B": 0.22, "C": 0.45, "D": 0.70}


@dataclass(frozen=True)
class Grid:
    """Image size in pixels and the detector pixel pitch (ImagerPixelSpacing) in mm."""

    rows: int
    cols: int
    spacing: float


@dataclass(frozen=True)
class BreastShape:
    """The compressed breast of one side, shared by its CC and MLO views (mm)."""

    depth: float
    half_height: float
    density: str
    harmonics: tuple[tuple[float, float], ...]
    center_jitter: float


def draw_breast_shape(rng: np.random.Generator, density: str, grid: Grid) -> BreastShape:
    """A random breast that fits the detector ``grid``."""
    width_mm = grid.cols * grid.spacing
    height_mm = grid.rows * grid.spacing
    depth = float(rng.uniform(0.45, 0.72)) * width_mm
    half_height = float(rng.uniform(0.27, 0.36)) * height_mm
    harmonics = tuple(
        (float(rng.normal(0, 0.025 / k)), float(rng.uniform(0, 2 * math.pi))) for k in range(2, 6)
    )
    return BreastShape(depth, half_height, density, harmonics, float(rng.uniform(-0.03, 0.03)))


@dataclass(frozen=True)
class BreastView:
    """Coordinate maps of one projection in the canonical frame.

    ``rho``: 0 at the middle of the chest wall, 1 at the skin, > 1 outside.
    ``theta``: angle from the nipple axis in radians, negative towards the top.
    ``edge``: distance from the centre to the skin along ``theta``, in pixels.
    ``pectoral``: 0-1 pectoral muscle weight (MLO only, zeros for CC).
    """

    view: str
    center_row: float
    tilt: float
    rho: Float
    theta: Float
    edge: Float
    pectoral: Float
    shape: BreastShape
    grid: Grid

    @property
    def inside(self) -> NDArray[np.bool_]:
        return self.rho <= 1.0

    def point(self, rho: float, t: float) -> tuple[float, float]:
        """Pixel ``(row, col)`` of the breast point at radius ``rho`` and transverse ``t``.

        ``t`` in [-1, 1] runs from the top edge (lateral in CC, superolateral in
        MLO) to the bottom one.
        """
        theta = t * math.radians(62.0) + self.tilt
        edge = _edge_radius(np.array([theta]), self.view, self.shape, self.grid, self.center_row)[0]
        radius = rho * float(edge)
        return self.center_row + radius * math.sin(theta), radius * math.cos(theta)


def _edge_radius(
    theta: NDArray[np.floating], view: str, shape: BreastShape, grid: Grid, center_row: float
) -> NDArray[np.float64]:
    depth = shape.depth / grid.spacing
    half = shape.half_height / grid.spacing
    if view == "MLO":
        depth *= 1.06
        # towards the top the breast runs into the axilla and reaches the edge
        up = max(center_row * 1.18, half * 1.2)
        half_height = np.where(theta < 0, up, half * 1.05)
    else:
        half_height = np.full_like(theta, half, dtype=np.float64)
    c = np.cos(theta)
    s = np.sin(theta)
    radius = 1.0 / np.sqrt((c / depth) ** 2 + (s / half_height) ** 2)
    wobble = np.ones_like(radius)
    for k, (amp, phase) in enumerate(shape.harmonics, start=2):
        wobble += amp * np.cos(k * theta + phase)
    return np.asarray(radius * wobble, dtype=np.float64)


def breast_view(shape: BreastShape, view: str, grid: Grid, rng: np.random.Generator) -> BreastView:
    """Coordinate maps of ``view`` (``CC`` or ``MLO``) of the breast ``shape``."""
    rows, cols = grid.rows, grid.cols
    if view == "MLO":
        center_row = rows * (0.56 + shape.center_jitter)
        tilt = math.radians(float(rng.uniform(4.0, 12.0)))
    else:
        center_row = rows * (0.5 + shape.center_jitter)
        tilt = math.radians(float(rng.uniform(-4.0, 4.0)))
    yy = (np.arange(rows, dtype=np.float32) - np.float32(center_row))[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :] + np.float32(0.5)
    radius = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx).astype(np.float32)
    edge = _edge_radius(theta - tilt, view, shape, grid, center_row).astype(np.float32)
    rho = (radius / edge).astype(np.float32)
    pectoral = np.zeros((rows, cols), np.float32)
    if view == "MLO":
        pectoral = _pectoral(grid, shape, rng)
        rho = np.where(pectoral > 0.5, np.minimum(rho, 0.99), rho).astype(np.float32)
    return BreastView(view, center_row, tilt, rho, theta, edge, pectoral, shape, grid)


def _pectoral(grid: Grid, shape: BreastShape, rng: np.random.Generator) -> Float:
    """The pectoral muscle: a slightly convex wedge in the top chest-wall corner."""
    width = float(rng.uniform(0.28, 0.42)) * shape.depth / grid.spacing
    height = float(rng.uniform(0.38, 0.6)) * grid.rows
    bulge = float(rng.uniform(1.1, 1.45))
    yy = np.arange(grid.rows, dtype=np.float32)[:, None] / np.float32(height)
    xx = np.arange(grid.cols, dtype=np.float32)[None, :] / np.float32(width)
    level = (xx**bulge + yy**bulge) ** (1.0 / bulge)
    soft = 1.5 / min(width, height)
    return np.clip((1.0 - level) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def power_noise(
    rows: int,
    cols: int,
    spacing: float,
    beta: float,
    rng: np.random.Generator,
    low_mm: float = 60.0,
) -> Float:
    """Gaussian noise with a power spectrum falling as ``1/f**beta``, unit variance.

    Frequencies are in cycles/mm so that the texture looks the same at every
    pixel size; wavelengths longer than ``low_mm`` are flattened.
    """
    white = rng.standard_normal((rows, cols), dtype=np.float32)
    spectrum = fft.rfft2(white, workers=1)
    fy = np.fft.fftfreq(rows, d=spacing).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(cols, d=spacing).astype(np.float32)[None, :]
    freq = np.sqrt(fy**2 + fx**2 + np.float32(1.0 / low_mm) ** 2)
    spectrum *= freq ** np.float32(-beta / 2.0)
    field = fft.irfft2(spectrum, s=(rows, cols), workers=1).astype(np.float32)
    field -= field.mean()
    field /= np.float32(field.std() + 1e-6)
    return np.asarray(field, np.float32)


def _radial_streaks(bv: BreastView, rng: np.random.Generator) -> Float:
    """Noise stretched along rays that converge on the nipple (ducts, ligaments)."""
    polar = rng.standard_normal((360, 96)).astype(np.float32)
    polar = ndimage.gaussian_filter(polar, sigma=(1.4, 6.0), mode="wrap")
    polar /= polar.std() + 1e-6
    nipple_row, nipple_col = bv.point(1.0, 0.0)
    yy = np.arange(bv.grid.rows, dtype=np.float32)[:, None] - np.float32(nipple_row)
    xx = np.float32(nipple_col) - np.arange(bv.grid.cols, dtype=np.float32)[None, :]
    angle = np.arctan2(yy, np.maximum(xx, 1.0))
    t_idx = (angle + np.float32(math.pi / 2)) / np.float32(math.pi) * 359.0
    r_idx = np.clip(np.hypot(yy, xx) / np.float32(nipple_col + 1.0), 0.0, 1.5) / 1.5 * 95.0
    streaks = ndimage.map_coordinates(polar, [t_idx, r_idx], order=1, mode="nearest")
    return np.asarray(streaks, np.float32)


def glandular_map(bv: BreastView, rng: np.random.Generator) -> Float:
    """Fibroglandular fraction (0 fat - 1 dense) for every pixel of ``bv``.

    Tissue concentrates behind the nipple and in the upper outer part, thins out
    under the skin, and covers about :data:`DENSITY_FRACTION` of the breast.
    """
    grid = bv.grid
    coarse = power_noise(grid.rows, grid.cols, grid.spacing, 3.0, rng, low_mm=40.0)
    fine = power_noise(grid.rows, grid.cols, grid.spacing, 2.2, rng, low_mm=8.0)
    streaks = _radial_streaks(bv, rng)
    rho = bv.rho
    upper = np.float32(0.25) * np.clip(-np.sin(bv.theta - np.float32(bv.tilt)), 0, 1)
    envelope = np.exp(-(((rho - np.float32(0.5)) / np.float32(0.38)) ** 2)) + upper
    # a layer of subcutaneous fat under the skin
    envelope *= np.clip((np.float32(0.9) - rho) / np.float32(0.18), 0, 1)
    # one connected cone of tissue behind the nipple, modulated by the noise, rather
    # than islands of tissue (which would look like masses)
    field = 0.6 * coarse + 0.12 * fine + 0.25 * streaks + 2.4 * envelope
    inside = bv.inside & (bv.pectoral < 0.5)
    sample = field[inside][::7]
    target = DENSITY_FRACTION[bv.shape.density]
    threshold = float(np.quantile(sample, 1.0 - target)) if sample.size else 0.0
    gland = 1.0 / (1.0 + np.exp(-(field - np.float32(threshold)) / np.float32(0.55)))
    # partial volume: fat and gland overlap in projection, so grey levels are continuous;
    # within the tissue, a fine reticular texture (ducts, lobules, ligaments)
    gland = 0.75 * gland + 0.25 * np.clip(field - np.float32(threshold) + 0.5, 0.0, 1.0)
    gland *= np.float32(0.86) + np.float32(0.14) * np.tanh(fine + 0.6 * streaks)
    gland = ndimage.gaussian_filter(gland, 0.6 / grid.spacing, truncate=3.0)
    return np.where(inside, gland, 0.0).astype(np.float32)
