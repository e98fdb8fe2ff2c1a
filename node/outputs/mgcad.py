"""Mammography CAD SR (TID 4000), the result form mammography workstations expect.

SOP class Mammography CAD SR Storage (1.2.840.10008.5.1.4.1.1.88.50). highdicom
has no builder for it; the content tree is made of highdicom content items and
the document is a highdicom Comprehensive SR whose SOP Class UID is then set to
Mammography CAD SR (the two IODs share every module; the CAD IOD only restricts
the content tree, which this module follows).

Template tree (PS3.16; relationship, value type, concept; ``R-`` marks a
by-reference relationship to an entry of the Image Library)::

    CONTAINER (111036, DCM, "Mammography CAD Report")                 TID 4000
      HAS CONCEPT MOD  Language (eng, US)                              TID 1204
      CONTAINS  CONTAINER Image Library (111028)
                  CONTAINS IMAGE (one per image)                       TID 4020
                    HAS ACQ CONTEXT  CODE Image Laterality (CID 6022), CODE Image View
                                     (the source's View Code Sequence, CID 4014)
                                     [+ HAS CONCEPT MOD Image View Modifier, CID 4015],
                                     TEXT Patient Orientation Row/Column, DATE/TIME
                                     Study Date/Time, NUM Horizontal/Vertical Pixel
                                     Spacing (mm)
      CONTAINS  CODE CAD Processing and Findings Summary (CID 6047)    TID 4001
                  HAS PROPERTIES  TID 4002: CODE Assessment Category (CID 6026) of the
                                  study [+ HAS CONCEPT MOD Laterality], TEXT Impression
                                  Description, NUM Certainty of impression (%) = the
                                  study's probability, NUM Probability of cancer (%)
                                  per breast [+ HAS CONCEPT MOD Laterality] (row 12),
                                  TEXT Algorithm Name / Version (TID 4019)
                  INFERRED FROM  CONTAINER Individual Impression/Recommendation
                                 per breast with findings              TID 4003
                    HAS CONCEPT MOD  CODE Rendering Intent (CID 6034)
                    HAS PROPERTIES   TID 4002: Assessment Category of the breast [+
                                     Laterality], Impression Description, Certainty
                                     of impression (%) = the breast's probability
                    CONTAINS         CODE Single Image Finding = Selected region
                                     (CID 6014), one per region        TID 4006
                      HAS CONCEPT MOD  CODE Rendering Intent: Presentation Required for
                                       a mark, Presentation Optional below the
                                       operating point
                        HAS PROPERTIES NUM CAD Operating Point (1..n)  TID 4023
                      HAS PROPERTIES   TEXT Algorithm Name, TEXT Algorithm Version
                      HAS PROPERTIES   NUM Certainty of Finding (%) = the region's score
                      HAS PROPERTIES   TEXT Selected Region Description
                      HAS PROPERTIES   SCOORD Center (POINT), SCOORD Outline (closed
                                       POLYLINE), each R-SELECTED FROM IMAGE  TID 4021
      CONTAINS  CODE Summary of Detections (CID 6042: Succeeded / Partially
                Succeeded / Failed)
                  INFERRED FROM  CONTAINER Successful Detections       TID 4015
                                   CONTAINS CODE Detection Performed = Selected
                                   region (CID 6014)                   TID 4017
                                     HAS PROPERTIES TEXT Algorithm Name / Version,
                                     R-HAS PROPERTIES IMAGE (each image processed),
                                     HAS PROPERTIES TID 4023: Maximum and Recommended
                                     CAD Operating Point, Operating Point Table (the
                                     model card's operating points, X = Case
                                     Specificity, Y = Case Sensitivity)
                  INFERRED FROM  CONTAINER Failed Detections (same shape, images that
                                 could not be processed)
      CONTAINS  CODE Summary of Analyses = Not Attempted (no TID 4016 analyses)

PixelMed's validator holds this tree to the templates: single-image findings
come from CID 6014 (a mass would be a Composite Feature, CID 6016, which the
model does not claim), Probability of cancer is not allowed on a Selected region
finding (its score is the Certainty of Finding), scores are NUM in percent,
pixel spacing is in UCUM "mm" meaning "millimeter", and Summary of Detections
needs a Successful (or Failed) Detections branch whose Detection Performed has
image references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import MammographyCADSRStorage

from node.errors import OutputError
from node.imaging.dataset import laterality_of
from node.outputs import codes
from node.outputs._common import (
    DISCLAIMER,
    SeriesSpec,
    closed_polygon,
    comprehensive_sr,
    view_codes,
)
from node.outputs.sr import birads_code, failure_text, image_name
from node.results import ImageResult, Region, StudyResult

__all__ = [
    "MAMMOGRAPHY_CAD_SR",
    "OperatingPoint",
    "OperatingPointLike",
    "OperatingPointTable",
    "build_cad_failure_report",
    "build_cad_report",
]

#: Mammography CAD SR Storage.
MAMMOGRAPHY_CAD_SR = MammographyCADSRStorage

#: Said in the impression of every CAD SR (success, partial success and failure).
NOT_FOR_CLINICAL_USE = f"{DISCLAIMER}. Not for clinical use."

_Rel = hd.sr.RelationshipTypeValues
Item = hd.sr.ContentItem

_IMAGE_LIBRARY = "111028"


# --------------------------------------------------------------------------- #
# Operating points (TID 4023)
# --------------------------------------------------------------------------- #
class OperatingPointLike(Protocol):
    """An operating point as the model card states it (``node.models.card.OperatingPoint``;
    not imported here, so that building results never loads the model runtime)."""

    @property
    def name(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def sensitivity(self) -> float | None: ...
    @property
    def specificity(self) -> float | None: ...


@dataclass(frozen=True)
class OperatingPoint:
    """An operating point without a card: the result's own, or "all regions"."""

    name: str
    threshold: float
    sensitivity: float | None = None
    specificity: float | None = None


