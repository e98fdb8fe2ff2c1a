"""Mammography CAD SR (TID 4000), the result form mammography workstations expect.

SOP class Mammography CAD SR Storage (1.2.840.10008.5.1.4.1.1.88.50). highdicom
has no builder for it; the content tree is made of highdicom content items and
the document is a highdicom Comprehensive SR whose SOP Class UID is then set to
Mammography CAD SR (the two IODs share every module; the CAD IOD only restricts
the content tree, which this module follows).

Template tree (PS3.16; relationship, value type, concept)::

    CONTAINER (111036, DCM, "Mammography CAD Report")                 TID 4000
      HAS CONCEPT MOD  Language (eng, US)                              TID 1204
      CONTAINS  CONTAINER Image Library (111028)
                  CONTAINS IMAGE (one per image)                       TID 4020
                    HAS ACQ CONTEXT  CODE Image Laterality (CID 6022), CODE Image View
                                     (CID 4014), TEXT Patient Orientation Row/Column,
                                     DATE/TIME Study Date/Time, NUM Horizontal/Vertical
                                     Pixel Spacing (mm)
      CONTAINS  CODE CAD Processing and Findings Summary (CID 6047)    TID 4001
                  HAS PROPERTIES  TID 4002: CODE Assessment Category (CID 6026)
                                  [+ HAS CONCEPT MOD Laterality (CID 6022)] per breast
                                  and for the study, TEXT Impression Description,
                                  TEXT Algorithm Name, TEXT Algorithm Version (TID 4019)
                  INFERRED FROM  CONTAINER Individual Impression/Recommendation
                                 (one per Grad-CAM region)             TID 4003
                    HAS CONCEPT MOD  CODE Rendering Intent (CID 6034)
                    HAS PROPERTIES   TEXT Impression Description (image, score)
                    INFERRED FROM    CODE Single Image Finding = Selected region
                                     (CID 6014)                        TID 4006
                      HAS CONCEPT MOD  CODE Rendering Intent
                      HAS PROPERTIES   TEXT Algorithm Name, TEXT Algorithm Version
                      HAS PROPERTIES   NUM Certainty of Finding (%), NUM Probability
                                       of cancer (%)
                      HAS PROPERTIES   SCOORD Center (POINT), SCOORD Outline (closed
                                       POLYLINE), each SELECTED FROM IMAGE  TID 4021
      CONTAINS  CODE Summary of Detections (CID 6042: Succeeded / Partially
                Succeeded / Failed)
                  INFERRED FROM  CONTAINER Successful Detections       TID 4015
                                   CONTAINS CODE Detection Performed = Selected
                                   region (CID 6014)                   TID 4017
                                     HAS PROPERTIES TEXT Algorithm Name / Version,
                                     HAS PROPERTIES IMAGE (each image processed)
                  INFERRED FROM  CONTAINER Failed Detections (same shape, images that
                                 could not be processed)
      CONTAINS  CODE Summary of Analyses = Not Attempted (no TID 4016 analyses)

PixelMed's validator holds this tree to the templates: single-image findings
come from CID 6014 (a mass would be a Composite Feature, CID 6016, which the
model does not claim), scores are NUM in percent, pixel spacing is in UCUM "mm"
meaning "millimeter", and Summary of Detections needs a Successful (or Failed)
Detections branch whose Detection Performed has HAS PROPERTIES IMAGE children.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import MammographyCADSRStorage

from node.errors import OutputError
from node.imaging.dataset import laterality_of, view_of
from node.outputs import codes
from node.outputs._common import (
    DISCLAIMER,
    SeriesSpec,
    closed_polygon,
    comprehensive_sr,
)
from node.outputs.sr import birads_code, failure_text
from node.results import ImageResult, StudyResult

__all__ = [
    "MAMMOGRAPHY_CAD_SR",
    "build_cad_failure_report",
    "build_cad_report",
]

#: Mammography CAD SR Storage.
MAMMOGRAPHY_CAD_SR = MammographyCADSRStorage

_Rel = hd.sr.RelationshipTypeValues
Item = hd.sr.ContentItem


# --------------------------------------------------------------------------- #
# Content item helpers
# --------------------------------------------------------------------------- #
def _with(item: Item, children: Sequence[Item]) -> Item:
    if children:
        item.ContentSequence = hd.sr.ContentSequence(list(children))
    return item


def _code(name: Code, value: Code, rel: _Rel) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=rel)


def _text(name: Code, value: str, rel: _Rel = _Rel.HAS_PROPERTIES) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=rel)


def _percent(name: Code, fraction: float, what: str) -> hd.sr.NumContentItem:
    if not 0.0 <= fraction <= 1.0:
        raise OutputError(f"{what}: must be in [0, 1], not {fraction}")
    return hd.sr.NumContentItem(
        name=name,
        value=round(fraction * 100.0, 4),
        unit=codes.PERCENT,
        relationship_type=_Rel.HAS_PROPERTIES,
    )


def _image(ds: Dataset, rel: _Rel) -> hd.sr.ImageContentItem:
    # The templates leave the IMAGE items' concept name open ("*"); highdicom needs one.
    return hd.sr.ImageContentItem(
        name=codes.SOURCE_IMAGE,
        referenced_sop_class_uid=ds.SOPClassUID,
        referenced_sop_instance_uid=ds.SOPInstanceUID,
        relationship_type=rel,
    )


def _rendering() -> Item:
    """CID 6034: workstations are expected to show every mark (no operating point filter)."""
    return _code(codes.RENDERING_INTENT, codes.RENDER_REQUIRED, _Rel.HAS_CONCEPT_MOD)


def _algorithm(name: str, version: str) -> list[Item]:
    """TID 4019 CAD Algorithm Identification, by HAS PROPERTIES."""
    return [_text(codes.ALGORITHM_NAME, name), _text(codes.ALGORITHM_VERSION, version)]


def _scoord(name: Code, kind: hd.sr.GraphicTypeValues, data: np.ndarray, source: Dataset) -> Item:
    item = hd.sr.ScoordContentItem(
        name=name, graphic_type=kind, graphic_data=data, relationship_type=_Rel.HAS_PROPERTIES
    )
    return _with(item, [_image(source, _Rel.SELECTED_FROM)])


# --------------------------------------------------------------------------- #
# Sub-trees
# --------------------------------------------------------------------------- #
def _library_entry(ds: Dataset) -> Item:
    """TID 4020 CAD Image Library Entry, from the image's own attributes."""
    acq = _Rel.HAS_ACQ_CONTEXT
    children: list[Item] = []
    side = codes.SIDE_CODES.get(laterality_of(ds))
    if side is not None:
        children.append(_code(codes.IMAGE_LATERALITY, side, acq))
    view = codes.VIEW_CODES.get(view_of(ds))
    if view is not None:
        children.append(_code(codes.IMAGE_VIEW, view, acq))
    orientation = [str(v) for v in (ds.get("PatientOrientation") or [])]
    if len(orientation) == 2 and all(orientation):
        children.append(
            _text(Code("111044", "DCM", "Patient Orientation Row"), orientation[0], acq)
        )
        children.append(
            _text(Code("111043", "DCM", "Patient Orientation Column"), orientation[1], acq)
        )
    if ds.get("StudyDate"):
        children.append(
            hd.sr.DateContentItem(
                name=Code("111060", "DCM", "Study Date"), value=ds.StudyDate, relationship_type=acq
            )
        )
    if ds.get("StudyTime"):
        children.append(
            hd.sr.TimeContentItem(
                name=Code("111061", "DCM", "Study Time"), value=ds.StudyTime, relationship_type=acq
            )
        )
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        # (row spacing, column spacing): vertical, then horizontal
        for name, value in (
            (codes.PIXEL_SPACING_HORIZONTAL, spacing[1]),
            (codes.PIXEL_SPACING_VERTICAL, spacing[0]),
        ):
            children.append(
                hd.sr.NumContentItem(
                    name=name, value=float(value), unit=codes.MILLIMETER, relationship_type=acq
                )
            )
    return _with(_image(ds, _Rel.CONTAINS), children)


