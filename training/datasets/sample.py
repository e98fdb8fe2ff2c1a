"""The common record every dataset adapter yields: one image and what is known about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["LABELS", "Label", "Sample", "Shape", "lesion_mask"]

Label = Literal["normal", "benign", "malignant"]
LABELS: tuple[Label, ...] = ("normal", "benign", "malignant")
"""Three-class label order used by the training package (and the demo model's card)."""


@dataclass(frozen=True)
class Shape:
    """A hand-drawn lesion outline in original pixel coordinates ``(x, y)``.

    ``kind`` is ``polygon`` (``points`` the vertices), ``circle`` (``points`` =
    ``((cx, cy),)``, ``radii = (r, r)``) or ``ellipse`` (``radii = (rx, ry)``,
    ``angle`` in radians).
    """

    kind: Literal["polygon", "circle", "ellipse"]
    points: tuple[tuple[float, float], ...]
    radii: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        path: the image file (DICOM when ``is_dicom``, else PNG/JPEG).
        patient_id: the grouping key for splits (never split a patient).
        study_id: the study (or exam) the image belongs to.
        image_id: unique within the dataset.
        laterality: ``L``, ``R`` or ``U`` (unknown, ultrasound).
        view: ``CC``, ``MLO``, ... or ``""``.
        label: ``normal``/``benign``/``malignant``; datasets with only
            cancer/not use ``malignant``/``normal`` (see ``label_source``).
        modality: ``MG`` or ``US``.
        split: the dataset's official split (``train``/``valid``/``test``) or ``None``.
        boxes: lesion boxes ``(x0, y0, x1, y1)``, half-open, original pixels.
        mask_paths: lesion mask images (non-zero = lesion), merged when several.
        shapes: hand-drawn outlines (rasterised by :func:`lesion_mask`).
        label_source: how ``label`` was derived (``pathology``, ``birads``, ``cancer``, ...).
        lesion_type: what the lesion is, where the dataset says (synthetic:
            ``spiculated_mass``, ``pleomorphic_calcifications``, ...; CBIS-DDSM:
            ``mass``, ``calcification`` or both joined by ``+``); ``""`` otherwise.
    """

    path: Path
    patient_id: str
    study_id: str
    image_id: str
    laterality: str
    view: str
    label: Label
    modality: Literal["MG", "US"] = "MG"
    split: str | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    mask_paths: tuple[Path, ...] = ()
    shapes: tuple[Shape, ...] = field(default=())
    label_source: str = "pathology"
    lesion_type: str = ""

    @property
    def is_dicom(self) -> bool:
        """Whether ``path`` is a DICOM file (by extension, as the datasets name them)."""
        return self.path.suffix.lower() in (".dcm", ".dicom", "")

    @property
    def has_lesion_outline(self) -> bool:
        """A mask image or a drawn outline exists (boxes alone do not count)."""
        return bool(self.mask_paths or self.shapes)

    @property
    def malignant(self) -> bool:
        return self.label == "malignant"


def lesion_mask(sample: Sample, rows: int, cols: int) -> npt.NDArray[np.bool_] | None:
    """The union of the sample's mask images and outlines at ``(rows, cols)``, or ``None``.

    Mask images of another size are resized (nearest neighbour) to the image.
    """
    if not sample.has_lesion_outline:
        return None
    from PIL import Image, ImageDraw

    mask = np.zeros((rows, cols), dtype=bool)
    for path in sample.mask_paths:
        mask |= _read_mask(path, rows, cols)
    if sample.shapes:
        canvas = Image.new("L", (cols, rows), 0)
        draw = ImageDraw.Draw(canvas)
        for shape in sample.shapes:
            if shape.kind == "polygon" and len(shape.points) >= 3:
                draw.polygon(list(shape.points), fill=255)
            elif shape.kind in ("circle", "ellipse"):
                draw.polygon(_ellipse_points(shape), fill=255)
        mask |= np.asarray(canvas) > 0
    return mask


def _ellipse_points(shape: Shape, count: int = 64) -> list[tuple[float, float]]:
    (cx, cy), (rx, ry) = shape.points[0], shape.radii
    t = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    cos, sin = np.cos(shape.angle), np.sin(shape.angle)
    return [
        (float(cx + a * cos - b * sin), float(cy + a * sin + b * cos))
        for a, b in zip(x, y, strict=True)
    ]


def _read_mask(path: Path, rows: int, cols: int) -> npt.NDArray[np.bool_]:
    """A mask file (PNG, JPEG or DICOM) as booleans at ``(rows, cols)``."""
    from PIL import Image

    if path.suffix.lower() in (".dcm", ".dicom"):
        import pydicom

        values = np.asarray(pydicom.dcmread(path).pixel_array)
        grey = Image.fromarray(((values > 0) * 255).astype(np.uint8))
    else:
        with Image.open(path) as img:
            grey = img.convert("L")
            grey.load()
    if grey.size != (cols, rows):
        grey = grey.resize((cols, rows), Image.Resampling.NEAREST)
    # JPEG masks carry compression noise around 0 and 255
    return np.asarray(grey) > 127