@dataclass(frozen=True)
class OperatingPointTable:
    """The CAD operating points, numbered 1..n from the least to the most sensitive
    (highest to lowest threshold), and the one the node decides with.

    A finding's CAD Operating Point is the first point whose threshold its score
    reaches: a workstation set to point ``k`` shows the findings numbered ``<= k``.
    With ``everything`` a last point without threshold (every region the model
    outlines) is added, so that "Presentation Optional" findings below every card
    point still have one.
    """

    points: tuple[OperatingPointLike, ...]
    recommended: int
    everything: bool = False

    @classmethod
    def of(
        cls,
        result: StudyResult,
        card_points: Sequence[OperatingPointLike] = (),
        *,
        everything: bool = False,
    ) -> OperatingPointTable:
        points: list[OperatingPointLike] = list(card_points) or [
            OperatingPoint(name=result.operating_point, threshold=result.threshold)
        ]
        if not any(p.name == result.operating_point for p in points):
            points.append(OperatingPoint(name=result.operating_point, threshold=result.threshold))
        ordered = tuple(sorted(points, key=lambda p: -p.threshold))
        names = [p.name for p in ordered]
        return cls(ordered, names.index(result.operating_point) + 1, everything)

    @property
    def maximum(self) -> int:
        return len(self.points) + (1 if self.everything else 0)

    def point_of(self, score: float) -> int | None:
        """The number of the least sensitive point at which ``score`` is shown, or
        ``None`` when no point shows it."""
        for number, point in enumerate(self.points, start=1):
            if score >= point.threshold:
                return number
        return self.maximum if self.everything else None


def _unit(value: str, meaning: str) -> Code:
    return Code(value, "UCUM", meaning)


def _num(name: Code, value: float, unit: Code, rel: _Rel = _Rel.HAS_PROPERTIES) -> Item:
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=rel)