def _detections(
    container: Code, images: Sequence[Dataset], model_name: str, model_version: str
) -> Item:
    """TID 4015 row 1 or 3 with one TID 4017 Detection Performed."""
    performed = _with(
        _code(codes.DETECTION_PERFORMED, codes.SELECTED_REGION, _Rel.CONTAINS),
        _algorithm(model_name, model_version) + [_image(ds, _Rel.HAS_PROPERTIES) for ds in images],
    )
    return _with(
        hd.sr.ContainerContentItem(name=container, relationship_type=_Rel.INFERRED_FROM),
        [performed],
    )


def _assessment(category: str | None, laterality: str) -> list[Item]:
    """TID 4002 row 1: Assessment Category (CID 6026), with a Laterality modifier
    (CID 6022: left, right or both breasts)."""
    code = birads_code(category) if category else None
    if code is None:
        return []
    item = _code(codes.ASSESSMENT_CATEGORY, code, _Rel.HAS_PROPERTIES)
    side = codes.SIDE_CODES.get(laterality)
    if side is not None:
        _with(item, [_code(codes.LATERALITY, side, _Rel.HAS_CONCEPT_MOD)])
    return [item]


def _impression(result: StudyResult) -> str:
    """The overall impression as text: study and per-breast probability and category."""
    parts = [f"Malignancy probability {result.score * 100:.1f}% (study)"]
    for breast in result.breasts:
        side = {"L": "left breast", "R": "right breast"}.get(breast.laterality, "breast")
        category = breast.assessment_category
        parts.append(
            f"{breast.score * 100:.1f}% ({side}" + (f", category {category})" if category else ")")
        )
    text = "; ".join(parts)
    if result.assessment_category:
        text += f". Assessment category {result.assessment_category}"
    return f"{text}. {DISCLAIMER}."


