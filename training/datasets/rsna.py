"""RSNA Screening Mammography Breast Cancer Detection (Kaggle, 2023).

``train.csv`` (``site_id, patient_id, image_id, laterality, view, age, cancer,
biopsy, invasive, BIRADS, implant, density, machine_id, difficult_negative_case``)
and ``train_images/<patient_id>/<image_id>.dcm`` (many JPEG 2000, decoded by the
node's codecs). Label: ``cancer == 1`` -> malignant, else normal (the
competition's target; there is no benign class). Breasts are scored per
``<patient_id>_<laterality>``: the study id is the patient id.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets._util import read_csv, require_columns
from training.datasets.sample import Sample

__all__ = ["read_rsna"]

_COLUMNS = ("patient_id", "image_id", "laterality", "view", "cancer")


def read_rsna(root: Path) -> list[Sample]:
    """One sample per ``train.csv`` row whose DICOM file exists."""
    path = root / "train.csv"
    rows = read_csv(path)
    require_columns(path, rows, _COLUMNS)
    samples = []
    for row in rows:
        image = root / "train_images" / row["patient_id"] / f"{row['image_id']}.dcm"
        if not image.is_file():
            continue
        samples.append(
            Sample(
                path=image,
                patient_id=row["patient_id"],
                study_id=row["patient_id"],
                image_id=row["image_id"],
                laterality=row["laterality"] or "U",
                view=row["view"],
                label="malignant" if row["cancer"] in ("1", "1.0") else "normal",
                label_source="cancer",
            )
        )
    return samples