def _operating_points(table: OperatingPointTable) -> list[Item]:
    """TID 4023: maximum and recommended point, and the table of the card's points."""
    rows: list[Item] = [
        _code(codes.X_CONCEPT, codes.CASE_SPECIFICITY, _Rel.CONTAINS),
        _code(codes.Y_CONCEPT, codes.CASE_SENSITIVITY, _Rel.CONTAINS),
    ]
    described = [
        (
            p,
            f"{p.name}: marks regions whose malignancy probability is at least "
            f"{p.threshold * 100:.1f}%",
        )
        for p in table.points
    ]
    if table.everything:
        everything = OperatingPoint(name="all", threshold=0.0)
        described.append((everything, "all: every region the model outlines (no threshold)"))
    for number, (point, text) in enumerate(described, start=1):
        children: list[Item] = [_text(codes.CAD_OPERATING_POINT_DESCRIPTION, text)]
        for concept, value in (
            (codes.CASE_SPECIFICITY, point.specificity),
            (codes.CASE_SENSITIVITY, point.sensitivity),
        ):
            if value is not None:
                children.append(_num(concept, round(value * 100, 4), codes.PERCENT))
        rows.append(
            _with(_num(codes.CAD_OPERATING_POINT, number, codes.RANGE_0_N, _Rel.CONTAINS), children)
        )
    return [
        _num(codes.MAXIMUM_CAD_OPERATING_POINT, table.maximum, codes.ARBITRARY_UNIT),
        _num(codes.RECOMMENDED_CAD_OPERATING_POINT, table.recommended, codes.RANGE_0_N),
        _with(
            hd.sr.ContainerContentItem(
                name=codes.OPERATING_POINT_TABLE, relationship_type=_Rel.HAS_PROPERTIES
            ),
            rows,
        ),
    ]


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
    # Outside the Image Library these become by-reference links (see _link_to_library).
    return hd.sr.ImageContentItem(
        name=codes.SOURCE_IMAGE,
        referenced_sop_class_uid=ds.SOPClassUID,
        referenced_sop_instance_uid=ds.SOPInstanceUID,
        relationship_type=rel,
    )


def _rendering(required: bool, point: int | None = None) -> Item:
    """CID 6034 Rendering Intent; on a finding, its CAD Operating Point (TID 4006 row 3)."""
    value = codes.RENDER_REQUIRED if required else codes.RENDER_OPTIONAL
    item = _code(codes.RENDERING_INTENT, value, _Rel.HAS_CONCEPT_MOD)
    if point is not None:
        _with(item, [_num(codes.CAD_OPERATING_POINT, point, codes.RANGE_1_N)])
    return item


def _algorithm(name: str, version: str) -> list[Item]:
    """TID 4019 CAD Algorithm Identification, by HAS PROPERTIES."""
    return [_text(codes.ALGORITHM_NAME, name), _text(codes.ALGORITHM_VERSION, version)]


def _scoord(name: Code, kind: hd.sr.GraphicTypeValues, data: np.ndarray, source: Dataset) -> Item:
    item = hd.sr.ScoordContentItem(
        name=name, graphic_type=kind, graphic_data=data, relationship_type=_Rel.HAS_PROPERTIES
    )
    return _with(item, [_image(source, _Rel.SELECTED_FROM)])


def _side(laterality: str) -> list[Item]:
    code = codes.SIDE_CODES.get(laterality)
    return [_code(codes.LATERALITY, code, _Rel.HAS_CONCEPT_MOD)] if code is not None else []


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
    view = view_codes(ds)
    if view is not None:
        modifiers = [_code(codes.IMAGE_VIEW_MODIFIER, m, _Rel.HAS_CONCEPT_MOD) for m in view[1]]
        children.append(_with(_code(codes.IMAGE_VIEW, view[0], acq), modifiers))
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
    container: Code,
    images: Sequence[Dataset],
    model_name: str,
    model_version: str,
    table: OperatingPointTable | None,
) -> Item:
    """TID 4015 row 1 or 3 with one TID 4017 Detection Performed (and, for successful
    detections, the TID 4023 operating points)."""
    children = _algorithm(model_name, model_version)
    children += [_image(ds, _Rel.HAS_PROPERTIES) for ds in images]
    if table is not None:
        children += _operating_points(table)
    performed = _with(
        _code(codes.DETECTION_PERFORMED, codes.SELECTED_REGION, _Rel.CONTAINS), children
    )
    return _with(
        hd.sr.ContainerContentItem(name=container, relationship_type=_Rel.INFERRED_FROM),
        [performed],
    )


