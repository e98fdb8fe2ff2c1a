"""CDD-CESM (TCIA): contrast-enhanced spectral mammography, low-energy and subtracted.

* ``Low energy images of CDD-CESM/P{n}_{L|R}_DM_{CC|MLO}.jpg`` and
  ``Subtracted images of CDD-CESM/P{n}_{L|R}_CM_{CC|MLO}.jpg``;
* ``Radiology manual annotations.xlsx`` (newer releases:
  ``Radiology-manual-annotations.xlsx``), sheet ``all``: ``Image_name`` (with
  trailing spaces in some rows), ``Patient_ID``, ``Side``, ``Type`` (``DM`` low
  energy, ``CESM`` subtracted), ``View``, ``Pathology Classification/ Follow up``
  (Normal, Benign, Malignant), and BI-RADS, density, findings;
* ``Radiology_hand_drawn_segmentations_v2.csv``, a VIA export: ``#filename``,
  ``region_shape_attributes`` (JSON: ``polygon`` with ``all_points_x/y``,
  ``circle`` with ``cx, cy, r``, ``ellipse`` with ``cx, cy, rx, ry, theta``).

The low-energy and subtracted images of a view are acquired together and
co-registered, so an outline drawn on either applies to both. Split by
``Patient_ID``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.datasets._util import read_csv
from training.datasets.sample import Label, Sample, Shape

__all__ = ["ANNOTATION_FILES", "read_cdd_cesm"]

ANNOTATION_FILES = ("Radiology manual annotations.xlsx", "Radiology-manual-annotations.xlsx")
SEGMENTATIONS_FILE = "Radiology_hand_drawn_segmentations_v2.csv"
_FOLDERS = {"DM": "Low energy images of CDD-CESM", "CESM": "Subtracted images of CDD-CESM"}
_LABEL_COLUMN = "Pathology Classification/ Follow up"
_LABELS: dict[str, Label] = {"normal": "normal", "benign": "benign", "malignant": "malignant"}


def _sheet_rows(path: Path) -> list[dict[str, Any]]:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        if "all" not in book.sheetnames:
            raise ValueError(f"{path}: no sheet 'all' (has {book.sheetnames})")
        rows = book["all"].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows)]
        return [dict(zip(header, row, strict=False)) for row in rows if any(row)]
    finally:
        book.close()


def _view_key(name: str) -> str:
    """``P1_L_DM_CC`` and ``P1_L_CM_CC`` share the key ``P1_L_CC``."""
    parts = name.split("_")
    return "_".join(p for p in parts if p not in ("DM", "CM"))


def _shape(attributes: dict[str, Any]) -> Shape | None:
    kind = attributes.get("name")
    if kind in ("polygon", "polyline"):
        xs, ys = attributes.get("all_points_x", []), attributes.get("all_points_y", [])
        points = tuple((float(x), float(y)) for x, y in zip(xs, ys, strict=False))
        return Shape("polygon", points) if len(points) >= 3 else None
    if kind == "circle":
        r = float(attributes["r"])
        return Shape("circle", ((float(attributes["cx"]), float(attributes["cy"])),), (r, r))
    if kind == "ellipse":
        return Shape(
            "ellipse",
            ((float(attributes["cx"]), float(attributes["cy"])),),
            (float(attributes["rx"]), float(attributes["ry"])),
            float(attributes.get("theta", 0.0)),
        )
    return None


def _segmentations(root: Path) -> dict[str, list[Shape]]:
    path = root / SEGMENTATIONS_FILE
    shapes: dict[str, list[Shape]] = {}
    if not path.exists():
        return shapes
    for row in read_csv(path):
        try:
            attributes = json.loads(row.get("region_shape_attributes") or "{}")
        except json.JSONDecodeError:
            continue
        shape = _shape(attributes) if attributes else None
        if shape is not None:
            name = Path(row["#filename"].strip()).stem
            shapes.setdefault(_view_key(name), []).append(shape)
    return shapes


def read_cdd_cesm(root: Path) -> list[Sample]:
    """One sample per annotated image whose JPEG exists (low-energy and subtracted)."""
    sheet = next((root / n for n in ANNOTATION_FILES if (root / n).exists()), None)
    if sheet is None:
        raise ValueError(f"{root}: no annotation workbook ({' or '.join(ANNOTATION_FILES)})")
    shapes = _segmentations(root)
    samples = []
    for row in _sheet_rows(sheet):
        name = str(row.get("Image_name") or "").strip()
        kind = str(row.get("Type") or "").strip().upper()
        if not name or kind not in _FOLDERS:
            continue
        path = root / _FOLDERS[kind] / f"{name}.jpg"
        if not path.is_file():
            continue
        label_text = str(row.get(_LABEL_COLUMN) or "").strip().lower()
        if label_text not in _LABELS:
            raise ValueError(f"{sheet}: {name}: unknown pathology {label_text!r}")
        patient = str(row.get("Patient_ID")).strip()
        patient = patient.removesuffix(".0")
        view = str(row.get("View") or "").strip().upper() or name.split("_")[-1]
        samples.append(
            Sample(
                path=path,
                patient_id=patient,
                study_id=patient,
                image_id=name,
                laterality=str(row.get("Side") or "").strip().upper() or "U",
                view=view,
                label=_LABELS[label_text],
                shapes=tuple(shapes.get(_view_key(name), ())),
            )
        )
    return samples
