"""Reading DICOM files and the few header attributes every stage asks about.

:func:`read_dataset` is the one place a stored file is parsed with the node's error
mapping: a file that is missing, truncated or not DICOM raises the caller's
:class:`~node.errors.NodeError` subclass naming the file, never a pydicom exception.
Laterality and view are read here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.errors import InferenceError, NodeError

__all__ = [
    "READ_ERRORS",
    "VIEW_POSITIONS",
    "Laterality",
    "laterality_from_tags",
    "laterality_of",
    "modality_of",
    "read_dataset",
    "view_of",
]

Laterality = Literal["L", "R", "U"]
"""Left breast, right breast, unknown (ultrasound without the tag)."""

#: What pydicom raises for a file that is missing, truncated or not DICOM.
READ_ERRORS: tuple[type[Exception], ...] = (OSError, InvalidDicomError, ValueError, EOFError)

#: CID 4014 (View for Mammography) code values, SNOMED CT, by the ``ViewPosition`` they
#: stand for: how a view given only as a View Code Sequence is read.
VIEW_POSITIONS: dict[str, str] = {
    "399162004": "CC",
    "399368009": "MLO",
    "399260004": "ML",
    "399352003": "LM",
    "399192008": "XCCL",
    "399101009": "XCCM",
    "399196006": "FB",
    "399188001": "SIO",
}


def read_dataset(
    path: str | Path,
    *,
    pixels: bool = True,
    error: type[NodeError] = InferenceError,
    what: str = "DICOM file",
) -> Dataset:
    """Read a DICOM file (``pixels=False``: stop before Pixel Data).

    Raises ``error`` (by default :class:`~node.errors.InferenceError`) when it cannot be
    read, with ``what`` and the file name in the message.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except READ_ERRORS as exc:
        raise error(f"cannot read {what} {Path(path).name}: {exc}") from exc


def modality_of(ds: Dataset) -> str:
    """``Modality`` upper-cased (``"MG"``, ``"US"``, ...), ``""`` when absent."""
    return str(ds.get("Modality", "") or "").strip().upper()


def _tag_laterality(ds: Dataset, accepted: tuple[str, ...]) -> tuple[str, str]:
    """The first of ``ImageLaterality``, ``Laterality`` whose value is in ``accepted``,
    and its keyword; ``("", "none")`` when neither has one."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in accepted:
            return value, keyword
    return "", "none"


def laterality_from_tags(ds: Dataset) -> tuple[Laterality | None, str]:
    """Laterality from ``ImageLaterality``, else ``Laterality``; ``(None, "none")`` if neither."""
    value, keyword = _tag_laterality(ds, ("L", "R"))
    if value == "L":
        return "L", keyword
    if value == "R":
        return "R", keyword
    return None, keyword


def laterality_of(ds: Dataset) -> str:
    """``L``/``R``/``B`` from ImageLaterality, else Laterality; ``""`` when neither says."""
    return _tag_laterality(ds, ("L", "R", "B"))[0]


def view_of(ds: Dataset) -> str:
    """``ViewPosition`` (``CC``, ``MLO``, ...), else the view its View Code Sequence codes
    (CID 4014); ``""`` when neither says."""
    value = str(ds.get("ViewPosition", "") or "").strip().upper()
    if value:
        return value
    try:
        codes = ds.get("ViewCodeSequence")
        code = str(codes[0].get("CodeValue", "")) if codes else ""
    except (TypeError, ValueError, AttributeError, IndexError):
        return ""
    return VIEW_POSITIONS.get(code.strip(), "")
