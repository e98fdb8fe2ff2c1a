"""The synthetic generator's output: ``DIR/labels.csv`` plus DICOM files and PNG masks."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from training.datasets.sample import Label, Sample

__all__ = ["read_synthetic"]


def read_synthetic(root: Path) -> list[Sample]:
    """One sample per row of ``root/labels.csv`` (see ``docs/synthetic.md``).

    Each synthetic study is a separate synthetic patient, so the study UID is
    the patient id.
    """
    with (root / "labels.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    samples = []
    for row in rows:
        boxes: tuple[tuple[float, float, float, float], ...] = ()
        if row["bbox_x0"]:
            x0, y0, x1, y1 = (float(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
            boxes = ((x0, y0, x1, y1),)
        modality: Literal["MG", "US"] = "US" if row.get("modality") == "US" else "MG"
        samples.append(
            Sample(
                path=root / row["path"],
                patient_id=row["study_uid"],
                study_id=row["study_uid"],
                image_id=row["sop_instance_uid"],
                laterality=row["laterality"] or "U",
                view=row["view"],
                label=_label(row["label"]),
                modality=modality,
                boxes=boxes,
                mask_paths=(root / row["mask_path"],) if row["mask_path"] else (),
                label_source="synthetic ground truth",
                lesion_type="" if row.get("lesion_type", "none") == "none" else row["lesion_type"],
            )
        )
    return samples


def _label(text: str) -> Label:
    if text not in ("normal", "benign", "malignant"):
        raise ValueError(f"labels.csv: unknown label {text!r}")
    return text  # type: ignore[return-value]