def _body(
    category: str,
    laterality: str,
    probability: float,
    description: str,
    rel: _Rel,
) -> list[Item]:
    """TID 4002 Impression/Recommendation Body: Assessment Category (CID 6026, when
    the card's category is a BI-RADS one) with its laterality (CID 6022), Impression
    Description, and the probability as Certainty of impression (%)."""
    items: list[Item] = []
    code = birads_code(category) if category else None
    if code is not None:
        items.append(_with(_code(codes.ASSESSMENT_CATEGORY, code, rel), _side(laterality)))
    items.append(_text(codes.IMPRESSION_DESCRIPTION, description, rel))
    certainty = _percent(codes.CERTAINTY_OF_IMPRESSION, probability, "probability")
    certainty.RelationshipType = rel.value
    items.append(certainty)
    return items


def _point_text(result: StudyResult) -> str:
    return f"operating point {result.operating_point} ({result.threshold * 100:.1f}%)"


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
    marks = sum(len(result.marks(image)) for image in result.images)
    text += f". {'At or above' if result.positive else 'Below'} the {_point_text(result)}"
    text += f": {marks} mark{'' if marks == 1 else 's'}."
    for note in result.notes:  # which model reports the study's other images
        text += f" {note}"
    return f"{text} {NOT_FOR_CLINICAL_USE}"


def _finding(
    result: StudyResult,
    index: int,
    image: ImageResult,
    region: Region,
    number: int,
    source: Dataset,
    table: OperatingPointTable,
) -> Item:
    """TID 4006 Single Image Finding for one region."""
    what = f"images[{index}].regions[{number}]"
    outline = closed_polygon(region.polygon, what)
    center = np.asarray([region.peak_point], dtype=np.float32)
    mark = region in result.marks(image)
    description = (
        f"Region {number + 1} on {image_name(index, image)}: malignancy probability "
        f"{region.score * 100:.1f}% (image {image.probability * 100:.1f}%), "
        f"{'at or above' if mark else 'below'} the {_point_text(result)}"
    )
    return _with(
        _code(codes.SINGLE_IMAGE_FINDING, codes.SELECTED_REGION, _Rel.CONTAINS),
        [
            # TID 4006 row 3: the CAD Operating Point belongs to optional findings only
            _rendering(mark, None if mark else table.point_of(region.score)),
            *_algorithm(result.model_name, result.model_version),
            # the region's score: Probability of cancer is not allowed on this finding type
            _percent(codes.CERTAINTY_OF_FINDING, region.score, f"{what}.score"),
            _text(codes.SELECTED_REGION_DESCRIPTION, description),  # TID 4013
            _scoord(codes.CENTER, hd.sr.GraphicTypeValues.POINT, center, source),
            _scoord(codes.OUTLINE, hd.sr.GraphicTypeValues.POLYLINE, outline, source),
        ],
    )


def _breast_impressions(
    result: StudyResult,
    by_uid: dict[str, Dataset],
    table: OperatingPointTable,
    optional: bool,
) -> list[Item]:
    """TID 4003 per breast with findings: its marks (and, with ``optional``, its regions
    below the operating point that some table point shows)."""
    impressions: list[Item] = []
    for breast in result.breasts:
        findings: list[Item] = []
        required = False
        for index, image in enumerate(result.images):
            if image.laterality != breast.laterality:
                continue
            marks = result.marks(image)
            required = required or bool(marks)
            for number, region in enumerate(image.regions):
                shown = region in marks or (optional and table.point_of(region.score) is not None)
                if shown:
                    source = by_uid[image.sop_instance_uid]
                    findings.append(_finding(result, index, image, region, number, source, table))
        if not findings:
            continue
        impressions.append(
            _with(
                hd.sr.ContainerContentItem(
                    name=codes.INDIVIDUAL_IMPRESSION, relationship_type=_Rel.INFERRED_FROM
                ),
                [_rendering(required), *findings],
            )
        )
    return impressions


def _link_to_library(root: Dataset) -> None:
    """Make every IMAGE item outside the Image Library a by-reference link to the
    library's entry for the same image, as TID 4017 and TID 4021 require for the
    Mammography CAD SR (PS3.3 A.35.5.3.1.3 allows these by-reference relationships)."""
    items = list(root.ContentSequence)
    position = next(i for i, item in enumerate(items, start=1) if _concept(item) == _IMAGE_LIBRARY)
    entries = {
        str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): [1, position, k]
        for k, entry in enumerate(items[position - 1].ContentSequence, start=1)
    }
    for item in items:
        if _concept(item) != _IMAGE_LIBRARY:
            _relink(item, entries)