def _region_impression(
    index: int,
    region_index: int,
    image: ImageResult,
    source: Dataset,
    model_name: str,
    model_version: str,
) -> Item:
    """TID 4003 with one TID 4006 Single Image Finding for a Grad-CAM region."""
    region = image.regions[region_index]
    what = f"images[{index}].regions[{region_index}]"
    outline = closed_polygon(region.polygon, what)
    center = np.asarray([region.peak_point], dtype=np.float32)
    where = " ".join(
        p for p in (image.laterality if image.laterality != "U" else "", image.view) if p
    )
    description = (
        f"Grad-CAM region {region_index + 1} on {where or 'image'}: peak {region.peak:.2f}; "
        f"image malignancy probability {image.probability * 100:.1f}%"
    )
    finding = _with(
        _code(codes.SINGLE_IMAGE_FINDING, codes.SELECTED_REGION, _Rel.CONTAINS),
        [
            _rendering(),
            *_algorithm(model_name, model_version),
            _percent(codes.CERTAINTY_OF_FINDING, region.peak, f"{what}.peak"),
            # TID 4013 (Selected region). Probability of cancer is not allowed on this
            # finding type, so the image's probability is stated in this text.
            _text(codes.SELECTED_REGION_DESCRIPTION, description),
            _scoord(codes.CENTER, hd.sr.GraphicTypeValues.POINT, center, source),
            _scoord(codes.OUTLINE, hd.sr.GraphicTypeValues.POLYLINE, outline, source),
        ],
    )
    return _with(
        hd.sr.ContainerContentItem(
            name=codes.INDIVIDUAL_IMPRESSION, relationship_type=_Rel.INFERRED_FROM
        ),
        [_rendering(), finding],
    )


