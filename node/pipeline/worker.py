"""The inference worker: queued studies in, stored results and pending deliveries out.

One :meth:`InferenceWorker.step` claims up to ``worker.batch_studies`` queued studies
(``queued`` -> ``processing``, under a lease kept alive while it works), infers them
together, builds their result objects, writes them to the spool and then, per study,
stores the result, creates one delivery per destination and object, and moves the
study to ``sending`` in one transaction (:func:`node.db.save_result`).

With ``worker.pipeline`` (the default) a step hands the claim of the next batch, and
the decoding and preprocessing of its images, to a second thread before it infers its
own: decoding, which is single-threaded Python and codec work, then overlaps the
model's forward passes. When it finds a next batch, the current batch's result
objects are then built and stored by a third thread while the next step infers. The
prefetched studies are claimed and leased like any others; :meth:`InferenceWorker.close`
waits for the results being stored and gives prefetched studies back to the queue.

Each eligible image goes to its model (:class:`~node.inference.modelset.ModelSet`: the
model whose card lists its modality, or the one its eligibility rule names), so a study
with mammograms and ultrasound images is inferred part by part, each part by its own
model, and its result (:class:`~node.results.CombinedResult`) holds one part per model:
each part gets its own result objects, and its reports say which model reports the
rest. An image no model accepts fails its study, or with ``eligibility.without_model:
skip`` is left out and named in the reports.

A study that cannot be inferred or rendered is never dropped silently: it gets a
failure report (when ``outputs.failure_report`` is on), delivered like a result, after
which the study ends ``failed`` with the reason. When the full report cannot be built
from the images' headers, a minimal one that needs nothing from them is sent instead
(:mod:`node.outputs.minimal`). A crash at any point leaves the study
in ``processing`` under a lease that expires; the study is then claimed again and
rebuilt with the same UIDs (they are derived from the study, the generation, the kind,
the source image and the model version), so nothing is duplicated. A study claimed more
than ``worker.max_attempts`` times in one generation is failed instead (with its failure
report): an image that kills the process must not be claimed after every restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pydicom
import structlog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian

from node.config import Settings
from node.db import (
    InstanceFacts,
    NewDelivery,
    NewResult,
    ResultOutcome,
    SessionFactory,
    StudyRef,
    StudyState,
    claim_next,
    held_claims,
    save_result,
    unclaim,
)
from node.db.reads import instances_of
from node.errors import NodeError, OutputError
from node.imaging.dataset import read_dataset
from node.inference.engine import (
    ImageInput,
    InferenceEngine,
    PreparedStudies,
    StudyInferenceError,
    StudyInput,
)
from node.inference.modelset import ModelSet
from node.outputs import (
    ResultObject,
    build_failure_outputs,
    build_minimal_failure_outputs,
    build_outputs,
)
from node.outputs.pictures import study_pictures
from node.pipeline.eligibility import rule_of
from node.pipeline.lease import keep_leases
from node.results import CombinedResult, LeftOut, StudyResult, combine
from node.spool import Spool

__all__ = ["InferenceWorker", "encode_object"]

log = structlog.get_logger(__name__)

#: SOP class UID prefixes of objects that are never images to infer: structured
#: reports, presentation states, encapsulated documents, raw data and segmentations
#: (our own results among them, should the archive send them back).
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.66",
)


#: Longest model name (and version) list a result row holds (its column's size).
_MODEL_COLUMN = 64


@dataclass(frozen=True)
class _Claimed:
    """A claimed study, its eligible images, and which model infers which of them."""

    study: StudyRef
    images: tuple[InstanceFacts, ...]
    routes: tuple[tuple[InferenceEngine, tuple[InstanceFacts, ...]], ...] = ()
    """Per model, in the order of ``models``: the images it infers."""
    left_out: tuple[LeftOut, ...] = ()
    """Images no model infers (``eligibility.without_model: skip``)."""


@dataclass(frozen=True)
class _Prepared:
    """One model's share of a batch: the claimed studies (by index) it has images of,
    and those images decoded and preprocessed for it."""

    engine: InferenceEngine
    indices: tuple[int, ...]
    studies: PreparedStudies


@dataclass(frozen=True)
class _Batch:
    """Studies claimed together under kept leases, their images ready for the models."""

    studies: tuple[StudyRef, ...]
    claimed: tuple[_Claimed, ...]
    """The studies with images to infer (the others already got their failure)."""
    prepared: tuple[_Prepared, ...] | str
    """The decoded and preprocessed images per model, or why preparing them crashed."""
    prepare_s: float
    leases: ExitStack


_Outcome = CombinedResult | StudyInferenceError
"""A claimed study's result, part by part, or why it could not be inferred."""


