"""What each synthetic study contains: its class, density, lesion and breasts.

A study is planned from ``(seed, index)`` alone, so study 7 of seed 1 is the
same whatever the number of studies asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.anatomy import BreastShape, Grid, draw_breast_shape
from training.synthetic.identity import StudyIdentity, study_identity
from training.synthetic.lesions import LesionSpec, draw_lesion
from training.synthetic.options import LABELS, Label, SynthOptions

__all__ = ["DENSITY_WEIGHTS", "GRIDS", "StudyPlan", "image_rng", "plan_study"]

#: Detector grids: ``small`` for fast tests, ``full`` a detector-size mammogram.
GRIDS: dict[str, Grid] = {
    "small": Grid(rows=512, cols=416, spacing=0.55),
    "full": Grid(rows=3328, cols=2560, spacing=0.085),
}

#: How often each ACR density category occurs (roughly the screening population).
DENSITY_WEIGHTS: dict[str, float] = {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1}


@dataclass(frozen=True)
class StudyPlan:
    """The ground truth of one study, before any pixel is drawn."""

    seed: int
    index: int
    identity: StudyIdentity
    label: Label
    density: str
    lesion: LesionSpec | None
    shapes: dict[str, BreastShape]
    implant: bool

    @property
    def lesion_side(self) -> str | None:
        return None if self.lesion is None else self.lesion.laterality

    def image_label(self, laterality: str) -> Label:
        """The class of an image of breast ``laterality``: a lesion's class or normal."""
        return self.label if self.lesion_side == laterality else "normal"

    def lesion_type(self, laterality: str) -> str:
        return (
            self.lesion.kind
            if self.lesion is not None and self.lesion_side == laterality
            else "none"
        )


def plan_study(seed: int, index: int, options: SynthOptions, grid: Grid) -> StudyPlan:
    """Draw study ``index`` (0-based) of ``seed``."""
    rng = np.random.default_rng([seed, index, 0])
    identity = study_identity(seed, index, rng)
    mix = np.asarray(options.mix, dtype=float)
    label = LABELS[int(rng.choice(3, p=mix / mix.sum()))]
    densities = list(DENSITY_WEIGHTS)
    weights = np.array([DENSITY_WEIGHTS[d] for d in densities])
    density = densities[int(rng.choice(len(densities), p=weights))]
    shape = draw_breast_shape(rng, density, grid)
    # the two breasts of a woman are alike, not identical
    other = draw_breast_shape(rng, density, grid)
    other = BreastShape(
        depth=0.85 * shape.depth + 0.15 * other.depth,
        half_height=0.85 * shape.half_height + 0.15 * other.half_height,
        density=density,
        harmonics=other.harmonics,
        center_jitter=shape.center_jitter,
    )
    side = "L" if rng.random() < 0.5 else "R"
    lesion = None
    if label != "normal":
        lesion = draw_lesion(rng, label, side, options.difficulty)
    implant = bool(rng.random() < 0.02)
    return StudyPlan(
        seed, index, identity, label, density, lesion, {"L": shape, "R": other}, implant
    )


def image_rng(plan: StudyPlan, laterality: str, view: str, kind: int = 0) -> np.random.Generator:
    """The random stream of one image of ``plan`` (texture, noise)."""
    code = ("L", "R").index(laterality) * 4 + ("CC", "MLO", "TRANS", "SAG").index(view)
    return np.random.default_rng([plan.seed, plan.index, 1 + code, kind])
