"""Comprehensive SR with a TID 1500 Measurement Report, built with highdicom.

Template tree (PS3.16)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")            TID 1500
      HAS CONCEPT MOD  Language (eng, US)                              TID 1204
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID,
                       Name, Manufacturer, Model Name                  TID 1001/1004
      HAS CONCEPT MOD  Procedure reported = (363679005, SCT, "Imaging procedure")
      CONTAINS  CONTAINER Image Library                                TID 1600
                  IMAGE per evaluated image (+ laterality, view, orientation, spacing)
      CONTAINS  CONTAINER Imaging Measurements
                  CONTAINER Measurement Group (per image)              TID 1501
                    Tracking Identifier / UID, Finding = Malignant|Benign|Normal,
                    Algorithm Name/Version (TID 4019), Finding Site Breast + laterality,
                    Source image, NUM Probability of cancer
                  CONTAINER Measurement Group (per breast, per study)  TID 1501
                    Finding Site (+ laterality), Source images,
                    NUM Probability of cancer, CODE Assessment Category (CID 6027)
                  CONTAINER Measurement Group (per Grad-CAM region)    TID 1410
                    Finding = Selected region, SCOORD POLYLINE (closed) on its image,
                    NUM Certainty of Finding (peak of the map in the region)
      CONTAINS  CONTAINER Qualitative Evaluations                      TID 1500 row 12
                  TEXT Comment: intended use, "not for clinical use" (or the failure reason)

A failed or skipped study gets the same document without measurement groups,
whose text says that no AI result exists and why (:func:`build_failure_report`).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from node.errors import OutputError
from node.outputs import codes
from node.outputs._common import (
    DISCLAIMER,
    MANUFACTURER,
    SeriesSpec,
    closed_polygon,
    comprehensive_sr,
)
from node.outputs.uids import child_uid, device_uid
from node.results import ImageResult, StudyResult

__all__ = [
    "birads_code",
    "build_failure_report",
    "build_measurement_report",
    "not_for_clinical_use_text",
]

_IMAGING_MEASUREMENTS = "126010"

Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


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


def _probability(value: float, what: str) -> hd.sr.Measurement:
    if not 0.0 <= value <= 1.0:
        raise OutputError(f"{what}: probability must be in [0, 1], not {value}")
    return hd.sr.Measurement(
        name=codes.PROBABILITY_OF_CANCER, value=float(value), unit=codes.NO_UNITS
    )


def _source_for_group(ds: Dataset) -> hd.sr.SourceImageForMeasurementGroup:
    return hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=ds.SOPClassUID, referenced_sop_instance_uid=ds.SOPInstanceUID
    )


def _image_groups(result: StudyResult, by_uid: dict[str, Dataset], sop_uid: str) -> list[Group]:
    groups: list[Group] = []
    for index, image in enumerate(result.images):
        source = by_uid[image.sop_instance_uid]
        name = _image_name(index, image)
        finding = codes.CLASS_CODES.get(image.predicted_class.lower())
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=child_uid(sop_uid, "image", image.sop_instance_uid), identifier=name
                ),
                finding_type=finding,
                algorithm_id=_algorithm(result),
                finding_sites=[_finding_site(image.laterality)],
                measurements=[_probability(image.probability, f"images[{index}]")],
                source_images=[_source_for_group(source)],
            )
        )
    return groups


def _image_name(index: int, image: ImageResult) -> str:
    where = " ".join(
        p for p in (image.laterality if image.laterality != "U" else "", image.view) if p
    )
    return f"Image {index + 1}" + (f" {where}" if where else "")


def _assessment_groups(
    result: StudyResult, by_uid: dict[str, Dataset], sop_uid: str
) -> list[Group]:
    groups: list[Group] = []
    for breast in result.breasts:
        category = breast.assessment_category
        evaluations = []
        if isinstance(category, str) and birads_code(category) is not None:
            evaluations.append(
                hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, birads_code(category))  # type: ignore[arg-type]
            )
        side = breast.laterality if breast.laterality in ("L", "R") else ""
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=child_uid(sop_uid, "breast", breast.laterality),
                    identifier={"L": "Left breast", "R": "Right breast"}.get(side, "Breast"),
                ),
                algorithm_id=_algorithm(result),
                finding_sites=[_finding_site(side)],
                measurements=[_probability(breast.score, f"breasts[{breast.laterality}]")],
                qualitative_evaluations=evaluations or None,
                source_images=[_source_for_group(by_uid[u]) for u in breast.sop_instance_uids],
            )
        )
    sides = {b.laterality for b in result.breasts}
    study_side = "B" if {"L", "R"} <= sides else (next(iter(sides)) if len(sides) == 1 else "")
    study_code = birads_code(result.assessment_category)
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=child_uid(sop_uid, "study"), identifier="Study"
            ),
            algorithm_id=_algorithm(result),
            finding_sites=[_finding_site(study_side)],
            measurements=[_probability(result.score, "score")],
            qualitative_evaluations=(
                [hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, study_code)]
                if study_code is not None
                else None
            ),
            source_images=[_source_for_group(by_uid[i.sop_instance_uid]) for i in result.images],
        )
    )
    return groups


def _region_groups(result: StudyResult, by_uid: dict[str, Dataset], sop_uid: str) -> list[Group]:
    groups: list[Group] = []
    for image_index, image in enumerate(result.images):
        source = by_uid[image.sop_instance_uid]
        for index, region in enumerate(image.regions):
            what = f"images[{image_index}].regions[{index}]"
            if not 0.0 <= region.peak <= 1.0:
                raise OutputError(f"{what}: peak must be in [0, 1], not {region.peak}")
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=child_uid(sop_uid, "region", image.sop_instance_uid, str(index)),
                        identifier=f"{_image_name(image_index, image)} region {index + 1}",
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
                        hd.sr.Measurement(
                            name=codes.CERTAINTY_OF_FINDING,
                            value=float(region.peak),
                            unit=codes.NO_UNITS,
                        )
                    ],
                )
            )
    return groups


def _comments(texts: Sequence[str]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: CONTAINER Qualitative Evaluations with TEXT items."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for text in texts
        ]
    )
    return container


def _document(
    sources: Sequence[Dataset],
    groups: Sequence[Group],
    texts: Sequence[str],
    device: hd.sr.DeviceObserverIdentifyingAttributes,
    series: SeriesSpec,
) -> hd.sr.ComprehensiveSR:
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    # highdicom insists on at least one measurement group, TID 1500 does not (rows 6,
    # 10 and 12 are "at least one of"): a report without groups is built with a
    # placeholder group whose Imaging Measurements container is then dropped.
    placeholder = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=child_uid(series.sop_uid, "none"), identifier="none"
            )
        )
    ]
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=list(groups) or placeholder,
        referenced_images=list(sources),
    )
    root = report[0]
    if not groups:
        root.ContentSequence = hd.sr.ContentSequence(
            [
                item
                for item in root.ContentSequence
                if item.ConceptNameCodeSequence[0].CodeValue != _IMAGING_MEASUREMENTS
            ]
        )
    root.ContentSequence.append(_comments(texts))
    return comprehensive_sr(sources, root, series)


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
    evaluated image, pixels not needed)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for index, image in enumerate(result.images):
        if image.sop_instance_uid not in by_uid:
            raise OutputError(f"images[{index}]: source {image.sop_instance_uid} was not given")
    if any(str(ds.StudyInstanceUID) != result.study_uid for ds in sources):
        raise OutputError("sources: StudyInstanceUID differs from the result's study_uid")
    evaluated = [by_uid[i.sop_instance_uid] for i in result.images]
    groups = (
        _image_groups(result, by_uid, series.sop_uid)
        + _assessment_groups(result, by_uid, series.sop_uid)
        + _region_groups(result, by_uid, series.sop_uid)
    )
    return _document(
        evaluated,
        groups,
        [not_for_clinical_use_text(intended_use)],
        _device(result.model_name, result.model_version),
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
    """TID 1500 report for a study that failed or was skipped: no measurements, and a
    text item with ``reason``."""
    return _document(
        sources,
        [],
        [failure_text(reason), not_for_clinical_use_text(None)],
        _device(model_name, model_version),
        series,
    )
