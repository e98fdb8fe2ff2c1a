"""Comprehensive SR with a TID 1500 Measurement Report, built with highdicom.

Template tree (PS3.16)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")            TID 1500
      HAS CONCEPT MOD  Language (eng, US)                              TID 1204
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID,
                       Name, Manufacturer, Model Name                  TID 1001/1004
      HAS CONCEPT MOD  Procedure reported = (363679005, SCT, "Imaging procedure")
      CONTAINS  CONTAINER Image Library                                TID 1600
                  IMAGE per evaluated image: modality, size, Image Laterality
                  (CID 244), Image View (+ modifiers, from the View Code
                  Sequence), orientation, spacing                     TID 1602/1603
      CONTAINS  CONTAINER Imaging Measurements (always present; empty when no
                region reaches the operating point, and in a failure report)
                  CONTAINER Measurement Group per mark                 TID 1410
                    Tracking Identifier / UID, Finding = Selected region,
                    Algorithm Name/Version (TID 4019), Finding Site Breast + laterality,
                    SCOORD POLYLINE (closed) on its image,
                    NUM Probability of cancer (%) = the region's score,
                    NUM Image probability of each card label (%), NUM Ensemble
                    disagreement (%) of its image
      CONTAINS  CONTAINER Qualitative Evaluations                      TID 1500 row 12
                  CODE Finding per image (the call at the operating point),
                       with Laterality and Image View
                  CODE Assessment Category (CID 6027) per breast and for the study,
                       with Laterality
                  TEXT Comment per image, breast and study (the numbers), the
                       result's notes (which model reports the study's other images,
                       which images were not inferred and why), the intended use,
                       "not for clinical use" (or the failure reason)

Every measurement group is geometric, because viewers (OHIF among them) draw each
group on its image and fail on one without coordinates; what belongs to an image,
a breast or the study as a whole is in the mark groups and in the qualitative
evaluations. Probabilities are in percent (UCUM ``%``).

A failed or skipped study gets the same document with an empty Imaging
Measurements container and a text that says that no AI result exists and why
(:func:`build_failure_report`).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from node.errors import OutputError
from node.imaging.dataset import laterality_of
from node.outputs import codes
from node.outputs._common import (
    DISCLAIMER,
    MANUFACTURER,
    SeriesSpec,
    closed_polygon,
    comprehensive_sr,
    view_codes,
)
from node.outputs.uids import child_uid, device_uid
from node.results import BreastResult, ImageResult, StudyResult

__all__ = [
    "birads_code",
    "build_failure_report",
    "build_measurement_report",
    "finding_code",
    "not_for_clinical_use_text",
]

_IMAGE_LIBRARY = "111028"
_IMAGE_LIBRARY_GROUP = "126200"

_Rel = hd.sr.RelationshipTypeValues


def not_for_clinical_use_text(intended_use: str | None) -> str:
    """The report's statement of intended use; always says it is not for clinical use."""
    use = (intended_use or "").strip()
    parts = [f"Intended use: {use}"] if use else []
    if "not for clinical use" not in use.lower():
        parts.append("Not for clinical use.")
    parts.append(DISCLAIMER + ".")
    return " ".join(parts)


def birads_code(category: str) -> Code | None:
    """CID 6027 code for an assessment category such as ``"4"``, ``"4A"`` or ``"BI-RADS 3"``.

    Returns ``None`` for a category that is not a BI-RADS number 0-5.
    """
    text = category.strip().upper().removeprefix("BI-RADS").strip()
    if (
        text[:1].isdigit()
        and int(text[:1]) in codes.BIRADS
        and (len(text) == 1 or text[1:] in ("A", "B", "C"))
    ):
        return codes.BIRADS[int(text[:1])]
    return None


def finding_code(result: StudyResult, image: ImageResult) -> Code:
    """The image's call at the operating point: Malignant when it is called positive
    there, otherwise the more probable of its other labels (Normal or Benign; Normal
    for a label without a code)."""
    if result.image_positive(image):
        return codes.CLASS_CODES["malignant"]
    others = {k: v for k, v in image.class_probabilities.items() if k != result.malignant_label}
    label = max(others, key=lambda k: others[k]) if others else "normal"
    return codes.CLASS_CODES.get(label.lower(), codes.CLASS_CODES["normal"])


def _algorithm(result: StudyResult) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=result.model_name,
        version=result.model_version,
        family=codes.ALGORITHM_FAMILY_AI,
    )


def _finding_site(laterality: str) -> hd.sr.FindingSite:
    return hd.sr.FindingSite(
        anatomic_location=codes.BREAST, laterality=codes.LATERALITY_CODES.get(laterality)
    )


