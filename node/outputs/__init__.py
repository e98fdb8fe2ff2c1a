"""Result objects for one study: what radiologists see in their viewer.

:func:`build_outputs` turns a :class:`~node.results.StudyResult` and the
source datasets into every object that :class:`~node.config.OutputSettings`
asks for; :func:`build_failure_outputs` makes the report for a study that failed
or was skipped after eligibility, so that silence is never read as "normal".

=========  ==========================================  ==========================
kind       object                                      module
=========  ==========================================  ==========================
``sr``     Comprehensive SR, TID 1500 Measurement      :mod:`node.outputs.sr`
           Report
``mgcad``  Mammography CAD SR, TID 4000 (mammograms    :mod:`node.outputs.mgcad`
           only; not made for ultrasound)
``sc``     Grad-CAM Secondary Capture, one per image   :mod:`node.outputs.sc`
``gsps``   Grayscale Softcopy Presentation State, one  :mod:`node.outputs.gsps`
           per grayscale image
``sr``     Basic Text SR failure report that needs     :mod:`node.outputs.minimal`
           nothing from the images (when the full one
           cannot be built)
=========  ==========================================  ==========================

Every object is in the source study, in a new series per kind (and per model: a study
inferred part by part by two models gets each part's objects, in each model's series),
and its UIDs are derived (:mod:`node.outputs.uids`) from the study, the result
revision, the kind, the source image and the model's name and version: rebuilding a
result gives the same UIDs, so the archive replaces rather than duplicates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydicom.dataset import Dataset

from node import __version__
from node.config import OutputKind, OutputSettings
from node.errors import OutputError
from node.outputs._common import SeriesSpec
from node.outputs.gsps import build_presentation_state
from node.outputs.mgcad import OperatingPointLike, build_cad_failure_report, build_cad_report
from node.outputs.minimal import build_minimal_failure_report
from node.outputs.sc import SecondaryCaptureStyle, build_secondary_capture
from node.outputs.sr import build_failure_report, build_measurement_report
from node.outputs.uids import derive_uid
from node.results import StudyResult

__all__ = [
    "ResultObject",
    "build_failure_outputs",
    "build_minimal_failure_outputs",
    "build_outputs",
]

log = structlog.get_logger(__name__)


#: Model name and version written into a failure report when no model is known.
_NO_MODEL = ("Breast AI Node", __version__)


@dataclass(frozen=True)
class ResultObject:
    """One built object: its kind, the dataset, and the source image it was made from
    (``""`` for study-level objects)."""

    kind: OutputKind
    dataset: Dataset
    source_sop_instance_uid: str = ""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def filename(self) -> str:
        """A file name for a folder destination: ``<kind>-<SOP Instance UID>.dcm``."""
        return f"{self.kind}-{self.sop_instance_uid}.dcm"


def _series(
    settings: OutputSettings,
    kind: OutputKind,
    study_uid: str,
    revision: int,
    model: tuple[str, str],
    *,
    object_kind: str | None = None,
    source_uid: str = "",
    instance_number: int = 1,
) -> SeriesSpec:
    """Series and SOP Instance UIDs of one object of ``model`` (name, version): each
    model's objects of a kind form their own series."""
    name, version = model
    return SeriesSpec(
        series_uid=derive_uid(study_uid, revision, f"{kind}-series", version, model_name=name),
        number=getattr(settings, f"{kind}_series_number"),
        description=getattr(settings, f"{kind}_series_description"),
        sop_uid=derive_uid(
            study_uid, revision, object_kind or kind, version, source_uid, model_name=name
        ),
        instance_number=instance_number,
    )


def _dated(objects: list[ResultObject]) -> list[ResultObject]:
    """Give each object's series the date and time its content was made.

    Series Date/Time are optional in the General Series module, but archives and
    viewers (Orthanc Explorer among them) group and sort a study's series by them.
    """
    for obj in objects:
        ds = obj.dataset
        date = ds.get("ContentDate") or ds.get("InstanceCreationDate")
        time = ds.get("ContentTime") or ds.get("InstanceCreationTime")
        if date and "SeriesDate" not in ds:
            ds.SeriesDate = date
            if time:
                ds.SeriesTime = time
    return objects


def _is_mammogram(ds: Dataset) -> bool:
    return str(ds.get("Modality", "")).strip().upper() == "MG"


