"""Grayscale Softcopy Presentation State with the Grad-CAM region outlines (optional).

One GSPS (1.2.840.10008.5.1.4.1.1.11.1) per evaluated image, built with
highdicom: a graphic layer ``AI_REGIONS`` holding each mark (a region at or above
the operating point; an image below it has none) as a closed POLYLINE in image
pixels and a text label ("AI mark 1: 93.0%") at its top-left corner, plus a
layer-level note "AI result, not for diagnostic use". The source's VOI
transformation is kept as the source states it (its VOI LUT Sequence, or else its
first window with its VOI LUT Function: LINEAR, LINEAR_EXACT or SIGMOID), so the
image looks as it does without the presentation state. Viewers that apply GSPS
(Weasis, Orthanc Stone, many mammography workstations) draw the marks as vector
graphics the reader can hide.

Laterality is copied from the source (GSPS has no Image Laterality; its General
Series Laterality is required for paired body parts).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from node.errors import OutputError
from node.imaging.dataset import laterality_of
from node.outputs._common import (
    DISCLAIMER,
    MANUFACTURER,
    SeriesSpec,
    closed_polygon,
    require_uids,
)
from node.results import Region

__all__ = ["build_presentation_state"]

_LAYER = "AI_REGIONS"


def _first(value: object) -> float:
    return float(value[0] if isinstance(value, Sequence) else value)  # type: ignore[arg-type]


def _voi(source: Dataset) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """The source's own VOI, as viewers apply it by default: its first VOI LUT Sequence
    item when it has one (pydicom's and most viewers' preference), else its first window
    with its VOI LUT Function (absent means LINEAR)."""
    luts = source.get("VOILUTSequence")
    if luts:
        item = luts[0]
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
        data = (
            np.frombuffer(raw, "<u2") if isinstance(raw, bytes) else np.asarray(raw, np.uint16)
        )[: entries or 65536]
        if bits not in (8, 16):
            # a Softcopy VOI LUT has 8 or 16 bits: the same curve on the 16-bit range
            # (the output range is what the presentation LUT maps, so it looks the same)
            data = np.rint(data.astype(np.float64) * 65535.0 / ((1 << bits) - 1))
            bits = 16
        explanation = str(item.get("LUTExplanation", "") or "") or None
        lut = hd.VOILUT(
            first_mapped_value=first,
            lut_data=data.astype(np.uint8 if bits == 8 else np.uint16),
            lut_explanation=explanation,
        )
        return [hd.pr.SoftcopyVOILUTTransformation(voi_luts=[lut])]
    centers = source.get("WindowCenter")
    widths = source.get("WindowWidth")
    if centers is None or widths is None:
        return None
    function = str(source.get("VOILUTFunction", "") or "").strip().upper() or None
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=_first(centers),
            window_width=_first(widths),
            voi_lut_function=function,
        )
    ]


def _presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """INVERSE for MONOCHROME1 sources, so the image keeps its polarity (PS3.3 C.11.6)."""
    inverse = str(source.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    shape = (
        hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
    )
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def build_presentation_state(
    source: Dataset,
    marks: Sequence[Region],
    series: SeriesSpec,
    *,
    model_name: str,
    model_version: str,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """GSPS for ``source`` (pixels not needed) drawing ``marks``, the image's regions at
    or above the operating point (source pixel coordinates; none for an image below it)."""
    require_uids(source)
    if int(source.get("SamplesPerPixel", 1) or 1) != 1:
        raise OutputError("source image: a grayscale presentation state needs a grayscale image")
    layer = hd.pr.GraphicLayer(layer_name=_LAYER, order=1, description="AI regions")
    graphics = []
    texts = [
        hd.pr.TextObject(
            text_value=f"{model_name} {model_version}: {DISCLAIMER}"[:64],
            units=hd.pr.AnnotationUnitsValues.DISPLAY,
            bounding_box=(0.01, 0.01, 0.99, 0.05),
        )
    ]
    for index, region in enumerate(marks):
        outline = closed_polygon(region.polygon, f"marks[{index}]")
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=outline,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
        )
        left, top = (float(v) for v in np.min(outline, axis=0))
        rows, cols = int(source.Rows), int(source.Columns)
        texts.append(
            hd.pr.TextObject(
                text_value=f"AI mark {index + 1}: {region.score * 100:.1f}%",
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                anchor_point=(min(max(left, 0.0), cols - 1.0), min(max(top, 0.0), rows - 1.0)),
                anchor_point_visible=False,
                text_justification=hd.pr.TextJustificationValues.LEFT,
            )
        )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=graphics or None,
        text_objects=texts,
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=series.series_uid,
        series_number=series.number,
        sop_instance_uid=series.sop_uid,
        instance_number=series.instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name[:64],
        software_versions=model_version[:64],
        device_serial_number=model_version[:64],
        content_label=_LAYER,
        content_description="AI regions, not for diagnostic use",
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        voi_lut_transformations=_voi(source),
        presentation_lut_transformation=_presentation_lut(source),
        series_description=series.description,
    )
    laterality = laterality_of(source)
    if laterality:
        gsps.Laterality = laterality
    return gsps
