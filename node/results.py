"""What the model decided about a study, as plain data: the result types every later stage
reads (result objects, the worker, the status page).

A :class:`StudyResult` holds its :class:`BreastResult` s and :class:`ImageResult` s;
an image holds its Grad-CAM :class:`Region` s, in original image pixel coordinates.
Scores are calibrated malignancy probabilities in ``[0, 1]``, on one scale from region
to study: a region's score never exceeds its image's probability, an image's
probability is the score of its top region, a breast's score is the highest of its
images' (with ``breast_aggregation: max``) and the study's the highest of its
breasts'. :meth:`StudyResult.marks` says which regions reach the operating point
(the only ones shown as marks). Nothing here needs the model runtime: building a
report from a result imports NumPy, never torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from node.imaging.geometry import Geometry

__all__ = [
    "BreastResult",
    "CombinedResult",
    "ImageResult",
    "LeftOut",
    "Point",
    "Region",
    "StageTimings",
    "StudyResult",
    "combine",
    "stored_parts",
]

Point = tuple[float, float]


@dataclass(frozen=True)
class Region:
    """A marked region in original image pixel coordinates.

    Attributes:
        polygon: closed outline ``((x, y), ...)``, first point repeated last,
            DICOM SCOORD convention (``(0, 0)`` = top-left corner of the image).
        peak: relative saliency: the highest value of the Grad-CAM map inside the
            region divided by the map's maximum over the image, in ``[0, 1]`` (1 for
            the image's top region). Not a probability; never shown as one.
        peak_point: ``(x, y)`` of that maximum (the centre of the pixels within
            1 % of it, since up-sampled maps have flat tops).
        area: polygon area in original pixels.
        score: the region's malignancy probability on the image's calibrated scale,
            ``image probability x peak`` (see ``docs/outputs.md``), so never above the
            image's probability and equal to it for the top region.
    """

    polygon: tuple[Point, ...]
    peak: float
    peak_point: Point
    area: float
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "polygon": [list(p) for p in self.polygon],
            "peak": self.peak,
            "score": self.score,
            "peak_point": list(self.peak_point),
            "area": self.area,
        }


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage. Batched work is shared equally among its images."""

    preprocess_s: float = 0.0
    """Reading, decoding and preprocessing."""
    inference_s: float = 0.0
    """Forward passes of every member and TTA view."""
    cam_s: float = 0.0
    """Grad-CAM backward pass, map combination and region tracing."""

    def __add__(self, other: StageTimings) -> StageTimings:
        return StageTimings(
            self.preprocess_s + other.preprocess_s,
            self.inference_s + other.inference_s,
            self.cam_s + other.cam_s,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "preprocess_s": round(self.preprocess_s, 6),
            "inference_s": round(self.inference_s, 6),
            "cam_s": round(self.cam_s, 6),
        }


@dataclass(frozen=True)
class ImageResult:
    """The result for one image.

    Attributes:
        probability: ensemble malignancy probability in ``[0, 1]``.
        class_probabilities: ensemble probability per card label (sums to 1).
        predicted_class: the label with the highest ensemble probability.
        member_probabilities: each member's calibrated malignancy probability
            (mean over TTA views).
        uncertainty: weighted standard deviation of ``member_probabilities``.
        regions: Grad-CAM regions, original pixel coordinates, highest peak first.
        heatmap: Grad-CAM map over the model input, ``float32`` ``(H, W)`` in
            ``[0, 1]``, or ``None`` when CAM is off; :meth:`heatmap_original`
            resamples it onto the original image.
        display: the whole image as a viewer shows it, scaled down (see
            :meth:`InferenceEngine.load`'s ``display_size``), or ``None``;
            :meth:`heatmap_display` resamples the heat map onto it.
        geometry: how the model input was made from the original image.
    """

    sop_instance_uid: str
    modality: str
    laterality: str
    laterality_source: str
    view: str
    probability: float
    class_probabilities: dict[str, float]
    predicted_class: str
    member_probabilities: dict[str, float]
    uncertainty: float
    regions: tuple[Region, ...]
    geometry: Geometry
    timings: StageTimings
    heatmap: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    display: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    def heatmap_display(self) -> npt.NDArray[np.float32] | None:
        """The heat map on :attr:`display`'s pixel grid, or ``None``."""
        if self.heatmap is None or self.display is None:
            return None
        rows, cols = self.display.shape
        return self.geometry.map_to_grid(self.heatmap, (rows, cols))

    def heatmap_original(self) -> npt.NDArray[np.float32] | None:
        """The heat map on the original image's pixel grid (``(rows, columns)``), or ``None``."""
        return None if self.heatmap is None else self.geometry.map_to_original(self.heatmap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; the heat map itself is not included (only its shape)."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "modality": self.modality,
            "laterality": self.laterality,
            "laterality_source": self.laterality_source,
            "view": self.view,
            "probability": self.probability,
            "class_probabilities": dict(self.class_probabilities),
            "predicted_class": self.predicted_class,
            "member_probabilities": dict(self.member_probabilities),
            "uncertainty": self.uncertainty,
            "regions": [r.to_dict() for r in self.regions],
            "heatmap_shape": None if self.heatmap is None else list(self.heatmap.shape),
            "geometry": self.geometry.to_dict(),
            "timings": self.timings.to_dict(),
        }


