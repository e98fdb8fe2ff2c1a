"""Synthetic studies and the node's results on them, for the viewer check and the docs.

:func:`showcase` writes synthetic four-view studies, infers them with a model folder
(the shipped demo ensemble by default) and builds every result object with the node's
own builders, then picks a *positive* study (a mark on the lesion of a malignant
image) and a *negative* one (nothing at or above the operating point, though its
Grad-CAM regions exist). The choice is made from the results, so it holds for any
retrained demo model that still finds the lesion of some study among the first few.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom

from node.config import InferenceSettings, OutputSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.outputs import ResultObject, build_failure_outputs, build_outputs
from node.results import ImageResult, Region, StudyResult
from training.synthetic import SynthImage, SynthOptions, write_studies

__all__ = ["DEMO_MODEL", "Case", "Showcase", "showcase"]

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"


@dataclass(frozen=True)
class Case:
    """One study: its images, the result, the objects built and their files."""

    result: StudyResult
    images: tuple[SynthImage, ...]
    image_files: tuple[Path, ...]
    objects: tuple[ResultObject, ...]
    object_files: tuple[Path, ...]

    def synth(self, image: ImageResult) -> SynthImage:
        return next(i for i in self.images if i.sop_instance_uid == image.sop_instance_uid)

    def files(self) -> list[Path]:
        return [*self.image_files, *self.object_files]


@dataclass(frozen=True)
class Showcase:
    positive: Case
    """A study called positive with a mark on a malignant lesion."""
    lesion: tuple[ImageResult, Region, tuple[int, int, int, int]]
    """The marked image, its mark on the lesion, and the lesion's box ``(x0, y0, x1, y1)``."""
    negative: Case
    """A study with Grad-CAM regions but nothing at or above the operating point."""
    failure: tuple[ResultObject, ...]
    """The failure report objects the negative study would get had it failed."""
    others: tuple[Case, ...]
    """The other studies."""
    settings: OutputSettings


def _overlaps(region: Region, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    x, y = region.peak_point
    return x0 - 16 <= x <= x1 + 16 and y0 - 16 <= y <= y1 + 16


def showcase(
    folder: Path,
    *,
    model: Path = DEMO_MODEL,
    studies: int = 8,
    seed: int = 11,
    settings: OutputSettings | None = None,
) -> Showcase:
    """Write ``studies`` synthetic studies under ``folder``, infer them, build the results
    (files under ``folder/results/<n>/``) and pick a positive and a negative case."""
    settings = settings or OutputSettings(objects=("sr", "mgcad", "sc", "gsps"))
    images = write_studies(folder / "studies", studies, seed, SynthOptions(size="small"))
    grouped: dict[str, list[SynthImage]] = defaultdict(list)
    for image in images:
        grouped[image.study_uid].append(image)
    engine = InferenceEngine.load(
        model, InferenceSettings(device="cpu"), display_size=settings.sc_size
    )
    inputs = [
        StudyInput(
            uid, tuple(ImageInput(folder / "studies" / i.path, i.sop_instance_uid) for i in members)
        )
        for uid, members in grouped.items()
    ]
    results = engine.infer_studies(inputs)
    cases: list[Case] = []
    for number, (result, (uid, members)) in enumerate(zip(results, grouped.items(), strict=True)):
        files = tuple(folder / "studies" / i.path for i in members)
        sources = [pydicom.dcmread(path) for path in files]
        objects = build_outputs(
            result,
            sources,
            settings,
            intended_use=engine.card.intended_use,
            operating_points=engine.card.operating_points,
        )
        out = folder / "results" / f"{number + 1:02d}"
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for obj in objects:
            path = out / obj.filename
            obj.dataset.save_as(path, enforce_file_format=True)
            written.append(path)
        cases.append(Case(result, tuple(members), files, tuple(objects), tuple(written)))
        assert uid == result.study_uid
    positive = lesion = None
    for case in cases:
        for image in case.result.images:
            synth = case.synth(image)
            marks = case.result.marks(image)
            if (
                synth.label == "malignant"
                and synth.bbox
                and marks
                and _overlaps(marks[0], synth.bbox)
            ):
                positive, lesion = case, (image, marks[0], synth.bbox)
                break
        if positive is not None:
            break
    negatives = [
        c for c in cases if not c.result.positive and any(i.regions for i in c.result.images)
    ]
    if positive is None or lesion is None or not negatives:
        raise RuntimeError(
            f"no positive study with a mark on its lesion, or no negative one, among {studies}"
        )
    negative = min(negatives, key=lambda c: c.result.score)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in negative.image_files]
    failure = build_failure_outputs(
        headers,
        "inference failed: the model could not read the image",
        settings,
        model_name=engine.card.name,
        model_version=engine.card.version,
    )
    engine.close()
    others = tuple(c for c in cases if c is not positive and c is not negative)
    return Showcase(positive, lesion, negative, tuple(failure), others, settings)
