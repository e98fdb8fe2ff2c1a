"""Grad-CAM Secondary Capture: one RGB image per evaluated source image.

The picture is the source image as a viewer shows it by default (first VOI
window, MONOCHROME1 inverted), the Grad-CAM heat map blended over it, the outlines
of the image's marks (regions at or above the operating point) with their scores,
and a legend band below (model and version, malignancy probability, where the
image stands against the operating point, "AI result, not for diagnostic use").
An image below the operating point gets no outlines, a legend that says so, and
its heat map as :attr:`SecondaryCaptureStyle.below` asks (shown, faint or off).
Every viewer can show it; it is the one result form that needs no SR support.

DICOM: Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) built with
highdicom, 8-bit RGB, Burned In Annotation YES, explicit VR little endian. Patient
and study come from the source; Source Image Sequence references it; Image
Laterality and Patient Orientation are carried over (Image Laterality only: also
setting the series' Laterality makes dciodvfy report a Type 2C error).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from node.errors import OutputError
from node.imaging.dataset import laterality_of, view_of
from node.outputs._common import (
    DISCLAIMER,
    MANUFACTURER,
    SeriesSpec,
    closed_polygon,
    display_image,
    require_uids,
)
from node.outputs.render import Outline, render_overlay
from node.results import Region

__all__ = ["FAINT", "SecondaryCaptureStyle", "build_secondary_capture", "legend_lines", "percent"]


#: Share of ``opacity`` a ``faint`` heat map is drawn with.
FAINT = 0.25


class SecondaryCaptureStyle:
    """How the picture looks: colour map, heat-map opacity, longest side in pixels, and
    the heat map of an image below the operating point (``shown``, ``faint``, ``off``)."""

    __slots__ = ("below", "colormap", "opacity", "size")

    def __init__(
        self, colormap: str = "jet", opacity: float = 0.4, size: int = 1024, below: str = "faint"
    ) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise OutputError(f"opacity: must be in [0, 1], not {opacity}")
        if size < 0:
            raise OutputError(f"sc_size: must be >= 0, not {size}")
        if below not in ("shown", "faint", "off"):
            raise OutputError(f"heatmap_below_operating_point: unknown value {below!r}")
        self.colormap = colormap
        self.opacity = opacity
        self.size = size
        self.below = below

    def opacity_for(self, positive: bool) -> float:
        """The heat map's opacity on an image called positive or not."""
        if positive or self.below == "shown":
            return self.opacity
        return self.opacity * FAINT if self.below == "faint" else 0.0


def percent(probability: float) -> str:
    """A probability as the result objects print it: ``"32.9%"``."""
    return f"{probability * 100:.1f}%"


def legend_lines(
    model_name: str,
    model_version: str,
    probability: float,
    laterality: str,
    view: str,
    *,
    operating_point: str,
    threshold: float,
    positive: bool,
    marks: int,
) -> list[str]:
    """The legend's text lines (the disclaimer line is added by the renderer): model,
    the image's probability, and where it stands against the operating point."""
    where = " ".join(part for part in (laterality, view) if part)
    lines = [f"{model_name} {model_version}".strip()]
    lines.append(
        f"Malignancy probability {percent(probability)}" + (f" ({where})" if where else "")
    )
    point = f"operating point {operating_point} ({percent(threshold)})"
    if positive:
        lines.append(f"At or above {point}: {marks} mark{'' if marks == 1 else 's'}")
    else:
        lines.append(f"Below {point}: no marks")
    return lines


def build_secondary_capture(
    source: Dataset,
    *,
    heatmap: npt.NDArray[np.float32] | None,
    marks: Sequence[Region],
    probability: float,
    model_name: str,
    model_version: str,
    style: SecondaryCaptureStyle,
    series: SeriesSpec,
    operating_point: str,
    threshold: float,
    positive: bool,
    display: npt.NDArray[np.float32] | None = None,
) -> hd.sc.SCImage:
    """Build the Grad-CAM secondary capture of ``source``.

    The picture is drawn on ``display``, the image as a viewer shows it in ``[0, 1]``
    at any scale of the source's pixel grid (the engine keeps one from preprocessing,
    so nothing is decoded again), or else on ``source``'s own pixels (then it must
    have pixel data). ``heatmap`` is on the same grid as the picture, values in
    ``[0, 1]``, or ``None`` for an image without a map (the picture then shows the
    image and legend only). ``marks``: the regions at or above the operating point
    (``operating_point``, ``threshold``), in source pixel coordinates; ``positive``:
    whether the image is called positive there (an image that is not gets no
    outlines whatever ``marks`` holds).
    """
    require_uids(source)
    if not 0.0 <= probability <= 1.0:
        raise OutputError(f"probability: must be in [0, 1], not {probability}")
    gray = display_image(source) if display is None else np.asarray(display, dtype=np.float32)
    if heatmap is None:
        heat = np.zeros_like(gray)
    else:
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.shape != gray.shape:
            raise OutputError(f"heatmap: shape {heat.shape} differs from the image's {gray.shape}")
    rows, cols = (
        int(source.get("Rows") or gray.shape[0]),
        int(source.get("Columns") or gray.shape[1]),
    )
    scale = np.array([gray.shape[1] / cols, gray.shape[0] / rows])  # (x, y)
    shown = [r for r in marks if r.score >= threshold] if positive else []
    outlines = [
        Outline(
            closed_polygon(r.polygon, f"marks[{i}]").astype(np.float64) * scale,
            f"{i + 1}: {percent(r.score)}",
        )
        for i, r in enumerate(shown)
    ]
    laterality = laterality_of(source)
    view = view_of(source)
    legend = legend_lines(
        model_name,
        model_version,
        probability,
        laterality,
        view,
        operating_point=operating_point,
        threshold=threshold,
        positive=positive,
        marks=len(outlines),
    )
    rgb = render_overlay(
        gray,
        heat,
        outlines,
        colormap=style.colormap,
        opacity=style.opacity_for(positive),
        longest_side=style.size,
        legend=legend,
        warning=DISCLAIMER,
    )

    orientation = [str(v) for v in (source.get("PatientOrientation") or [])]
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        # highdicom checks single-letter directions only; the source's own
        # (possibly compound, e.g. "FR") values are written below.
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("A", "F"),
        series_instance_uid=series.series_uid,
        series_number=series.number,
        sop_instance_uid=series.sop_uid,
        instance_number=series.instance_number,
        manufacturer=MANUFACTURER,
        series_description=series.description,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    # Type 2C: the source's two directions, or empty when it has none (ultrasound)
    sc.PatientOrientation = orientation if len(orientation) == 2 else []
    if laterality:
        sc.ImageLaterality = laterality
    # The SC Image module's optional View Code Sequence (its View and Slice Progression
    # Direction macro): the source's codes, modifiers included. Mammography hanging
    # protocols (OHIF's hpMammo) sort image display sets by it.
    if source.get("ViewCodeSequence"):
        views = copy.deepcopy(source.ViewCodeSequence)
        for item in views:
            if "ViewModifierCodeSequence" in item and not item.ViewModifierCodeSequence:
                del item.ViewModifierCodeSequence  # Type 3 here: present means 1-n items
        sc.ViewCodeSequence = views
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = (
        f"Grad-CAM heat map of {model_name} {model_version} blended over the source image"
    )[:1024]
    sc.SourceImageSequence = [_source_reference(source)]
    return sc


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item