def _relink(item: Dataset, entries: dict[str, list[int]]) -> None:
    children = item.get("ContentSequence")
    if not children:
        return
    linked = []
    for child in children:
        if child.get("ValueType") == "IMAGE":
            uid = str(child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            if uid not in entries:
                raise OutputError(f"image {uid} is referenced but not in the Image Library")
            link = Dataset()
            link.RelationshipType = child.RelationshipType
            link.ReferencedContentItemIdentifier = entries[uid]
            linked.append(link)
        else:
            _relink(child, entries)
            linked.append(child)
    # set the element itself: highdicom's content items accept only content items here
    item["ContentSequence"].value = DicomSequence(linked)


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


# --------------------------------------------------------------------------- #
# Documents
# --------------------------------------------------------------------------- #
def _document(
    images: Sequence[Dataset],
    summary: Item,
    detections: Item,
    series: SeriesSpec,
    model_name: str,
    model_version: str,
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
    sr = comprehensive_sr(images, root, series, model_name=model_name, model_version=model_version)
    _link_to_library(sr)
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
    table: OperatingPointTable | None,
) -> Item:
    branches = []
    if done:
        branches.append(_detections(codes.SUCCESSFUL_DETECTIONS, done, name, version, table))
    if failed:
        branches.append(_detections(codes.FAILED_DETECTIONS, failed, name, version, None))
    return _with(_code(codes.SUMMARY_OF_DETECTIONS, codes.STATUS[status], _Rel.CONTAINS), branches)


def build_cad_report(
    result: StudyResult,
    sources: Sequence[Dataset],
    series: SeriesSpec,
    *,
    failed_sources: Sequence[Dataset] = (),
    operating_points: Sequence[OperatingPointLike] = (),
    unmarked_regions: str = "omit",
) -> hd.sr.ComprehensiveSR:
    """Mammography CAD SR for an inferred study.

    ``sources``: the evaluated mammograms (pixels not needed); ``failed_sources``:
    eligible mammograms that could not be evaluated (the status is then "Partially
    Succeeded" and they are listed under Failed Detections). ``operating_points``: the
    model card's, for the operating point table (else only the result's own).
    ``unmarked_regions``: ``omit`` reports marks only (Presentation Required);
    ``optional`` adds the regions below the operating point as Presentation Optional.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for index, image in enumerate(result.images):
        if image.sop_instance_uid not in by_uid:
            raise OutputError(f"images[{index}]: source {image.sop_instance_uid} was not given")
    evaluated = [by_uid[i.sop_instance_uid] for i in result.images]
    status: codes.Status = "partially succeeded" if failed_sources else "succeeded"
    optional = unmarked_regions == "optional"
    table = OperatingPointTable.of(result, operating_points, everything=optional)

    sides = {b.laterality for b in result.breasts} & {"L", "R"}
    body = _body(
        result.assessment_category,
        "B" if len(sides) == 2 else "".join(sides),
        result.score,
        _impression(result),
        _Rel.HAS_PROPERTIES,
    )
    # TID 4002 row 12: each breast's probability, with its laterality
    for breast in result.breasts:
        number = _percent(codes.PROBABILITY_OF_CANCER, breast.score, "breast score")
        body.append(_with(number, _side(breast.laterality)))
    body += _algorithm(result.model_name, result.model_version)
    summary = _with(
        _code(
            codes.CAD_PROCESSING_SUMMARY,
            codes.CAD_FINDINGS_SUMMARY[(status, result.has_marks)],
            _Rel.CONTAINS,
        ),
        body + _breast_impressions(result, by_uid, table, optional),
    )
    detections = _summary_of_detections(
        status,
        evaluated,
        list(failed_sources),
        result.model_name,
        result.model_version,
        table,
    )
    return _document(
        [*evaluated, *failed_sources],
        summary,
        detections,
        series,
        result.model_name,
        result.model_version,
    )


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
            _text(codes.IMPRESSION_DESCRIPTION, f"{failure_text(reason)} {NOT_FOR_CLINICAL_USE}"),
            *_algorithm(model_name, model_version),
        ],
    )
    detections = _summary_of_detections(
        "failed", [], list(sources), model_name, model_version, None
    )
    return _document(list(sources), summary, detections, series, model_name, model_version)
