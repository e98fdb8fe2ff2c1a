"""Admin operations behind ``breast-node studies|show|retry|reprocess|purge|audit``.

Each function takes the session factory (and the spool where files are touched), does
one thing in as few transactions as it can, and returns plain data that the CLI prints
and the status page renders. Studies are identified by Study Instance UID and accession
number only: nothing here reads or returns patient names or IDs.

``retry`` of a failed study re-sends when the failure was a delivery (its failed
deliveries go back to pending with fresh attempts; the results are not rebuilt), and
re-infers it as a new generation otherwise (the inference or its result objects
failed). ``reprocess`` always re-infers as a new generation, whose results supersede the
earlier ones (pending deliveries of an earlier generation are never sent).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, select, update

from node.db import (
    Delivery,
    DeliveryState,
    Instance,
    Result,
    SessionFactory,
    Study,
    StudyEvent,
    StudyState,
    add_event,
    deliveries_of,
    events_of,
    results_of,
    utcnow,
)
from node.db.audit import audit_events, delete_audit_before
from node.db.models import AuditEvent
from node.errors import NodeError
from node.spool import Spool, uid_component

__all__ = [
    "FINISHED",
    "PurgeReport",
    "StudyRow",
    "list_studies",
    "purge",
    "queue_waits",
    "reprocess",
    "retry",
    "retry_failed",
    "show_study",
]

#: States a study ends in; only these are purged.
FINISHED = (StudyState.DONE.value, StudyState.FAILED.value, StudyState.SKIPPED.value)


@dataclass(frozen=True)
class StudyRow:
    """One line of the study list (``studies``, the status page)."""

    study_uid: str
    accession_number: str | None
    state: str
    reason: str | None
    generation: int
    instances: int
    first_received_at: str
    state_changed_at: str
    score: float | None = None
    positive: bool | None = None
    assessment: str | None = None
    model: str | None = None
    inference_seconds: float | None = None
    queue_wait_seconds: float | None = None
    deliveries: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _study(session: Any, study_uid: str) -> Study:
    row = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if row is None:
        raise NodeError(f"no study with Study Instance UID {study_uid}")
    assert isinstance(row, Study)
    return row


def queue_waits(
    session_factory: SessionFactory, study_ids: Iterable[int] | None = None
) -> dict[int, list[float]]:
    """Seconds each study waited in ``queued`` before a worker claimed it, per generation.

    Read from the event log: a ``state`` event into ``queued`` and the next ``claimed``
    event from ``queued``.
    """
    query = (
        select(StudyEvent.study_id, StudyEvent.at, StudyEvent.kind, StudyEvent.detail)
        .where(StudyEvent.kind.in_(("state", "claimed", "reprocess")))
        .order_by(StudyEvent.study_id, StudyEvent.id)
    )
    if study_ids is not None:
        query = query.where(StudyEvent.study_id.in_(list(study_ids)))
    waits: dict[int, list[float]] = {}
    queued_at: dict[int, datetime] = {}
    with session_factory() as session:
        for study_id, at, kind, detail in session.execute(query):
            data = json.loads(detail)
            if kind == "reprocess" or (kind == "state" and data.get("to") == "queued"):
                queued_at[study_id] = at
            elif kind == "claimed" and data.get("from") == "queued" and study_id in queued_at:
                wait = (at - queued_at.pop(study_id)).total_seconds()
                waits.setdefault(study_id, []).append(max(wait, 0.0))
    return waits


def list_studies(
    session_factory: SessionFactory,
    *,
    state: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[StudyRow]:
    """Studies that changed most recently, newest first, with their current result."""
    query = select(Study).order_by(Study.state_changed_at.desc(), Study.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Study.state == state)
    if since is not None:
        query = query.where(Study.state_changed_at >= since)
    with session_factory() as session:
        studies = list(session.scalars(query))
        ids = [s.id for s in studies]
        results = {
            (r.study_id, r.generation): r
            for r in session.scalars(select(Result).where(Result.study_id.in_(ids)))
        }
        counts: dict[int, dict[str, int]] = {i: {} for i in ids}
        generation = {s.id: s.generation for s in studies}
        for study_id, gen, delivery_state, count in session.execute(
            select(Delivery.study_id, Delivery.generation, Delivery.state, func.count())
            .where(Delivery.study_id.in_(ids))
            .group_by(Delivery.study_id, Delivery.generation, Delivery.state)
        ):
            if generation[study_id] == gen:
                counts[study_id][delivery_state] = int(count)
    waits = queue_waits(session_factory, ids)
    rows = []
    for study in studies:
        result = results.get((study.id, study.generation))
        timings = json.loads(result.timings) if result is not None else {}
        rows.append(
            StudyRow(
                study_uid=study.study_uid,
                accession_number=study.accession_number,
                state=study.state,
                reason=study.reason,
                generation=study.generation,
                instances=study.instance_count,
                first_received_at=study.first_received_at.isoformat(),
                state_changed_at=study.state_changed_at.isoformat(),
                score=result.score if result is not None else None,
                positive=result.positive if result is not None else None,
                assessment=result.assessment if result is not None else None,
                model=(
                    f"{result.model_name} {result.model_version}"
                    if result is not None and result.model_name
                    else None
                ),
                inference_seconds=timings.get("worker_inference_s"),
                queue_wait_seconds=waits[study.id][-1] if waits.get(study.id) else None,
                deliveries=counts[study.id],
            )
        )
    return rows


def show_study(session_factory: SessionFactory, study_uid: str) -> dict[str, Any]:
    """Everything the node knows about a study: row, instances, results, deliveries, events."""
    with session_factory() as session:
        study = _study(session, study_uid)
        instances = list(
            session.scalars(
                select(Instance).where(Instance.study_id == study.id).order_by(Instance.id)
            )
        )
    series: dict[str, Counter[str]] = {}
    for image in instances:
        label = " ".join(
            part
            for part in (image.modality, image.laterality, image.view, image.sop_class_uid)
            if part
        )
        series.setdefault(image.series_uid, Counter())[label] += 1
    return {
        "study": {
            "study_uid": study.study_uid,
            "accession_number": study.accession_number,
            "state": study.state,
            "reason": study.reason,
            "generation": study.generation,
            "calling_ae": study.calling_ae,
            "created_at": study.created_at.isoformat(),
            "first_received_at": study.first_received_at.isoformat(),
            "last_received_at": study.last_received_at.isoformat(),
            "state_changed_at": study.state_changed_at.isoformat(),
            "claimed_by": study.claimed_by,
        },
        "instances": {
            "count": len(instances),
            "bytes": sum(i.size_bytes for i in instances),
            "by_series": {uid: dict(kinds) for uid, kinds in series.items()},
        },
        "results": results_of(session_factory, study.id),
        "deliveries": [
            {
                "generation": d.generation,
                "destination": d.destination,
                "kind": d.kind,
                "sop_instance_uid": d.sop_instance_uid,
                "state": d.state.value,
                "attempts": d.attempts,
                "last_status": None if d.last_status is None else f"0x{d.last_status:04X}",
                "last_error": d.last_error,
                "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            }
            for d in deliveries_of(session_factory, study.id)
        ],
        "events": [
            {"at": at.isoformat(), "kind": kind, "detail": detail}
            for at, kind, detail in events_of(session_factory, study.id)
        ],
        "audit": audit_events(session_factory, study_uid=study.study_uid, limit=1000),
    }


def _requeue(session: Any, study: Study, event: str, detail: dict[str, Any]) -> int:
    """Move ``study`` to ``queued`` as a new generation, in the caller's transaction."""
    generation = study.generation + 1
    moved = session.execute(
        update(Study)
        .where(Study.id == study.id, Study.generation == study.generation)
        .values(
            state=StudyState.QUEUED.value,
            generation=generation,
            reason=None,
            state_changed_at=utcnow(),
            claimed_by=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        raise NodeError(f"study {study.study_uid} changed meanwhile; try again")
    add_event(session, study.id, event, {**detail, "generation": generation})
    return generation


def reprocess(session_factory: SessionFactory, study_uid: str) -> str:
    """Queue a study for inference again as a new generation; returns what was done."""
    with session_factory.begin() as session:
        study = _study(session, study_uid)
        if study.state == StudyState.RECEIVING.value:
            return f"{study_uid}: still receiving; it is processed once complete"
        previous = study.state
        generation = _requeue(session, study, "reprocess", {"from": previous})
    return f"{study_uid}: {previous} -> queued as generation {generation} (results supersede)"


def retry(session_factory: SessionFactory, study_uid: str) -> str:
    """Retry a failed study: re-send failed deliveries, or re-infer; returns what was done."""
    with session_factory.begin() as session:
        study = _study(session, study_uid)
        if study.state != StudyState.FAILED.value:
            return f"{study_uid}: {study.state}, not failed; nothing to retry"
        failed = and_(
            Delivery.study_id == study.id,
            Delivery.generation == study.generation,
            Delivery.state == DeliveryState.FAILED.value,
        )
        count = session.scalar(select(func.count()).select_from(Delivery).where(failed)) or 0
        if not count:
            generation = _requeue(session, study, "retry", {"action": "reinfer"})
            return f"{study_uid}: failed -> queued as generation {generation} (re-infer)"
        now = utcnow()
        session.execute(
            update(Delivery)
            .where(failed)
            .values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Study)
            .where(Study.id == study.id, Study.generation == study.generation)
            .values(state=StudyState.SENDING.value, reason=None, state_changed_at=now)
            .execution_options(synchronize_session=False)
        )
        add_event(session, study.id, "retry", {"action": "resend", "deliveries": count})
    return f"{study_uid}: failed -> sending ({count} failed deliveries re-sent)"


def retry_failed(session_factory: SessionFactory) -> list[str]:
    """:func:`retry` every failed study, oldest first."""
    with session_factory() as session:
        uids = list(
            session.scalars(
                select(Study.study_uid)
                .where(Study.state == StudyState.FAILED.value)
                .order_by(Study.state_changed_at)
            )
        )
    return [retry(session_factory, uid) for uid in uids]


@dataclass
class PurgeReport:
    """What :func:`purge` removed (or, in a dry run, would remove)."""

    cutoff: str
    dry_run: bool
    studies: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    audit_events: int = 0


class _ChangedError(Exception):
    """The study changed while it was being purged: leave it alone."""


def purge(
    session_factory: SessionFactory,
    spool: Spool,
    days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete finished studies older than ``days`` and audit rows older than ``days``.

    A study is purged when it is ``done``, ``failed`` or ``skipped`` and has not changed
    for ``days``. Its rows (deliveries, results, instances, events, study) are deleted in
    one transaction that re-checks that condition, then the files those rows named
    (received instances, result objects) and the emptied folders. Audit rows are deleted
    here and nowhere else.
    """
    cutoff = (now or utcnow()) - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff.isoformat(), dry_run=dry_run)
    with session_factory() as session:
        old = list(
            session.execute(
                select(Study.id, Study.study_uid).where(
                    Study.state.in_(FINISHED), Study.state_changed_at < cutoff
                )
            )
        )
    for study_id, study_uid in old:
        try:
            files = _purge_rows(session_factory, study_id, cutoff, dry_run=dry_run)
        except _ChangedError:
            continue
        report.studies.append(study_uid)
        for relative in files:
            path = spool.path(relative)
            try:
                size = path.stat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            report.files += 1
            report.bytes += size
        if not dry_run:
            _remove_empty(spool.root / "studies" / uid_component(study_uid))
            _remove_empty(spool.root / "results" / uid_component(study_uid))
    with session_factory.begin() as session:
        if dry_run:
            report.audit_events = int(
                session.scalar(
                    select(func.count()).select_from(AuditEvent).where(AuditEvent.at < cutoff)
                )
                or 0
            )
        else:
            report.audit_events = delete_audit_before(session, cutoff)
    return report


def _purge_rows(
    session_factory: SessionFactory, study_id: int, cutoff: datetime, *, dry_run: bool
) -> set[str]:
    """Delete a study's rows (unless ``dry_run``); returns the spool files they named."""
    with session_factory.begin() as session:
        files = set(session.scalars(select(Instance.path).where(Instance.study_id == study_id)))
        files |= set(session.scalars(select(Delivery.path).where(Delivery.study_id == study_id)))
        if dry_run:
            return files
        tables: Sequence[Any] = (Delivery, Result, Instance, StudyEvent)
        for table in tables:
            session.execute(
                delete(table)
                .where(table.study_id == study_id)
                .execution_options(synchronize_session=False)
            )
        deleted = session.execute(
            delete(Study)
            .where(
                Study.id == study_id,
                Study.state.in_(FINISHED),
                Study.state_changed_at < cutoff,
            )
            .execution_options(synchronize_session=False)
        )
        if deleted.rowcount != 1:  # type: ignore[attr-defined]  # reopened meanwhile
            raise _ChangedError
    return files


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and its subfolders bottom-up, where they are empty."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()
