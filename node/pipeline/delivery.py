"""Delivering result objects to the destinations, with retries and exponential backoff.

One :meth:`Sender.step` claims up to ``sending.batch_studies`` studies in ``sending``
that have a delivery due, and works through their due deliveries destination by
destination: one association per DICOM destination (C-STORE of exactly the SOP
classes needed, in Explicit VR Little Endian), one STOW-RS request per DICOMweb
destination (:mod:`node.dicom.dicomweb`), or atomic file writes for a folder destination
(``<folder>/<StudyInstanceUID>/<kind>-<SOPInstanceUID>.dcm``, files ``0600`` in folders
``0700``, like the spool: they carry the patient's name and ID). Every
attempt is recorded on its delivery row. A failed attempt is retried after
``backoff_initial_seconds * 2**(attempts - 1)`` seconds (at most
``backoff_max_seconds``), up to ``sending.max_attempts`` attempts.

Destinations are independent: an unreachable one only delays its own deliveries. A
study ends when none of its deliveries is pending: ``done`` when all were sent (for
a failure report: ``failed`` with the inference failure as the reason), ``failed``
naming each destination that could not be reached, and why, otherwise.

Idempotent: a delivery recorded as sent is never sent again; one whose outcome was
lost in a crash is sent again with the same SOP Instance UID and file name. A sender
that lost its claim on a study (its lease ran out by the database's clock and another
sender took the study over) sends nothing more of it and records nothing: before each
destination's batch it checks that it still holds each study, and an attempt is
recorded only while it does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from pydicom.dataset import Dataset

from node.config import (
    DicomDestination,
    DicomwebDestination,
    FolderDestination,
    SendingSettings,
    Settings,
)
from node.db import (
    AttemptOutcome,
    DeliveryRef,
    SessionFactory,
    StudyRef,
    StudyState,
    claim_sending,
    due_deliveries,
    finish_sending,
    held_claims,
    record_attempts,
    utcnow,
)
from node.dicom.dicomweb import store_over_dicomweb
from node.dicom.scu import Peer, StoreOutcome, store_datasets
from node.errors import SendError
from node.imaging.dataset import read_dataset
from node.pipeline.lease import keep_leases
from node.spool import DIR_MODE, FILE_MODE, Spool, uid_component, write_atomically

__all__ = ["Sender", "backoff_seconds", "write_file_atomically"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Item:
    study: StudyRef
    delivery: DeliveryRef


def backoff_seconds(attempts: int, settings: SendingSettings) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1, 2, ...) before the next one."""
    exponent = min(max(attempts - 1, 0), 60)  # 2**60 s is far beyond any configured maximum
    return float(min(settings.backoff_initial_seconds * 2**exponent, settings.backoff_max_seconds))


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, old or whole.

    A hidden temporary file in the same folder is written, fsynced and renamed over
    ``path``, then the folder is fsynced. Result objects carry the patient's name and ID:
    like the spool, the file is readable by the service user only (``0600``) and every
    folder this creates is accessible by it only (``0700``), whatever the umask; folders
    that exist already (the destination's own, made by an administrator) keep their mode.
    Raises :class:`OSError`.
    """
    _private_folders(path.parent)
    # one temporary name per target: the retry after a crash mid-write reuses and
    # renames it, so no half-written file is left behind in the destination folder; it is
    # made anew, so that it has the mode asked for whatever an earlier one had
    tmp = path.parent / f".{path.name}.part"
    tmp.unlink(missing_ok=True)
    write_atomically(path, [data], tmp=tmp, mode=FILE_MODE)


def _private_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents with mode ``0700``."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(created, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened


class Sender:
    """Delivers pending result objects; one instance per node process."""

    def __init__(
        self, settings: Settings, session_factory: SessionFactory, spool: Spool, worker_id: str
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.spool = spool
        self.worker_id = worker_id
        self._destinations = {d.name: d for d in settings.destinations}

    def step(self) -> int:
        """Claim studies with deliveries due, attempt them, record the outcomes.

        Returns how many studies were claimed (0: nothing was due).
        """
        sending = self.settings.sending
        lease = self.settings.queue.lease_seconds
        studies = claim_sending(self.session_factory, self.worker_id, lease, sending.batch_studies)
        if not studies:
            return 0
        with keep_leases(self.session_factory, studies, lease):
            by_destination: dict[str, list[_Item]] = {}
            for study in studies:
                for delivery in due_deliveries(self.session_factory, study):
                    by_destination.setdefault(delivery.destination, []).append(
                        _Item(study, delivery)
                    )
            # destinations in parallel: a PACS that takes its time to time out must not
            # hold back a folder or another PACS
            names, batches = list(by_destination), list(by_destination.values())
            with ThreadPoolExecutor(max(len(names), 1), "deliver") as pool:
                for outcomes in pool.map(self._deliver, names, batches):
                    if outcomes:
                        record_attempts(self.session_factory, outcomes, holder=self.worker_id)
        for study in studies:
            self._finish(study)
        return len(studies)

    # ------------------------------------------------------------- delivering
    def _deliver(self, name: str, items: Sequence[_Item]) -> list[AttemptOutcome]:
        items = self._still_held(name, items)
        if not items:
            return []
        destination = self._destinations.get(name)
        if destination is None:
            error = f"destination {name} is no longer configured"
            results = [StoreOutcome(None, error) for _ in items]
        elif isinstance(destination, FolderDestination):
            results = [self._to_folder(destination, item) for item in items]
        elif isinstance(destination, DicomwebDestination):
            web = destination
            results = self._to_network(name, items, lambda ds: store_over_dicomweb(web, ds))
        else:
            results = self._to_dicom(destination, items)
        now = utcnow()
        outcomes = [
            self._outcome(item, result, now, retry=destination is not None)
            for item, result in zip(items, results, strict=True)
        ]
        _log_pass(name, items, outcomes)
        return outcomes

    def _still_held(self, name: str, items: Sequence[_Item]) -> list[_Item]:
        """The items whose study this sender still holds, its lease running by the
        database's clock: no other sender can claim those before this one is done. The
        others are neither sent nor recorded (their new holder does both)."""
        held = held_claims(self.session_factory, {item.study for item in items})
        lost = sorted({item.study.study_uid for item in items if item.study.id not in held})
        if lost:
            log.warning(
                "sending.lease_lost",
                destination=name,
                studies=lost,
                consequence="not sent; the study's new holder sends it",
            )
        return [item for item in items if item.study.id in held]

    def _outcome(
        self, item: _Item, result: StoreOutcome, now: datetime, *, retry: bool
    ) -> AttemptOutcome:
        delivery = item.delivery
        if result.ok:
            return AttemptOutcome(delivery.id, sent=True, status=result.status)
        attempts = delivery.attempts + 1
        error = result.error or "unknown error"
        retry_at = None
        if retry and attempts < self.settings.sending.max_attempts:
            retry_at = now + timedelta(seconds=backoff_seconds(attempts, self.settings.sending))
        return AttemptOutcome(
            delivery.id, sent=False, status=result.status, error=error, retry_at=retry_at
        )

    def _to_folder(self, destination: FolderDestination, item: _Item) -> StoreOutcome:
        source = self.spool.path(item.delivery.path)
        target = destination.folder / uid_component(item.study.study_uid) / source.name
        try:
            write_file_atomically(target, source.read_bytes())
        except OSError as exc:
            return StoreOutcome(None, f"cannot write {target}: {exc.strerror or exc}")
        return StoreOutcome(0x0000)

    def _to_dicom(
        self, destination: DicomDestination, items: Sequence[_Item]
    ) -> list[StoreOutcome]:
        sending = self.settings.sending
        peer = Peer(
            host=destination.host,
            port=destination.port,
            ae_title=destination.ae_title,
            calling_ae_title=self.settings.node.ae_title,
            acse_timeout=sending.acse_timeout,
            dimse_timeout=sending.dimse_timeout,
            network_timeout=sending.network_timeout,
            max_pdu=sending.max_pdu,
            tls=destination.tls,
        )
        return self._to_network(destination.name, items, lambda ds: store_datasets(peer, ds))

    def _to_network(
        self,
        name: str,
        items: Sequence[_Item],
        store: Callable[[Sequence[Dataset]], list[StoreOutcome]],
    ) -> list[StoreOutcome]:
        """Read each item's file and ``store`` them together (C-STORE or STOW-RS); one
        outcome per item, in order. A file that cannot be read fails alone."""
        results: list[StoreOutcome | None] = []
        datasets: list[Dataset] = []
        for item in items:
            try:
                path = self.spool.path(item.delivery.path)
                datasets.append(read_dataset(path, error=SendError, what="result file"))
                results.append(None)
            except SendError as exc:
                results.append(StoreOutcome(None, str(exc)))
        sent: list[StoreOutcome] = []
        if datasets:
            try:
                sent = store(datasets)
            except SendError as exc:
                sent = [StoreOutcome(None, str(exc))] * len(datasets)
            except Exception as exc:  # the network stack can fail in many ways
                log.exception("delivery.crashed", destination=name)
                sent = [StoreOutcome(None, f"{type(exc).__name__}: {exc}")] * len(datasets)
        answers = iter(sent)
        return [result if result is not None else next(answers) for result in results]

    # -------------------------------------------------------------- finishing
    def _finish(self, study: StudyRef) -> None:
        bound = log.bind(study_uid=study.study_uid, generation=study.generation)
        moved = finish_sending(self.session_factory, study)
        if moved is None:
            bound.info("sending.superseded", reason="study changed while it was delivered")
        elif moved.state is StudyState.DONE:
            bound.info("study.done")
        elif moved.state is StudyState.FAILED:
            bound.error("study.failed", reason=moved.reason)


def _log_pass(destination: str, items: Sequence[_Item], outcomes: Sequence[AttemptOutcome]) -> None:
    """One log line per study and destination: what was sent, retried or given up."""
    by_study: dict[str, list[tuple[DeliveryRef, AttemptOutcome]]] = {}
    for item, outcome in zip(items, outcomes, strict=True):
        by_study.setdefault(item.study.study_uid, []).append((item.delivery, outcome))
    for study_uid, pairs in by_study.items():
        bound = log.bind(study_uid=study_uid, destination=destination)
        sent = sum(1 for _, o in pairs if o.sent)
        if sent:
            bound.info("delivery.sent", objects=sent)
        failed = [(d, o) for d, o in pairs if not o.sent]
        if not failed:
            continue
        delivery, outcome = failed[-1]
        context = {
            "objects": len(failed),
            "attempts": delivery.attempts + 1,
            "error": outcome.error,
            "status": outcome.status,
        }
        if outcome.retry_at is None:
            bound.error("delivery.failed", **context)
        else:
            wait = (outcome.retry_at - utcnow()).total_seconds()
            bound.warning("delivery.retry", retry_in_s=round(max(wait, 0.0), 3), **context)
