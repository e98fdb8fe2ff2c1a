"""Lesions with a known class, drawn as local patches.

Each lesion is one object in one breast, seen in both of that breast's views:
the same shape seed, the same distance from the chest wall, a corresponding
transverse position (``m`` medio-lateral in CC, a mix of ``m`` and ``s``
supero-inferior in MLO), the same class.

A patch carries two additive layers: ``tissue``, the fraction of the breast
thickness the lesion replaces (masses, distortion), and ``calc``, the relative
brightness of calcifications.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "BENIGN_TYPES",
    "MALIGNANT_TYPES",
    "LesionPatch",
    "LesionSpec",
    "draw_lesion",
    "render_lesion",
]

Float = NDArray[np.float32]

#: Lesion types (the ``lesion_type`` column) and their relative frequency.
BENIGN_TYPES: dict[str, float] = {"circumscribed_mass": 0.6, "round_calcifications": 0.4}
MALIGNANT_TYPES: dict[str, float] = {
    "spiculated_mass": 0.35,
    "irregular_mass": 0.25,
    "pleomorphic_calcifications": 0.25,
    "architectural_distortion": 0.15,
}


@dataclass(frozen=True)
class LesionSpec:
    """One lesion of one breast (sizes in mm, positions as breast fractions)."""

    kind: str
    label: str
    laterality: str
    radius: float
    contrast: float
    rho: float
    m: float
    s: float
    shape_seed: int

    def transverse(self, view: str) -> float:
        """Position across the breast in ``view``, -1 (top edge) to 1 (bottom edge)."""
        if view == "CC":
            return self.m
        return float(np.clip(0.65 * self.m + 0.65 * self.s, -0.95, 0.95))


def draw_lesion(
    rng: np.random.Generator, label: str, laterality: str, difficulty: float
) -> LesionSpec:
    """A random lesion of class ``label`` (``benign`` or ``malignant``).

    ``difficulty`` scales size down and contrast down (1.0 is the default task:
    one small CNN trained on a few hundred studies reaches about 0.94 per-image
    AUC, see docs/synthetic.md). Contrast is drawn from a wide range, so some
    lesions are subtle, and the tissue model hides low-contrast ones in dense
    breasts.
    """
    table = MALIGNANT_TYPES if label == "malignant" else BENIGN_TYPES
    kinds = list(table)
    weights = np.array([table[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    size_scale = difficulty**-0.35
    contrast_scale = difficulty**-0.8
    radius = {  # mm
        "circumscribed_mass": rng.uniform(4.6, 9.1),
        "round_calcifications": rng.uniform(9.1, 18.2),
        "spiculated_mass": rng.uniform(6.4, 10.9),
        "irregular_mass": rng.uniform(7.8, 13.7),
        "pleomorphic_calcifications": rng.uniform(6.4, 10.9),
        "architectural_distortion": rng.uniform(13.7, 22.8),
    }[kind] * size_scale
    # high density is a sign of malignancy; benign masses (cysts, fibroadenomas) are
    # about as dense as fibroglandular tissue
    low, high = (0.49, 0.81) if label == "malignant" else (0.24, 0.49)
    contrast = float(rng.uniform(low, high)) * contrast_scale
    # a minority of lesions is subtle: small and faint (more of them when harder)
    if rng.random() < min(0.2 * difficulty, 0.6):
        radius *= 0.75
        contrast *= 0.45
    return LesionSpec(
        kind=kind,
        label=label,
        laterality=laterality,
        radius=float(radius),
        contrast=min(contrast, 1.0),
        rho=float(rng.uniform(0.25, 0.8)),
        m=float(rng.uniform(-0.7, 0.7)),
        s=float(rng.uniform(-0.7, 0.7)),
        shape_seed=int(rng.integers(0, 2**31)),
    )


@dataclass(frozen=True)
class LesionPatch:
    """A lesion drawn in a patch whose top-left pixel is ``(row, col)``."""

    row: int
    col: int
    tissue: Float
    calc: Float
    mask: NDArray[np.bool_]


def render_lesion(
    spec: LesionSpec, view: str, center: tuple[float, float], spacing: float
) -> LesionPatch:
    """Draw ``spec`` as seen in ``view`` centred at pixel ``center`` (row, col).

    ``spacing`` is the pixel pitch in mm. The shape comes from ``spec.shape_seed``
    so both views show the same lesion, turned and scaled a little per view.
    """
    shape_rng = np.random.default_rng(spec.shape_seed)
    view_rng = np.random.default_rng([spec.shape_seed, 1 if view == "CC" else 2])
    radius_px = spec.radius / spacing * float(view_rng.uniform(0.92, 1.08))
    turn = float(view_rng.uniform(-0.5, 0.5))
    extent = {"spiculated_mass": 3.4, "architectural_distortion": 1.3}.get(spec.kind, 1.5)
    half = math.ceil(radius_px * extent) + 4
    row0 = round(center[0]) - half
    col0 = round(center[1]) - half
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    yy -= np.float32(center[0] - round(center[0]))
    xx -= np.float32(center[1] - round(center[1]))
    draw = _DRAWERS[spec.kind]
    tissue, calc, mask = draw(shape_rng, yy, xx, radius_px, turn, spacing)
    tissue *= np.float32(spec.contrast)
    return LesionPatch(row0, col0, tissue, calc, mask)


_Drawn = tuple[Float, Float, NDArray[np.bool_]]


def _rotated(yy: Float, xx: Float, angle: float) -> tuple[Float, Float]:
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return c * yy - s * xx, s * yy + c * xx


def _dome(q: Float, power: float = 0.5) -> Float:
    """Projected thickness of a blob whose normalised radius is ``q``."""
    return np.asarray(np.clip(1.0 - q**2, 0.0, 1.0) ** np.float32(power), np.float32)


def _circumscribed(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    aspect = float(rng.uniform(1.0, 1.6))
    angle = float(rng.uniform(0, math.pi)) + turn
    v, u = _rotated(yy, xx, angle)
    q = np.sqrt((u / np.float32(r * aspect**0.5)) ** 2 + (v / np.float32(r / aspect**0.5)) ** 2)
    tissue = _dome(q, 0.5)
    tissue = ndimage.gaussian_filter(tissue, 0.6)
    return tissue.astype(np.float32), np.zeros_like(tissue), q <= 1.0


def _irregular_q(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, amp: float
) -> Float:
    phi = np.arctan2(yy, xx)
    wobble = np.ones_like(phi)
    for k in range(2, 9):
        wobble += np.float32(rng.normal(0, amp / k**0.6)) * np.cos(
            k * (phi - np.float32(turn)) + np.float32(rng.uniform(0, 2 * math.pi))
        )
    return np.asarray(np.hypot(yy, xx) / (np.float32(r) * np.clip(wobble, 0.45, 1.8)), np.float32)


def _irregular(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    q = _irregular_q(rng, yy, xx, r, turn, 0.32)
    tissue = _dome(q, 0.7)
    # ill-defined (indistinct) margins
    tissue = ndimage.gaussian_filter(tissue, max(0.8, 0.9 / spacing))
    return tissue.astype(np.float32), np.zeros_like(tissue), q <= 1.0


def _spicules(
    rng: np.random.Generator,
    yy: Float,
    xx: Float,
    r: float,
    turn: float,
    spacing: float,
    count: int,
    inner: float,
    length: tuple[float, float],
    width_mm: float,
) -> Float:
    out = np.zeros_like(yy)
    width = np.float32(max(0.6, width_mm / spacing))
    for _ in range(count):
        angle = float(rng.uniform(0, 2 * math.pi)) + turn
        start = inner * r
        reach = float(rng.uniform(*length)) * r
        dy, dx = math.sin(angle), math.cos(angle)
        along = yy * np.float32(dy) + xx * np.float32(dx) - np.float32(start)
        across = np.abs(-yy * np.float32(dx) + xx * np.float32(dy))
        frac = np.clip(along / np.float32(reach), 0.0, 1.0)
        taper = width * (1.0 - 0.7 * frac)
        line = np.exp(-((across / taper) ** 2)) * (1.0 - frac)
        line[(along < 0) | (along > reach)] = 0.0
        out = np.maximum(out, line.astype(np.float32))
    return out


def _spiculated(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    q = _irregular_q(rng, yy, xx, r, turn, 0.15)
    core = _dome(q, 0.6)
    count = int(rng.integers(12, 26))
    spikes = _spicules(rng, yy, xx, r, turn, spacing, count, 0.7, (1.4, 3.4), 0.7)
    tissue = np.maximum(core, 0.9 * spikes)
    tissue = ndimage.gaussian_filter(tissue, 0.5)
    mask = (q <= 1.0) | (spikes > 0.35)
    return tissue.astype(np.float32), np.zeros_like(tissue), mask


def _distortion(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    count = int(rng.integers(16, 30))
    spikes = _spicules(rng, yy, xx, r, turn, spacing, count, 0.05, (0.6, 1.2), 0.6)
    centre = np.exp(-((np.hypot(yy, xx) / np.float32(0.25 * r)) ** 2))
    # no central mass: the lines fade where they converge
    spikes *= 1.0 - 0.6 * np.exp(-((np.hypot(yy, xx) / np.float32(0.35 * r)) ** 2))
    tissue = np.maximum(0.9 * spikes, 0.3 * centre)
    tissue = ndimage.gaussian_filter(tissue, 0.5)
    mask = (spikes > 0.3) | (centre > 0.5)
    return tissue.astype(np.float32), np.zeros_like(tissue), mask


def _calc_dots(
    rng: np.random.Generator,
    yy: Float,
    xx: Float,
    spacing: float,
    points: list[tuple[float, float, float, float]],
) -> _Drawn:
    """Calcifications at ``(row, col, radius_mm, elongation)``; brightness in ``calc``."""
    calc = np.zeros_like(yy)
    mask = np.zeros(yy.shape, bool)
    for y, x, radius_mm, elong in points:
        radius = radius_mm / spacing
        sigma = max(radius, 0.55)
        # smaller than a pixel: the partial volume dims the dot
        amp = min(1.0, 1.6 * (radius / sigma) ** 2 + 0.35)
        angle = float(rng.uniform(0, math.pi))
        v, u = _rotated(yy - np.float32(y), xx - np.float32(x), angle)
        d2 = (u / np.float32(sigma * elong)) ** 2 + (v / np.float32(sigma)) ** 2
        calc = np.maximum(calc, np.float32(amp) * np.exp(-d2).astype(np.float32))
        mask |= d2 <= 1.0
        rows, cols = len(mask), len(mask[0])
        iy, ix = round(y + rows // 2), round(x + cols // 2)
        if 0 <= iy < rows and 0 <= ix < cols:
            mask[iy, ix] = True
    return np.zeros_like(yy), calc, mask


def _round_calcs(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    count = int(rng.integers(3, 9))
    points = []
    for _ in range(count):
        dist = r * math.sqrt(float(rng.uniform(0.0, 1.0)))
        angle = float(rng.uniform(0, 2 * math.pi)) + turn
        points.append(
            (dist * math.sin(angle), dist * math.cos(angle), float(rng.uniform(0.6, 1.2)), 1.0)
        )
    return _calc_dots(rng, yy, xx, spacing, points)


def _pleomorphic_calcs(
    rng: np.random.Generator, yy: Float, xx: Float, r: float, turn: float, spacing: float
) -> _Drawn:
    count = int(rng.integers(30, 55))
    points = []
    # some follow a duct (linear, branching), the rest cluster around it
    axis = float(rng.uniform(0, math.pi)) + turn
    for i in range(count):
        if i % 3 == 0:
            along = float(rng.uniform(-1.0, 1.0)) * r
            off = float(rng.normal(0, 0.12)) * r
            y = along * math.sin(axis) + off * math.cos(axis)
            x = along * math.cos(axis) - off * math.sin(axis)
        else:
            dist = r * math.sqrt(float(rng.uniform(0.0, 1.0)))
            angle = float(rng.uniform(0, 2 * math.pi))
            y, x = dist * math.sin(angle), dist * math.cos(angle)
        points.append((y, x, float(rng.uniform(0.22, 0.5)), float(rng.uniform(1.0, 2.8))))
    return _calc_dots(rng, yy, xx, spacing, points)


_DRAWERS = {
    "circumscribed_mass": _circumscribed,
    "irregular_mass": _irregular,
    "spiculated_mass": _spiculated,
    "architectural_distortion": _distortion,
    "round_calcifications": _round_calcs,
    "pleomorphic_calcifications": _pleomorphic_calcs,
}
