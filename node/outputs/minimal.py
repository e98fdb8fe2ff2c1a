"""The failure report that needs nothing from the images: a Basic Text SR.

A failed study's report (:func:`node.outputs.build_failure_outputs`) is a TID 1500 SR
and, for mammograms, a Mammography CAD SR, built with highdicom from the images' headers,
so it needs of them what those templates need (for a mammogram's Image Library entry,
Patient Orientation and Imager Pixel Spacing among others). When that report cannot be
built (attributes missing, no header readable, no eligible image at all), silence would
follow, and silence reads as "normal". This report is sent instead: it needs only the
Study Instance UID, which the queue always has.

Basic Text SR (PS3.3 A.35.1, SOP Class 1.2.840.10008.5.1.4.1.1.88.11)::

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")          root, SEPARATE
      CONTAINS  TEXT (121106, DCM, "Comment"): "AI analysis was not completed for
                this study: <reason>. No AI result exists for this study; this is
                not a normal (negative) result."
      CONTAINS  TEXT (121106, DCM, "Comment"): "Not for clinical use. ..."
      CONTAINS  TEXT (121106, DCM, "Comment"): "<model> <version>, Breast AI Node <version>"

Patient and study attributes (Patient Name and ID, Birth Date, Sex, Study Date and
Time, Referring Physician, Study ID, Accession Number) are copied from ``source``, one
image header, when one could be read, each only when it is there; otherwise they are
present and empty (all are Type 2), the archive filing the report by Study Instance UID.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

from node import __version__
from node.outputs import codes
from node.outputs._common import MANUFACTURER, SeriesSpec
from node.outputs.sr import failure_text, not_for_clinical_use_text

__all__ = ["BASIC_TEXT_SR", "PATIENT_AND_STUDY", "build_minimal_failure_report"]

#: Basic Text SR Storage.
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")

_REPORT = ("18748-4", "LN", "Diagnostic Imaging Report")

#: Patient and General Study attributes copied from a source header when present
#: (every one is Type 2: present, empty when unknown).
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _code(value: str, scheme: str, meaning: str) -> DicomSequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return DicomSequence([item])


def _text(value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    comment = codes.COMMENT
    item.ConceptNameCodeSequence = _code(comment.value, comment.scheme_designator, comment.meaning)
    item.TextValue = value
    return item


def _copied(source: Dataset | None, keyword: str) -> object:
    """``keyword``'s value in ``source`` when it reads cleanly, else empty."""
    if source is None:
        return ""
    try:
        value = source.get(keyword)
        return "" if value is None else value
    except Exception:  # a value that does not convert: this report must not fail on it
        return ""


def build_minimal_failure_report(
    study_uid: str,
    reason: str,
    series: SeriesSpec,
    *,
    model_name: str,
    model_version: str,
    accession_number: str | None = None,
    source: Dataset | None = None,
) -> Dataset:
    """A Basic Text SR saying that the study has no AI result, and why.

    ``source``: one image header to copy patient and study attributes from, or ``None``.
    ``accession_number`` (from the queue) is used when ``source`` has none. Never reads
    anything else of the images, so it cannot fail on them.
    """
    now = datetime.now(timezone.utc)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # values copied from any source, and the reason
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = series.sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = "+0000"
    for keyword in PATIENT_AND_STUDY:
        setattr(ds, keyword, _copied(source, keyword))
    if not ds.AccessionNumber and accession_number:
        ds.AccessionNumber = accession_number
    ds.StudyInstanceUID = study_uid
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = series.instance_number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _code(*_REPORT)
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(
        [
            _text(failure_text(reason)),
            _text(not_for_clinical_use_text(None)),
            _text(f"{model_name} {model_version}, {MANUFACTURER} {__version__}"),
        ]
    )
    return ds
