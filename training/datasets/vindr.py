"""VinDr-Mammo (PhysioNet): BI-RADS-labelled screening mammograms.

``breast-level_annotations.csv`` (``study_id, series_id, image_id, laterality,
view_position, height, width, breast_birads, breast_density, split``),
``finding_annotations.csv`` (adds ``finding_categories, finding_birads, xmin,
ymin, xmax, ymax``) and ``images/<study_id>/<image_id>.dicom``.

VinDr has BI-RADS assessments, not pathology. Labels (``label_source =
"birads"``), from the breast-level assessment:

========================  =========
BI-RADS 1                 normal
BI-RADS 2, BI-RADS 3      benign (benign or probably benign finding)
BI-RADS 4, BI-RADS 5      malignant (suspicious: biopsy recommended)
========================  =========

so "malignant" here means "suspicious for malignancy", a proxy. The official
``split`` column (``training``/``test``) is kept. One study per patient: the
study id is the patient id. Finding boxes with coordinates become ``boxes``.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets._util import read_csv, require_columns
from training.datasets.sample import Label, Sample

__all__ = ["BIRADS_LABELS", "read_vindr"]

BIRADS_LABELS: dict[str, Label] = {
    "1": "normal",
    "2": "benign",
    "3": "benign",
    "4": "malignant",
    "5": "malignant",
}
_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads", "split")


def _birads(text: str) -> Label:
    number = text.replace("BI-RADS", "").strip()
    try:
        return BIRADS_LABELS[number]
    except KeyError:
        raise ValueError(f"unknown BI-RADS value {text!r}") from None


def _boxes(root: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    path = root / "finding_annotations.csv"
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    if not path.exists():
        return boxes
    for row in read_csv(path):
        try:
            box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, ValueError):
            continue  # "No Finding" rows have empty coordinates
        if all(v == v for v in box):  # drop NaN
            boxes.setdefault(row["image_id"], []).append(box)  # type: ignore[arg-type]
    return boxes


def read_vindr(root: Path) -> list[Sample]:
    """One sample per breast-level row whose DICOM file exists."""
    path = root / "breast-level_annotations.csv"
    rows = read_csv(path)
    require_columns(path, rows, _COLUMNS)
    boxes = _boxes(root)
    samples = []
    for row in rows:
        image = root / "images" / row["study_id"] / f"{row['image_id']}.dicom"
        if not image.is_file():
            continue
        samples.append(
            Sample(
                path=image,
                patient_id=row["study_id"],
                study_id=row["study_id"],
                image_id=row["image_id"],
                laterality=row["laterality"] or "U",
                view=row["view_position"],
                label=_birads(row["breast_birads"]),
                split="train" if row["split"] == "training" else row["split"],
                boxes=tuple(boxes.get(row["image_id"], ())),
                label_source="birads",
            )
        )
    return samples