# --------------------------------------------------------------------------- #
# Documents
# --------------------------------------------------------------------------- #
def _document(
    images: Sequence[Dataset],
    summary: Item,
    detections: Item,
    series: SeriesSpec,
) -> hd.sr.ComprehensiveSR:
    for index, ds in enumerate(images):
        if str(ds.get("Modality", "")).upper() != "MG":
            raise OutputError(
                f"sources[{index}]: a Mammography CAD SR describes mammograms only, "
                f"not {ds.get('Modality')!r}"
            )
    root = hd.sr.ContainerContentItem(name=codes.CAD_REPORT, template_id="4000")
    library = _with(
        hd.sr.ContainerContentItem(name=codes.IMAGE_LIBRARY, relationship_type=_Rel.CONTAINS),
        [_library_entry(ds) for ds in images],
    )
    analyses = _code(codes.SUMMARY_OF_ANALYSES, codes.STATUS["not attempted"], _Rel.CONTAINS)
    _with(
        root,
        [
            *hd.sr.LanguageOfContentItemAndDescendants(
                hd.sr.CodedConcept.from_code(codes.ENGLISH_US)
            ),
            library,
            summary,
            detections,
            analyses,
        ],
    )
    sr = comprehensive_sr(images, root, series)
    # Same modules as Comprehensive SR; the CAD IOD only constrains the tree above.
    sr.SOPClassUID = MAMMOGRAPHY_CAD_SR
    sr.file_meta.MediaStorageSOPClassUID = MAMMOGRAPHY_CAD_SR
    return sr


def _summary_of_detections(
    status: codes.Status,
    done: Sequence[Dataset],
    failed: Sequence[Dataset],
    name: str,
    version: str,
) -> Item:
    branches = []
    if done:
        branches.append(_detections(codes.SUCCESSFUL_DETECTIONS, done, name, version))
    if failed:
        branches.append(_detections(codes.FAILED_DETECTIONS, failed, name, version))
    return _with(_code(codes.SUMMARY_OF_DETECTIONS, codes.STATUS[status], _Rel.CONTAINS), branches)


def build_cad_report(
    result: StudyResult,
    sources: Sequence[Dataset],
    series: SeriesSpec,
    *,
    failed_sources: Sequence[Dataset] = (),
) -> hd.sr.ComprehensiveSR:
    """Mammography CAD SR for an inferred study.

    ``sources``: the evaluated mammograms (pixels not needed); ``failed_sources``:
    eligible mammograms that could not be evaluated (the status is then "Partially
    Succeeded" and they are listed under Failed Detections).
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for index, image in enumerate(result.images):
        if image.sop_instance_uid not in by_uid:
            raise OutputError(f"images[{index}]: source {image.sop_instance_uid} was not given")
    evaluated = [by_uid[i.sop_instance_uid] for i in result.images]
    status: codes.Status = "partially succeeded" if failed_sources else "succeeded"
    with_findings = any(image.regions for image in result.images)

    # TID 4002 allows one Assessment Category here: the study's (per-case). The
    # breasts' probabilities and categories are stated in the impression text.
    sides = {b.laterality for b in result.breasts} & {"L", "R"}
    body: list[Item] = _assessment(
        result.assessment_category, "B" if len(sides) == 2 else "".join(sides)
    )
    body.append(_text(codes.IMPRESSION_DESCRIPTION, _impression(result)))
    body += _algorithm(result.model_name, result.model_version)
    impressions = [
        _region_impression(
            i, r, image, by_uid[image.sop_instance_uid], result.model_name, result.model_version
        )
        for i, image in enumerate(result.images)
        for r in range(len(image.regions))
    ]
    summary = _with(
        _code(
            codes.CAD_PROCESSING_SUMMARY,
            codes.CAD_FINDINGS_SUMMARY[(status, with_findings)],
            _Rel.CONTAINS,
        ),
        body + impressions,
    )
    detections = _summary_of_detections(
        status, evaluated, list(failed_sources), result.model_name, result.model_version
    )
    return _document([*evaluated, *failed_sources], summary, detections, series)


def build_cad_failure_report(
    sources: Sequence[Dataset],
    reason: str,
    series: SeriesSpec,
    *,
    model_name: str,
    model_version: str,
) -> hd.sr.ComprehensiveSR:
    """Mammography CAD SR for a study that failed or was skipped after eligibility:
    CAD processing status "Failed", no findings, and the reason as the impression."""
    summary = _with(
        _code(
            codes.CAD_PROCESSING_SUMMARY,
            codes.CAD_FINDINGS_SUMMARY[("failed", False)],
            _Rel.CONTAINS,
        ),
        [
            _text(codes.IMPRESSION_DESCRIPTION, failure_text(reason)),
            *_algorithm(model_name, model_version),
        ],
    )
    detections = _summary_of_detections("failed", [], list(sources), model_name, model_version)
    return _document(list(sources), summary, detections, series)