def _percent(name: Code, value: float, what: str) -> hd.sr.Measurement:
    if not 0.0 <= value <= 1.0:
        raise OutputError(f"{what}: probability must be in [0, 1], not {value}")
    return hd.sr.Measurement(name=name, value=round(value * 100.0, 4), unit=codes.PERCENT)


def image_name(index: int, image: ImageResult) -> str:
    """``"Image 1 R CC"``: how the reports name an evaluated image."""
    where = " ".join(
        p for p in (image.laterality if image.laterality != "U" else "", image.view) if p
    )
    return f"Image {index + 1}" + (f" {where}" if where else "")


def _image_measurements(image: ImageResult, what: str) -> list[hd.sr.Measurement]:
    """The image's own numbers: the probability of every label and the ensemble's
    disagreement, each named as the image's (private codes, ``codes.image_probability``)."""
    items = [
        _percent(codes.image_probability(label), value, f"{what}.{label}")
        for label, value in image.class_probabilities.items()
    ]
    items.append(_percent(codes.ENSEMBLE_DISAGREEMENT, image.uncertainty, f"{what}.uncertainty"))
    return items


def _mark_groups(
    result: StudyResult, by_uid: dict[str, Dataset], sop_uid: str
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    groups = []
    for image_index, image in enumerate(result.images):
        source = by_uid[image.sop_instance_uid]
        for index, region in enumerate(result.marks(image)):
            what = f"images[{image_index}].marks[{index}]"
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=child_uid(sop_uid, "mark", image.sop_instance_uid, str(index)),
                        identifier=f"{image_name(image_index, image)} mark {index + 1}",
                    ),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                        graphic_data=closed_polygon(region.polygon, what),
                        source_image=hd.sr.SourceImageForRegion(
                            referenced_sop_class_uid=source.SOPClassUID,
                            referenced_sop_instance_uid=source.SOPInstanceUID,
                        ),
                    ),
                    finding_type=codes.SELECTED_REGION,
                    algorithm_id=_algorithm(result),
                    finding_sites=[_finding_site(image.laterality)],
                    measurements=[
                        _percent(codes.PROBABILITY_OF_CANCER, region.score, f"{what}.score"),
                        *_image_measurements(image, f"images[{image_index}]"),
                    ],
                )
            )
    return groups


def _code_item(
    name: Code, value: Code, modifiers: Sequence[tuple[Code, Code]]
) -> hd.sr.ContentItem:
    item = hd.sr.CodeContentItem(name=name, value=value, relationship_type=_Rel.CONTAINS)
    if modifiers:
        item.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.CodeContentItem(name=n, value=v, relationship_type=_Rel.HAS_CONCEPT_MOD)
                for n, v in modifiers
            ]
        )
    return item


def _text_item(text: str, name: Code = codes.COMMENT) -> hd.sr.ContentItem:
    return hd.sr.TextContentItem(name=name, value=text, relationship_type=_Rel.CONTAINS)


def _side(laterality: str) -> list[tuple[Code, Code]]:
    code = codes.LATERALITY_CODES.get(laterality)
    return [(codes.LATERALITY, code)] if code is not None else []


def _point_text(result: StudyResult) -> str:
    return f"operating point {result.operating_point} ({result.threshold * 100:.1f}%)"


def _image_text(result: StudyResult, index: int, image: ImageResult) -> str:
    labels = ", ".join(
        f"{label} {value * 100:.1f}%" for label, value in image.class_probabilities.items()
    )
    stand = "at or above" if result.image_positive(image) else "below"
    marks = len(result.marks(image))
    return (
        f"{image_name(index, image)}: {finding_code(result, image).meaning}, {stand} the "
        f"{_point_text(result)}; probability of cancer {image.probability * 100:.1f}% "
        f"({labels}); ensemble disagreement {image.uncertainty * 100:.1f}%; "
        f"{marks} mark{'' if marks == 1 else 's'}."
    )


def _breast_text(result: StudyResult, breast: BreastResult) -> str:
    side = {"L": "Left breast", "R": "Right breast"}.get(breast.laterality, "Breast")
    return (
        f"{side}: probability of cancer {breast.score * 100:.1f}% "
        f"({result.breast_aggregation} of its images), "
        f"{'positive' if breast.positive else 'negative'} at the {_point_text(result)}, "
        f"assessment category {breast.assessment_category}."
    )


def _study_text(result: StudyResult) -> str:
    return (
        f"Study: probability of cancer {result.score * 100:.1f}% (highest breast), "
        f"{'positive' if result.positive else 'negative'} at the {_point_text(result)}, "
        f"assessment category {result.assessment_category}."
    )


