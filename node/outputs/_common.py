"""Helpers shared by the result builders (private)."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from node import __version__
from node.errors import InferenceError, OutputError
from node.imaging.dataset import view_of
from node.imaging.pixels import decode, to_unit_range
from node.outputs.codes import VIEW_CODES

__all__ = [
    "DISCLAIMER",
    "MANUFACTURER",
    "SeriesSpec",
    "closed_polygon",
    "comprehensive_sr",
    "display_image",
    "require_uids",
    "software_versions",
    "view_codes",
]

#: Manufacturer written into every result object (General Equipment).
MANUFACTURER = "Breast AI Node"

#: The short warning burned into images and written into reports.
DISCLAIMER = "AI result, not for diagnostic use"


def require_uids(ds: Dataset, what: str = "source image") -> None:
    """Raise :class:`OutputError` unless ``ds`` has the UIDs a reference needs."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword, "") or ""):
            raise OutputError(f"{what}: {keyword} is missing")


def _code(item: Dataset) -> Code | None:
    value, scheme = (
        str(item.get("CodeValue", "") or ""),
        str(item.get("CodingSchemeDesignator", "") or ""),
    )
    if not value or not scheme:
        return None
    version = str(item.get("CodingSchemeVersion", "") or "") or None
    return Code(value, scheme, str(item.get("CodeMeaning", "") or value), version)


def view_codes(ds: Dataset) -> tuple[Code, tuple[Code, ...]] | None:
    """The image's view (CID 4014) and view modifiers (CID 4015) exactly as its View Code
    Sequence and View Modifier Code Sequence code them; for an image without one, the
    view its ViewPosition names (no modifiers); ``None`` when neither says."""
    try:
        items = ds.get("ViewCodeSequence") or []
        view = _code(items[0]) if items else None
        modifiers = (
            tuple(
                code
                for code in (_code(m) for m in (items[0].get("ViewModifierCodeSequence") or []))
                if code is not None
            )
            if view is not None
            else ()
        )
    except (TypeError, ValueError, AttributeError, IndexError):
        view, modifiers = None, ()
    if view is not None:
        return view, modifiers
    fallback = VIEW_CODES.get(view_of(ds))
    return (fallback, ()) if fallback is not None else None


def display_image(ds: Dataset) -> npt.NDArray[np.float32]:
    """The image as a viewer shows it by default: first VOI window, MONOCHROME1 inverted,
    scaled to ``[0, 1]`` (colour ultrasound becomes grey)."""
    try:
        return to_unit_range(ds, decode(ds))
    except InferenceError as exc:
        raise OutputError(f"source image pixels: {exc}") from exc


def closed_polygon(
    points: Sequence[Sequence[float]] | npt.ArrayLike, what: str
) -> npt.NDArray[np.float32]:
    """``(N, 2)`` float32 ``(x, y)`` points with the first point repeated last.

    A closed POLYLINE (PS3.3 C.18.6.1.2) needs at least three distinct vertices.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise OutputError(f"{what}: polygon must have shape (N, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise OutputError(f"{what}: polygon has non-finite coordinates")
    if len(arr) and not np.array_equal(arr[0], arr[-1]):
        arr = np.vstack([arr, arr[:1]])
    if len(np.unique(arr, axis=0)) < 3:
        raise OutputError(f"{what}: polygon needs at least three distinct points")
    return arr.astype(np.float32)


class SeriesSpec:
    """Where an object goes: its series UID, number and description, and its own UID."""

    __slots__ = ("description", "instance_number", "number", "series_uid", "sop_uid")

    def __init__(
        self, series_uid: str, number: int, description: str, sop_uid: str, instance_number: int = 1
    ) -> None:
        if not series_uid or not sop_uid:
            raise OutputError("series: series_uid and sop_uid must not be empty")
        if number < 1:
            raise OutputError(f"series: number must be >= 1, not {number}")
        if not 0 < len(description) <= 64:
            raise OutputError("series: description must have 1-64 characters")
        self.series_uid = series_uid
        self.number = number
        self.description = description
        self.sop_uid = sop_uid
        self.instance_number = instance_number


def comprehensive_sr(
    sources: Sequence[Dataset],
    root: Dataset,
    series: SeriesSpec,
    *,
    model_name: str,
    model_version: str,
) -> hd.sr.ComprehensiveSR:
    """A complete, unverified Comprehensive SR document holding ``root``, with patient
    and study taken from ``sources`` (all of one study). General Equipment names the
    model: Manufacturer Model Name is the model's name, Software Versions the node's
    and the model's versions."""
    if not sources:
        raise OutputError("sources: at least one source image is needed")
    for index, ds in enumerate(sources):
        require_uids(ds, f"sources[{index}]")
    if len({str(ds.StudyInstanceUID) for ds in sources}) != 1:
        raise OutputError("sources: images come from more than one study")
    sr = hd.sr.ComprehensiveSR(
        evidence=list(sources),
        content=root,
        series_instance_uid=series.series_uid,
        series_number=series.number,
        sop_instance_uid=series.sop_uid,
        instance_number=series.instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=series.description,
    )
    sr.ManufacturerModelName = model_name[:64]
    sr.SoftwareVersions = software_versions(model_name, model_version)  # type: ignore[assignment]
    return sr


def software_versions(model_name: str, model_version: str) -> list[str]:
    """Software Versions of a result object: the node's and the model's."""
    return [f"{MANUFACTURER} {__version__}"[:64], f"{model_name} {model_version}"[:64]]