@dataclass(frozen=True)
class BreastResult:
    """One breast (laterality ``L``, ``R``, or ``U`` for unknown) of a study.

    ``assessment_category``: the card's category band that holds ``score``.
    """

    laterality: str
    score: float
    positive: bool
    sop_instance_uids: tuple[str, ...]
    assessment_category: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "laterality": self.laterality,
            "score": self.score,
            "positive": self.positive,
            "assessment_category": self.assessment_category,
            "sop_instance_uids": list(self.sop_instance_uids),
        }


@dataclass(frozen=True)
class StudyResult:
    """The result for one study.

    Attributes:
        score: study malignancy probability (max over breasts).
        positive: ``score >= threshold`` of the operating point.
        operating_point: name of the model card's operating point used.
        threshold: its threshold on the malignancy probability.
        assessment_category: the card's category band that holds ``score``.
    """

    study_uid: str
    images: tuple[ImageResult, ...]
    breasts: tuple[BreastResult, ...]
    score: float
    positive: bool
    operating_point: str
    threshold: float
    assessment_category: str
    model_name: str
    model_version: str
    tta: str
    breast_aggregation: str
    timings: StageTimings
    malignant_label: str = "malignant"
    """The card label whose probability is the malignancy probability."""
    notes: tuple[str, ...] = ()
    """What the reports must also say about the study: that other images of it are
    reported by another model, or were not inferred and why (see :func:`combine`)."""

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities of the evaluated images, in order of first appearance."""
        return tuple(dict.fromkeys(image.modality for image in self.images))

    def breast(self, laterality: str) -> BreastResult | None:
        """The breast of that laterality, or ``None``."""
        return next((b for b in self.breasts if b.laterality == laterality), None)

    def image_positive(self, image: ImageResult) -> bool:
        """The image is called positive at the operating point: its probability reaches
        the threshold and its breast is positive (which only ``breast_aggregation:
        mean`` can deny)."""
        breast = self.breast(image.laterality)
        return image.probability >= self.threshold and (breast is None or breast.positive)

    def marks(self, image: ImageResult) -> tuple[Region, ...]:
        """The image's regions shown as marks: score at or above the operating point's
        threshold, on an image called positive. Highest score first."""
        if not self.image_positive(image):
            return ()
        return tuple(r for r in image.regions if r.score >= self.threshold)

    def unmarked(self, image: ImageResult) -> tuple[Region, ...]:
        """The image's regions below the operating point (never shown as marks)."""
        marks = self.marks(image)
        return tuple(r for r in image.regions if r not in marks)

    @property
    def has_marks(self) -> bool:
        """Whether any region of the study reaches the operating point."""
        return any(self.marks(image) for image in self.images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (heat maps excluded)."""
        return {
            "study_uid": self.study_uid,
            "score": self.score,
            "positive": self.positive,
            "operating_point": self.operating_point,
            "threshold": self.threshold,
            "assessment_category": self.assessment_category,
            "model": {"name": self.model_name, "version": self.model_version},
            "tta": self.tta,
            "breast_aggregation": self.breast_aggregation,
            "breasts": [b.to_dict() for b in self.breasts],
            "images": [i.to_dict() for i in self.images],
            "notes": list(self.notes),
            "timings": self.timings.to_dict(),
        }


@dataclass(frozen=True)
class LeftOut:
    """An eligible image that no model inferred, and why."""

    sop_instance_uid: str
    modality: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "modality": self.modality,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CombinedResult:
    """A study's result from every model that inferred part of it: one
    :class:`StudyResult` per model (a mammography part, an ultrasound part), each
    decided at its own model's operating point. Build it with :func:`combine`.

    The study is positive when any part is; its score is the highest part's (each is a
    calibrated malignancy probability), and its assessment category that part's.
    """

    study_uid: str
    parts: tuple[StudyResult, ...]
    left_out: tuple[LeftOut, ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a combined result needs at least one part")

    @property
    def main(self) -> StudyResult:
        """The part with the highest score (the first of equal ones)."""
        return max(self.parts, key=lambda part: part.score)

    @property
    def score(self) -> float:
        return self.main.score

    @property
    def positive(self) -> bool:
        return any(part.positive for part in self.parts)

    @property
    def assessment_category(self) -> str:
        return self.main.assessment_category

    @property
    def images(self) -> tuple[ImageResult, ...]:
        return tuple(image for part in self.parts for image in part.images)

    @property
    def timings(self) -> StageTimings:
        total = StageTimings()
        for part in self.parts:
            total = total + part.timings
        return total

    def breast_scores(self) -> dict[str, float]:
        """Laterality -> the highest score any part gives that breast."""
        scores: dict[str, float] = {}
        for part in self.parts:
            for breast in part.breasts:
                scores[breast.laterality] = max(breast.score, scores.get(breast.laterality, 0.0))
        return scores

    def model_names(self) -> tuple[str, str]:
        """The parts' model names and versions, each joined by ``", "``."""
        return (
            ", ".join(part.model_name for part in self.parts),
            ", ".join(part.model_version for part in self.parts),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: the study's decision, then each part as
        :meth:`StudyResult.to_dict` gives it, then the images left out."""
        return {
            "study_uid": self.study_uid,
            "score": self.score,
            "positive": self.positive,
            "assessment_category": self.assessment_category,
            "models": [
                {"name": part.model_name, "version": part.model_version} for part in self.parts
            ],
            "parts": [part.to_dict() for part in self.parts],
            "left_out": [item.to_dict() for item in self.left_out],
        }


def stored_parts(detail: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The parts of a stored result (:meth:`CombinedResult.to_dict`), one per model; a
    result stored before results had parts (a :meth:`StudyResult.to_dict`) is its own
    single part; a failure's detail has none."""
    parts = detail.get("parts")
    if isinstance(parts, list):
        return [part for part in parts if isinstance(part, Mapping)]
    return [detail] if detail.get("images") is not None else []


def _covers(part: StudyResult) -> str:
    """``4 MG images`` (``, 2 US images``): the images a part evaluated."""
    counts = []
    for modality in part.modalities:
        n = sum(image.modality == modality for image in part.images)
        counts.append(f"{n} {modality} image{'' if n == 1 else 's'}")
    return ", ".join(counts)


def combine(
    study_uid: str, parts: Sequence[StudyResult], left_out: Sequence[LeftOut] = ()
) -> CombinedResult:
    """The study's :class:`CombinedResult`, each part given the notes its reports carry:
    which images it covers and by which model, which other model reports the others, and
    which images were not inferred and why."""
    notes_left = [
        f"Not analysed by AI: image {item.sop_instance_uid} ({item.modality}): {item.reason}."
        for item in left_out
    ]
    noted = []
    for part in parts:
        others = [p for p in parts if p is not part]
        notes = []
        if others:
            elsewhere = "; ".join(
                f"the {_covers(o)} by model {o.model_name} {o.model_version}" for o in others
            )
            notes.append(
                f"This report covers the {_covers(part)} of the study, inferred by model "
                f"{part.model_name} {part.model_version}, decided at its own operating point; "
                f"the study's other images are reported separately: {elsewhere}."
            )
        noted.append(replace(part, notes=(*part.notes, *notes, *notes_left)))
    return CombinedResult(study_uid, tuple(noted), tuple(left_out))