def _study_side(result: StudyResult) -> str:
    sides = {b.laterality for b in result.breasts}
    return "B" if {"L", "R"} <= sides else (next(iter(sides)) if len(sides) == 1 else "")


def _evaluations(
    result: StudyResult, by_uid: dict[str, Dataset], intended_use: str | None
) -> list[hd.sr.ContentItem]:
    """TID 1500 row 12: the call for each image, the categories, and the numbers."""
    items: list[hd.sr.ContentItem] = []
    for index, image in enumerate(result.images):
        view = view_codes(by_uid[image.sop_instance_uid])
        modifiers = _side(image.laterality)
        if view is not None:
            modifiers.append((codes.IMAGE_VIEW, view[0]))
        items.append(_code_item(codes.FINDING, finding_code(result, image), modifiers))
        items.append(_text_item(_image_text(result, index, image)))
    for breast in result.breasts:
        code = birads_code(breast.assessment_category)
        if code is not None:
            items.append(_code_item(codes.ASSESSMENT_CATEGORY, code, _side(breast.laterality)))
        items.append(_text_item(_breast_text(result, breast)))
    study_code = birads_code(result.assessment_category)
    if study_code is not None:
        items.append(_code_item(codes.ASSESSMENT_CATEGORY, study_code, _side(_study_side(result))))
    items.append(_text_item(_study_text(result)))
    items.extend(_text_item(note) for note in result.notes)
    items.append(_text_item(not_for_clinical_use_text(intended_use)))
    return items


def _narrative(
    result: StudyResult, intended_use: str | None
) -> tuple[list[hd.sr.ContentItem], list[hd.sr.ContentItem]]:
    """TID 2002 Findings and Impressions of a result without marks: the same calls,
    category and numbers as :func:`_evaluations`, as Finding and Impression items."""
    findings: list[hd.sr.ContentItem] = []
    for index, image in enumerate(result.images):
        findings.append(_code_item(codes.FINDING, finding_code(result, image), []))
        findings.append(_text_item(_image_text(result, index, image), codes.FINDING))
    findings += [_text_item(_breast_text(result, b), codes.FINDING) for b in result.breasts]
    impressions: list[hd.sr.ContentItem] = []
    study_code = birads_code(result.assessment_category)
    if study_code is not None:
        impressions.append(_code_item(codes.IMPRESSION, study_code, []))
    impressions.append(_text_item(_study_text(result), codes.IMPRESSION))
    impressions.extend(_text_item(note, codes.IMPRESSION) for note in result.notes)
    impressions.append(_text_item(not_for_clinical_use_text(intended_use), codes.IMPRESSION))
    return findings, impressions