def build_outputs(
    result: StudyResult,
    sources: Sequence[Dataset],
    settings: OutputSettings,
    *,
    revision: int = 0,
    intended_use: str | None = None,
    failed_sources: Sequence[Dataset] = (),
    operating_points: Sequence[OperatingPointLike] = (),
) -> list[ResultObject]:
    """Every configured object for ``result``.

    ``sources``: the evaluated images, one dataset each (header only will do; with
    pixel data when ``sc`` is configured and the image results carry no display
    copy). ``failed_sources``: eligible
    images that could not be evaluated (the CAD SR then says "Partially
    Succeeded"). ``intended_use``: the model card's statement, written into the
    TID 1500 report. ``operating_points``: the model card's, listed in the CAD SR's
    operating point table. Only regions at or above the result's operating point are
    marks (:meth:`~node.results.StudyResult.marks`). Raises :class:`OutputError`
    naming the problem.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = [i.sop_instance_uid for i in result.images if i.sop_instance_uid not in by_uid]
    if missing:
        raise OutputError(f"sources: no dataset for evaluated image {missing[0]}")
    study, version = result.study_uid, result.model_version
    model = (result.model_name, version)
    objects: list[ResultObject] = []

    if "sr" in settings.objects:
        sr = build_measurement_report(
            result,
            sources,
            _series(settings, "sr", study, revision, model),
            intended_use=intended_use,
        )
        objects.append(ResultObject("sr", sr))

    if "mgcad" in settings.objects:
        mammograms = tuple(i for i in result.images if _is_mammogram(by_uid[i.sop_instance_uid]))
        if mammograms:
            mg_result = dataclasses.replace(result, images=mammograms)
            cad = build_cad_report(
                mg_result,
                [by_uid[i.sop_instance_uid] for i in mammograms],
                _series(settings, "mgcad", study, revision, model),
                failed_sources=[ds for ds in failed_sources if _is_mammogram(ds)],
                operating_points=operating_points,
                unmarked_regions=settings.unmarked_regions,
            )
            objects.append(ResultObject("mgcad", cad))
        else:
            log.info("outputs.mgcad_not_applicable", study_uid=study, reason="no mammograms")

    style = SecondaryCaptureStyle(
        settings.colormap,
        settings.opacity,
        settings.sc_size,
        settings.heatmap_below_operating_point,
    )
    for number, image in enumerate(result.images, start=1):
        source = by_uid[image.sop_instance_uid]
        if "sc" in settings.objects:
            if image.display is None and "PixelData" not in source:
                raise OutputError(
                    f"sources: {image.sop_instance_uid} has no pixel data for the secondary capture"
                )
            series = _series(
                settings,
                "sc",
                study,
                revision,
                model,
                source_uid=image.sop_instance_uid,
                instance_number=number,
            )
            sc = build_secondary_capture(
                source,
                display=image.display,
                heatmap=image.heatmap_original()
                if image.display is None
                else image.heatmap_display(),
                marks=result.marks(image),
                probability=image.probability,
                model_name=result.model_name,
                model_version=version,
                style=style,
                series=series,
                operating_point=result.operating_point,
                threshold=result.threshold,
                positive=result.image_positive(image),
            )
            objects.append(ResultObject("sc", sc, image.sop_instance_uid))
        if "gsps" in settings.objects and int(source.get("SamplesPerPixel", 1) or 1) == 1:
            series = _series(
                settings,
                "gsps",
                study,
                revision,
                model,
                source_uid=image.sop_instance_uid,
                instance_number=number,
            )
            pr = build_presentation_state(
                source,
                result.marks(image),
                series,
                model_name=result.model_name,
                model_version=version,
            )
            objects.append(ResultObject("gsps", pr, image.sop_instance_uid))

    log.info(
        "outputs.built",
        study_uid=study,
        revision=revision,
        objects=len(objects),
        kinds=sorted({o.kind for o in objects}),
    )
    return _dated(objects)


def build_failure_outputs(
    sources: Sequence[Dataset],
    reason: str,
    settings: OutputSettings,
    *,
    revision: int = 0,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[ResultObject]:
    """The report for a study that failed or was skipped after eligibility.

    A TID 1500 SR whose text gives ``reason`` and, for mammograms when ``mgcad``
    is configured, a Mammography CAD SR with CAD processing status "Failed".
    Nothing when ``settings.failure_report`` is off. ``sources`` are the study's
    eligible images (headers are enough).
    """
    if not settings.failure_report:
        return []
    if not sources:
        raise OutputError("sources: a failure report needs the study's images")
    name, version = (model_name or _NO_MODEL[0], model_version or _NO_MODEL[1])
    study = str(sources[0].StudyInstanceUID)
    sr = build_failure_report(
        sources,
        reason,
        _series(settings, "sr", study, revision, (name, version), object_kind="sr-failure"),
        model_name=name,
        model_version=version,
    )
    objects = [ResultObject("sr", sr)]
    mammograms = [ds for ds in sources if _is_mammogram(ds)]
    if "mgcad" in settings.objects and mammograms:
        cad = build_cad_failure_report(
            mammograms,
            reason,
            _series(
                settings, "mgcad", study, revision, (name, version), object_kind="mgcad-failure"
            ),
            model_name=name,
            model_version=version,
        )
        objects.append(ResultObject("mgcad", cad))
    log.info("outputs.failure_report", study_uid=study, revision=revision, objects=len(objects))
    return _dated(objects)


def build_minimal_failure_outputs(
    study_uid: str,
    reason: str,
    settings: OutputSettings,
    *,
    revision: int = 0,
    accession_number: str | None = None,
    source: Dataset | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[ResultObject]:
    """The failure report when :func:`build_failure_outputs` cannot be built: a Basic Text
    SR (:mod:`node.outputs.minimal`) that needs only the Study Instance UID. ``source``:
    one image header for the patient and study attributes, if any could be read.
    Nothing when ``settings.failure_report`` is off."""
    if not settings.failure_report:
        return []
    name, version = (model_name or _NO_MODEL[0], model_version or _NO_MODEL[1])
    series = _series(settings, "sr", study_uid, revision, (name, version), object_kind="sr-minimal")
    report = build_minimal_failure_report(
        study_uid,
        reason,
        series,
        model_name=name,
        model_version=version,
        accession_number=accession_number,
        source=source,
    )
    log.info("outputs.minimal_failure_report", study_uid=study_uid, revision=revision)
    return [ResultObject("sr", report)]
