"""``labels.csv``: one row per For Presentation image, the ground truth."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from training.synthetic.options import Label, SynthImage

__all__ = ["COLUMNS", "LABELS_FILE", "read_labels", "write_labels"]

LABELS_FILE = "labels.csv"

#: Columns of ``labels.csv``, in order.
COLUMNS = (
    "study_uid",
    "sop_instance_uid",
    "path",
    "modality",
    "laterality",
    "view",
    "label",
    "lesion_type",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "mask_path",
    "density",
)


def write_labels(path: Path, images: Iterable[SynthImage]) -> None:
    """Write ``images`` to ``path`` (UTF-8, ``\\n`` line ends, empty cells for no lesion)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for img in images:
            box = [str(v) for v in img.bbox] if img.bbox is not None else ["", "", "", ""]
            writer.writerow(
                [
                    img.study_uid,
                    img.sop_instance_uid,
                    img.path,
                    img.modality,
                    img.laterality,
                    img.view,
                    img.label,
                    img.lesion_type,
                    *box,
                    img.mask_path or "",
                    img.density,
                ]
            )


def read_labels(path: Path) -> list[SynthImage]:
    """Read a ``labels.csv`` written by :func:`write_labels`."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = []
    for row in rows:
        bbox = None
        if row["bbox_x0"]:
            x0, y0, x1, y1 = (int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
            bbox = (x0, y0, x1, y1)
        images.append(
            SynthImage(
                study_uid=row["study_uid"],
                sop_instance_uid=row["sop_instance_uid"],
                path=row["path"],
                laterality=row["laterality"],
                view=row["view"],
                label=cast(Label, row["label"]),
                lesion_type=row["lesion_type"],
                bbox=bbox,
                mask_path=row["mask_path"] or None,
                density=row["density"],
                modality=row["modality"],
            )
        )
    return images