def _container(name: Code, items: Sequence[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=name, relationship_type=_Rel.CONTAINS)
    if items:
        container.ContentSequence = hd.sr.ContentSequence(list(items))
    return container


def _describe_library(root: Dataset, sources: Sequence[Dataset]) -> None:
    """Add Image Laterality (TID 1602, CID 244) and Image View with its modifiers (TID
    1603, from the View Code Sequence) to each Image Library entry highdicom made."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for item in root.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != _IMAGE_LIBRARY:
            continue
        for group in item.get("ContentSequence", []):
            if group.ConceptNameCodeSequence[0].CodeValue != _IMAGE_LIBRARY_GROUP:
                continue
            for entry in group.get("ContentSequence", []):
                ds = by_uid.get(str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
                if ds is None:
                    continue
                _describe_entry(entry, ds)


def _describe_entry(entry: Dataset, ds: Dataset) -> None:
    acq = _Rel.HAS_ACQ_CONTEXT
    descriptors = list(entry.get("ContentSequence", []))
    extra: list[Dataset] = []
    side = codes.LATERALITY_CODES.get(laterality_of(ds))
    if side is not None:
        extra.append(
            hd.sr.CodeContentItem(name=codes.IMAGE_LATERALITY, value=side, relationship_type=acq)
        )
    view = view_codes(ds)
    if view is not None:
        item = hd.sr.CodeContentItem(name=codes.IMAGE_VIEW, value=view[0], relationship_type=acq)
        if view[1]:
            item.ContentSequence = hd.sr.ContentSequence(
                [
                    hd.sr.CodeContentItem(
                        name=codes.IMAGE_VIEW_MODIFIER,
                        value=modifier,
                        relationship_type=_Rel.HAS_CONCEPT_MOD,
                    )
                    for modifier in view[1]
                ]
            )
        extra.append(item)
    # TID 1602 (modality, laterality) before TID 1603 (view, orientation, spacing)
    position = 1 if descriptors else 0
    entry.ContentSequence = hd.sr.ContentSequence(
        descriptors[:position] + extra + descriptors[position:]
    )


def _observer(model_name: str, model_version: str) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Device,
            observer_identifying_attributes=_device(model_name, model_version),
        )
    )


def _document(
    sources: Sequence[Dataset],
    groups: Sequence[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations],
    evaluations: Sequence[hd.sr.ContentItem],
    model: tuple[str, str],
    series: SeriesSpec,
) -> hd.sr.ComprehensiveSR:
    """TID 1500 Measurement Report holding at least one mark group; ``model``: its name
    and version."""
    model_name, model_version = model
    report = hd.sr.MeasurementReport(
        observation_context=_observer(model_name, model_version),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=list(groups),
        referenced_images=list(sources),
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    root = report[0]
    _describe_library(root, sources)
    root.ContentSequence.append(_container(codes.QUALITATIVE_EVALUATIONS, evaluations))
    sr = comprehensive_sr(sources, root, series, model_name=model_name, model_version=model_version)
    sr.CodingSchemeIdentificationSequence = [codes.private_scheme()]
    return sr


def _basic_document(
    sources: Sequence[Dataset],
    sections: tuple[Sequence[hd.sr.ContentItem], Sequence[hd.sr.ContentItem]],
    model: tuple[str, str],
    series: SeriesSpec,
) -> hd.sr.ComprehensiveSR:
    """TID 2000 Basic Diagnostic Imaging Report, for a report without measurements
    (no region reaches the operating point, or no result): a Findings and an
    Impressions section (CID 7001) of CODE and TEXT items (TID 2002)."""
    findings, impressions = sections
    model_name, model_version = model
    root = hd.sr.ContainerContentItem(name=codes.DIAGNOSTIC_IMAGING_REPORT, template_id="2000")
    root.ContentSequence = hd.sr.ContentSequence(
        [
            *hd.sr.LanguageOfContentItemAndDescendants(
                hd.sr.CodedConcept.from_code(codes.ENGLISH_US)
            ),
            *_observer(model_name, model_version),
            hd.sr.CodeContentItem(
                name=dcm_codes.DCM.ProcedureReported,
                value=codes.IMAGING_PROCEDURE,
                relationship_type=_Rel.HAS_CONCEPT_MOD,
            ),
            _container(codes.FINDINGS, findings),
            _container(codes.IMPRESSIONS, impressions),
        ]
    )
    return comprehensive_sr(
        sources, root, series, model_name=model_name, model_version=model_version
    )


def _device(model_name: str, model_version: str) -> hd.sr.DeviceObserverIdentifyingAttributes:
    return hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model_name, model_version),
        name=model_name,
        manufacturer_name=MANUFACTURER,
        model_name=f"{model_name} {model_version}"[:64],
    )


def build_measurement_report(
    result: StudyResult,
    sources: Sequence[Dataset],
    series: SeriesSpec,
    *,
    intended_use: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """TID 1500 Measurement Report of ``result`` on its ``sources`` (one dataset per
    evaluated image, pixels not needed). Only marks (regions at or above the operating
    point) become measurement groups."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for index, image in enumerate(result.images):
        if image.sop_instance_uid not in by_uid:
            raise OutputError(f"images[{index}]: source {image.sop_instance_uid} was not given")
    if any(str(ds.StudyInstanceUID) != result.study_uid for ds in sources):
        raise OutputError("sources: StudyInstanceUID differs from the result's study_uid")
    evaluated = [by_uid[i.sop_instance_uid] for i in result.images]
    groups = _mark_groups(result, by_uid, series.sop_uid)
    if groups:
        return _document(
            evaluated,
            groups,
            _evaluations(result, by_uid, intended_use),
            (result.model_name, result.model_version),
            series,
        )
    return _basic_document(
        evaluated,
        _narrative(result, intended_use),
        (result.model_name, result.model_version),
        series,
    )


def failure_text(reason: str) -> str:
    """What a failure report says: no result, why, and that this is not a normal result."""
    reason = " ".join(reason.split()) or "unknown reason"
    return (
        f"AI analysis was not completed for this study: {reason}. "
        "No AI result exists for this study; this is not a normal (negative) result."
    )


def build_failure_report(
    sources: Sequence[Dataset],
    reason: str,
    series: SeriesSpec,
    *,
    model_name: str,
    model_version: str,
) -> hd.sr.ComprehensiveSR:
    """TID 2000 report for a study that failed or was skipped: no measurements, and the
    ``reason`` in its Findings (see :func:`_basic_document`)."""
    return _basic_document(
        sources,
        (
            [_text_item(failure_text(reason), codes.FINDING)],
            [_text_item(not_for_clinical_use_text(None), codes.IMPRESSION)],
        ),
        (model_name, model_version),
        series,
    )