def _clip(text: str) -> str:
    """``text`` cut to a result row's model column (names are rarely that long)."""
    return text if len(text) <= _MODEL_COLUMN else text[: _MODEL_COLUMN - 3] + "..."


def encode_object(obj: ResultObject) -> bytes:
    """The object as a DICOM file (Part 10, Explicit VR Little Endian)."""
    ds = obj.dataset
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = DicomBytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class InferenceWorker:
    """Claims queued studies and turns them into stored results with pending deliveries."""

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory,
        spool: Spool,
        models: ModelSet | InferenceEngine,
        worker_id: str,
        on_result: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.spool = spool
        self.models = (
            models
            if isinstance(models, ModelSet)
            else ModelSet([models], settings.eligibility.rules)
        )
        self.worker_id = worker_id
        self.on_result = on_result
        self._prefetch: Future[_Batch | None] | None = None
        self._finishing: Future[None] | None = None
        pipeline = settings.worker.pipeline
        self._prefetcher = ThreadPoolExecutor(1, "prefetch") if pipeline else None
        self._finisher = ThreadPoolExecutor(1, "results") if pipeline else None

    def step(self) -> int:
        """Claim up to ``worker.batch_studies`` queued studies and process them together.

        With ``worker.pipeline`` the next batch is claimed, decoded and preprocessed in a
        second thread while this one is inferred, and when there is a next batch, this
        one's result objects are built and stored in a third thread while the next step
        infers. Returns how many studies this step took on (0: the queue was empty).
        """
        batch = self._take_prefetched()
        if batch is None:
            batch = self._claim_batch()
        if batch is None:
            self._wait_finished()
            return 0
        try:
            if self._prefetcher is not None:
                self._prefetch = self._prefetcher.submit(self._claim_batch)
            outcomes, infer_s = self._infer(batch)
        except BaseException:
            batch.leases.close()
            raise
        self._wait_finished()  # at most one batch is rendered while another is inferred
        if self._finisher is not None and self._next_is_ready():
            self._finishing = self._finisher.submit(self._finish, batch, outcomes, infer_s)
        else:
            self._finish(batch, outcomes, infer_s)
        return len(batch.studies)

    def close(self) -> None:
        """Finish the batch being rendered, return prefetched studies to the queue, stop."""
        self._wait_finished()
        batch = self._take_prefetched()
        if batch is not None:
            try:
                for study in batch.studies:
                    if unclaim(self.session_factory, study) is not None:
                        log.info("worker.unclaimed", study_uid=study.study_uid)
            finally:
                batch.leases.close()
        for pool in (self._prefetcher, self._finisher):
            if pool is not None:
                pool.shutdown(wait=True)
        self._prefetcher = self._finisher = None

    # ----------------------------------------------------------------- stages
    def _take_prefetched(self) -> _Batch | None:
        future, self._prefetch = self._prefetch, None
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # claims it made expire with their leases and are retried
            log.exception("worker.prefetch_crashed")
            return None

    def _claim_batch(self) -> _Batch | None:
        """Claim queued studies, keep their leases, decode and preprocess their images."""
        studies: list[StudyRef] = []
        while len(studies) < self.settings.worker.batch_studies:
            study = claim_next(
                self.session_factory,
                self.worker_id,
                StudyState.QUEUED,
                StudyState.PROCESSING,
                self.settings.queue.lease_seconds,
            )
            if study is None:
                break
            studies.append(study)
        if not studies:
            return None
        leases = ExitStack()
        leases.enter_context(
            keep_leases(self.session_factory, studies, self.settings.queue.lease_seconds)
        )
        try:
            claimed: list[_Claimed] = []
            for study in studies:
                images = self._eligible_images(study)
                if self._given_up(study, images):
                    continue
                if not images:
                    self._fail(study, (), "no eligible images to infer")
                    continue
                routed = self._route(study, images)
                if routed is not None:
                    claimed.append(routed)
            start = time.perf_counter()
            prepared: tuple[_Prepared, ...] | str
            try:
                prepared = self._prepare(claimed)
            except Exception as exc:  # a bug: fail these studies, say so
                log.exception("inference.prepare_crashed", studies=[s.study_uid for s in studies])
                prepared = f"internal error preparing images: {type(exc).__name__}: {exc}"
            return _Batch(
                tuple(studies), tuple(claimed), prepared, time.perf_counter() - start, leases
            )
        except BaseException:
            leases.close()
            raise

    def _route(self, study: StudyRef, images: tuple[InstanceFacts, ...]) -> _Claimed | None:
        """Which model infers which of the study's images; ``None`` when the study failed
        instead (an image no model accepts, or none left to infer)."""
        rules = self.settings.eligibility.rules
        skip = self.settings.eligibility.without_model == "skip"
        shares: dict[str, list[InstanceFacts]] = {}
        left_out: list[LeftOut] = []
        for image in images:
            rule = rule_of(image, rules)
            rule_name = rule.name if rule is not None else None
            engine = self.models.engine_for(image.modality, rule_name)
            if engine is not None:
                shares.setdefault(engine.card.name, []).append(image)
                continue
            reason = self.models.no_model_reason(image.modality, rule_name)
            if not skip:
                self._fail(study, images, f"image {image.sop_instance_uid}: {reason}")
                return None
            modality = (image.modality or "").strip().upper() or "(none)"
            left_out.append(LeftOut(image.sop_instance_uid, modality, f"{reason}; skipped"))
        if not shares:
            reasons = "; ".join(f"image {i.sop_instance_uid}: {i.reason}" for i in left_out)
            self._fail(study, images, f"no image left to infer ({reasons})")
            return None
        routes = tuple(
            (engine, tuple(shares[engine.card.name]))
            for engine in self.models
            if engine.card.name in shares
        )
        return _Claimed(study, images, routes, tuple(left_out))

    def _prepare(self, claimed: Sequence[_Claimed]) -> tuple[_Prepared, ...]:
        """Each model decodes and preprocesses its images of the claimed studies."""
        prepared = []
        for engine in self.models:
            indices: list[int] = []
            inputs: list[StudyInput] = []
            for index, item in enumerate(claimed):
                share = next((imgs for e, imgs in item.routes if e is engine), ())
                if not share:
                    continue
                indices.append(index)
                inputs.append(
                    StudyInput(
                        item.study.study_uid,
                        tuple(
                            ImageInput(self.spool.path(i.path), i.sop_instance_uid) for i in share
                        ),
                    )
                )
            if inputs:
                prepared.append(_Prepared(engine, tuple(indices), engine.prepare(inputs)))
        return tuple(prepared)

    def _given_up(self, study: StudyRef, images: Sequence[InstanceFacts]) -> bool:
        """Fail a study claimed more than ``worker.max_attempts`` times in this generation
        (each earlier worker stopped without finishing it: an image that kills the process
        would otherwise be claimed after every restart); True when it did."""
        limit = self.settings.worker.max_attempts
        if study.attempts <= limit:
            return False
        reason = (
            f"gave up after {limit} attempts to infer it: each time, the process inferring "
            "it stopped before it finished (crashed, was killed or lost its lease; "
            "worker.max_attempts)"
        )
        self._fail(study, images, reason)
        return True

    def _next_is_ready(self) -> bool:
        """Whether the prefetch found another batch (waits for it to finish claiming)."""
        future = self._prefetch
        if future is None:
            return False
        try:
            return future.result() is not None
        except Exception:
            return False

    def _wait_finished(self) -> None:
        future, self._finishing = self._finishing, None
        if future is not None:
            future.result()

    def _infer(self, batch: _Batch) -> tuple[list[_Outcome], float]:
        """The outcome per claimed study (every part of it inferred by its model), and the
        seconds it took."""
        claimed = batch.claimed
        start = time.perf_counter()
        if isinstance(batch.prepared, str):
            failed = [StudyInferenceError(c.study.study_uid, batch.prepared) for c in claimed]
            return list(failed), time.perf_counter() - start
        parts: list[list[StudyResult | StudyInferenceError]] = [[] for _ in claimed]
        several = len(self.models) > 1
        for share in batch.prepared:
            name = share.engine.card.name
            try:
                results = share.engine.infer_prepared(share.studies)
            except Exception as exc:  # a bug or a broken runtime: fail its studies, say so
                log.exception("inference.crashed", studies=[c.study.study_uid for c in claimed])
                reason = f"internal error during inference: {type(exc).__name__}: {exc}"
                results = [StudyInferenceError(s.study_uid, reason) for s in share.studies.studies]
            for index, outcome in zip(share.indices, results, strict=True):
                if isinstance(outcome, StudyInferenceError) and several:
                    outcome = StudyInferenceError(outcome.study_uid, f"model {name}: {outcome}")
                parts[index].append(outcome)
        outcomes: list[_Outcome] = []
        for item, found in zip(claimed, parts, strict=True):
            error = next((p for p in found if isinstance(p, StudyInferenceError)), None)
            if error is not None:
                outcomes.append(error)
                continue
            done = [p for p in found if isinstance(p, StudyResult)]
            outcomes.append(combine(item.study.study_uid, done, item.left_out))
        return outcomes, time.perf_counter() - start

    def _finish(
        self,
        batch: _Batch,
        outcomes: Sequence[_Outcome],
        infer_seconds: float,
    ) -> None:
        """Build, store and hand over each study's results; then let the leases go."""
        try:
            share = max(1, len(batch.claimed))
            held = self._held([item.study for item in batch.claimed])
            for item, outcome in zip(batch.claimed, outcomes, strict=True):
                if item.study.id not in held:
                    log.warning(
                        "worker.lease_lost",
                        study_uid=item.study.study_uid,
                        consequence="nothing built or stored; the study's new holder infers it",
                    )
                    continue
                try:
                    if isinstance(outcome, CombinedResult):
                        self._succeed(item, outcome, infer_seconds / share, batch.prepare_s / share)
                    else:
                        self._fail(item.study, item.images, f"inference failed: {outcome}")
                except Exception:  # the study stays claimed; its lease expires and it is redone
                    log.exception("worker.finish_crashed", study_uid=item.study.study_uid)
        finally:
            batch.leases.close()

    def _held(self, studies: Sequence[StudyRef]) -> set[int]:
        """The studies this worker still holds (:func:`node.db.held_claims`); all of them
        when the database cannot say (storing a result is conditional on the claim anyway)."""
        try:
            return held_claims(self.session_factory, studies)
        except Exception:
            log.exception("worker.claims_unknown")
            return {study.id for study in studies}

    def _eligible_images(self, study: StudyRef) -> tuple[InstanceFacts, ...]:
        rules = self.settings.eligibility.rules
        return tuple(
            image
            for image in instances_of(self.session_factory, study.id)
            if not image.sop_class_uid.startswith(_NON_IMAGE_PREFIXES)
            and rule_of(image, rules) is not None
        )

    def _succeed(
        self, item: _Claimed, result: CombinedResult, infer_seconds: float, prepare_seconds: float
    ) -> None:
        study = item.study
        bound = log.bind(study_uid=study.study_uid, generation=study.generation)
        start = time.perf_counter()
        try:
            with_pixels = "sc" in self.settings.outputs.objects and any(
                image.display is None for image in result.images
            )
            evaluated = {image.sop_instance_uid for image in result.images}
            sources = [
                self._read(image, pixels=with_pixels)
                for image in item.images
                if image.sop_instance_uid in evaluated
            ]
            objects: list[ResultObject] = []
            for part in result.parts:
                card = self.models.named(part.model_name).card
                objects += build_outputs(
                    part,
                    sources,
                    self.settings.outputs,
                    revision=study.generation,
                    intended_use=card.intended_use,
                    operating_points=card.operating_points,
                )
            deliveries = self._write(study, objects)
            for part in result.parts:
                self._write_pictures(study, part, objects)
        except NodeError as exc:
            bound.warning("outputs.failed", reason=str(exc))
            self._fail(study, item.images, f"result objects could not be built: {exc}")
            return
        except Exception as exc:
            bound.exception("outputs.crashed")
            reason = f"internal error building results: {type(exc).__name__}: {exc}"
            self._fail(study, item.images, reason)
            return
        timings = {
            **result.timings.to_dict(),
            "worker_prepare_s": round(prepare_seconds, 6),
            "worker_inference_s": round(infer_seconds, 6),
            "outputs_s": round(time.perf_counter() - start, 6),
        }
        names, versions = result.model_names()
        stored = NewResult(
            outcome=ResultOutcome.RESULT,
            model_name=_clip(names),
            model_version=_clip(versions),
            score=result.score,
            positive=result.positive,
            assessment=result.assessment_category,
            breast_scores=result.breast_scores(),
            image_scores={i.sop_instance_uid: i.probability for i in result.images},
            detail=result.to_dict(),
            timings=timings,
        )
        moved = save_result(self.session_factory, study, stored, deliveries)
        if moved is None:
            bound.info("worker.superseded", reason="study changed while it was inferred")
            return
        bound.info(
            "study.inferred",
            state=moved.state.value,
            score=round(result.score, 4),
            positive=result.positive,
            assessment=result.assessment_category,
            models=[part.model_name for part in result.parts],
            left_out=len(result.left_out),
            objects=len(objects),
            deliveries=len(deliveries),
        )
        self._notify()

    def _fail(self, study: StudyRef, images: Sequence[InstanceFacts], reason: str) -> None:
        """Store a failure result and, when configured, a failure report to deliver."""
        bound = log.bind(study_uid=study.study_uid, generation=study.generation)
        bound.error("study.inference_failed", reason=reason)
        deliveries: list[NewDelivery] = []
        name, version = self._models_of(images)
        if self.settings.outputs.failure_report:
            try:
                deliveries = self._write(study, self._failure_report(study, images, reason))
            except Exception:  # the failure itself must still be recorded
                bound.exception("outputs.failure_report_failed")
        stored = NewResult(
            outcome=ResultOutcome.FAILURE,
            reason=reason,
            model_name=name,
            model_version=version,
            detail={"images": [i.sop_instance_uid for i in images]},
        )
        moved = save_result(self.session_factory, study, stored, deliveries)
        if moved is None:
            bound.info("worker.superseded", reason="study changed while it was inferred")
            return
        bound.info("study.failure_report", state=moved.state.value, deliveries=len(deliveries))
        self._notify()

    def _failure_report(
        self, study: StudyRef, images: Sequence[InstanceFacts], reason: str
    ) -> list[ResultObject]:
        """The full failure report from the images' headers; when it cannot be built (an
        attribute it needs is missing, no header is readable, no image is eligible), the
        minimal one (:mod:`node.outputs.minimal`), which needs nothing from them."""
        bound = log.bind(study_uid=study.study_uid, generation=study.generation)
        name, version = self._models_of(images)
        headers = [h for h in (self._read_header(i) for i in images) if h is not None]
        if headers:
            try:
                return build_failure_outputs(
                    headers,
                    reason,
                    self.settings.outputs,
                    revision=study.generation,
                    model_name=name,
                    model_version=version,
                )
            except Exception as exc:
                bound.warning(
                    "outputs.failure_report_minimal", reason=f"{type(exc).__name__}: {exc}"
                )
        else:
            bound.warning("outputs.failure_report_minimal", reason="no readable image header")
        return build_minimal_failure_outputs(
            study.study_uid,
            reason,
            self.settings.outputs,
            revision=study.generation,
            accession_number=study.accession_number,
            source=headers[0] if headers else self._any_header(study),
            model_name=name,
            model_version=version,
        )

    def _models_of(self, images: Sequence[InstanceFacts]) -> tuple[str, str]:
        """The models that infer ``images`` (every loaded model when none of them has one):
        their names and their versions, each joined by ``", "`` and clipped to what a
        result row and a report's model name hold."""
        rules = self.settings.eligibility.rules
        routed: dict[str, InferenceEngine] = {}
        for image in images:
            rule = rule_of(image, rules)
            engine = self.models.engine_for(image.modality, rule.name if rule else None)
            if engine is not None:
                routed.setdefault(engine.card.name, engine)
        engines = [e for e in self.models if e.card.name in routed] or list(self.models)
        return (
            _clip(", ".join(e.card.name for e in engines)),
            _clip(", ".join(e.card.version for e in engines)),
        )

    def _any_header(self, study: StudyRef) -> Dataset | None:
        """The first readable header of any of the study's instances (patient and study
        attributes for a minimal failure report), or ``None``."""
        try:
            instances = instances_of(self.session_factory, study.id)
        except Exception:
            log.exception("worker.instances_unreadable", study_uid=study.study_uid)
            return None
        for instance in instances:
            header = self._read_header(instance)
            if header is not None:
                return header
        return None

    def _notify(self) -> None:
        """Tell the sender a result is waiting (it would otherwise find it at its next run)."""
        if self.on_result is not None:
            try:
                self.on_result()
            except Exception:
                log.exception("worker.notify_failed")

    # -------------------------------------------------------------- file I/O
    def _read(self, image: InstanceFacts, *, pixels: bool) -> Dataset:
        return read_dataset(
            self.spool.path(image.path),
            pixels=pixels,
            error=OutputError,
            what=f"source image {image.sop_instance_uid}",
        )

    def _read_header(self, image: InstanceFacts) -> Dataset | None:
        """The image's header for a failure report, or ``None`` when it cannot be read."""
        try:
            return self._read(image, pixels=False)
        except OutputError as exc:
            log.warning("worker.unreadable_source", reason=str(exc))
        except Exception as exc:  # whatever a damaged file raises: the report goes on
            log.warning("worker.unreadable_source", reason=f"{type(exc).__name__}: {exc}")
        return None

    def _write_pictures(
        self, study: StudyRef, result: StudyResult, objects: Sequence[ResultObject]
    ) -> None:
        """The study page's pictures, made now from the display copies and the SCs just
        built (a failure here costs the page its pictures, never the study its result)."""
        try:
            captures = [obj.dataset for obj in objects if obj.kind == "sc"]
            for picture in study_pictures(result, captures):
                relative = self.spool.picture_path(study.study_uid, study.generation, picture.name)
                self.spool.write(relative, [picture.png])
        except Exception:
            log.exception("worker.pictures_failed", study_uid=study.study_uid)

    def _write(self, study: StudyRef, objects: Sequence[ResultObject]) -> list[NewDelivery]:
        """Write every object to the spool durably; one delivery per destination that wants it."""
        deliveries: list[NewDelivery] = []
        for obj in objects:
            relative = self.spool.result_path(study.study_uid, study.generation, obj.filename)
            self.spool.write(relative, [encode_object(obj)])
            deliveries.extend(
                NewDelivery(
                    destination=destination.name,
                    sop_instance_uid=obj.sop_instance_uid,
                    sop_class_uid=str(obj.dataset.SOPClassUID),
                    kind=obj.kind,
                    path=relative,
                )
                for destination in self.settings.destinations
                if obj.kind in destination.objects
            )
        return deliveries
