"""Every read query of the CLI, the status page and ``/metrics``: plain data out, nothing
changed. Studies are identified by Study Instance UID and accession number only: nothing
here reads or returns patient names or IDs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.db.engine import SessionFactory
from node.db.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Instance,
    Result,
    ResultOutcome,
    Study,
    StudyEvent,
    StudyState,
)
from node.db.queue.studies import find_study
from node.db.records import INSTANCE_COLUMNS, DeliveryRef, InstanceFacts, StudyRef

__all__ = [
    "HistoryMarks",
    "News",
    "StudyRow",
    "audit_events",
    "count_by_state",
    "deliveries_by_state",
    "deliveries_of",
    "delivery_counts",
    "events_of",
    "history_marks",
    "instances_of",
    "list_studies",
    "news_since",
    "queue_waits",
    "queued_studies",
    "recent_studies",
    "result_counts",
    "results_of",
    "show_study",
    "study_known",
]


def count_by_state(session_factory: SessionFactory) -> dict[str, int]:
    """Number of studies in each state (every state listed, zeros included)."""
    counts = {state.value: 0 for state in StudyState}
    with session_factory() as session:
        for state, count in session.execute(
            select(Study.state, func.count()).group_by(Study.state)
        ):
            counts[state] = int(count)
    return counts


def recent_studies(session_factory: SessionFactory, limit: int = 20) -> list[StudyRef]:
    """The studies that changed most recently, newest first."""
    with session_factory() as session:
        rows = session.scalars(
            select(Study).order_by(Study.state_changed_at.desc(), Study.id.desc()).limit(limit)
        ).all()
        return [StudyRef.of(row) for row in rows]


def events_of(
    session_factory: SessionFactory, study_id: int
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """The event log of a study, oldest first: (time, kind, detail)."""
    with session_factory() as session:
        rows = session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)
        ).all()
        return [(row.at, row.kind, json.loads(row.detail)) for row in rows]


def instances_of(session_factory: SessionFactory, study_id: int) -> list[InstanceFacts]:
    """Every instance recorded for a study, in arrival order."""
    with session_factory() as session:
        rows = session.scalars(
            select(Instance).where(Instance.study_id == study_id).order_by(Instance.id)
        ).all()
        study = session.get(Study, study_id)
        accession = study.accession_number if study else None
        return [
            InstanceFacts(
                study_uid=study.study_uid if study else "",
                accession_number=accession,
                **{name: getattr(row, name) for name in INSTANCE_COLUMNS},
            )
            for row in rows
        ]


def deliveries_of(session_factory: SessionFactory, study_id: int) -> list[DeliveryRef]:
    """Every delivery of a study, every generation, in creation order."""
    with session_factory() as session:
        rows = session.scalars(
            select(Delivery).where(Delivery.study_id == study_id).order_by(Delivery.id)
        ).all()
        return [DeliveryRef.of(row) for row in rows]


def delivery_counts(
    session_factory: SessionFactory, studies: Sequence[StudyRef]
) -> dict[int, dict[str, int]]:
    """Deliveries of each study's current generation, counted by state (study id -> counts)."""
    with session_factory() as session:
        return _delivery_counts(session, {study.id: study.generation for study in studies})


def _delivery_counts(session: Session, generations: Mapping[int, int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {study_id: {} for study_id in generations}
    rows = session.execute(
        select(Delivery.study_id, Delivery.generation, Delivery.state, func.count())
        .where(Delivery.study_id.in_(list(generations)))
        .group_by(Delivery.study_id, Delivery.generation, Delivery.state)
    ).all()
    for study_id, generation, state, count in rows:
        if generations[study_id] == generation:
            counts[study_id][state] = int(count)
    return counts


def results_of(session_factory: SessionFactory, study_id: int) -> list[dict[str, Any]]:
    """Every result row of a study as plain data, oldest generation first. ``detail`` is
    what the worker stored: for a result, the whole :class:`node.results.CombinedResult`
    (one part per model, each a :class:`node.results.StudyResult`: per image, label
    probabilities, disagreement, regions, timings; heat maps left out)."""
    with session_factory() as session:
        rows = session.scalars(
            select(Result).where(Result.study_id == study_id).order_by(Result.generation)
        ).all()
        return [
            {
                "generation": row.generation,
                "outcome": row.outcome,
                "reason": row.reason,
                "model": {"name": row.model_name, "version": row.model_version},
                "score": row.score,
                "positive": row.positive,
                "assessment": row.assessment,
                "breast_scores": json.loads(row.breast_scores),
                "image_scores": json.loads(row.image_scores),
                "timings": json.loads(row.timings),
                "created_at": row.created_at.isoformat(),
                "detail": json.loads(row.detail),
            }
            for row in rows
        ]


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
    queued = StudyState.QUEUED.value
    waits: dict[int, list[float]] = {}
    queued_at: dict[int, datetime] = {}
    with session_factory() as session:
        for study_id, at, kind, detail in session.execute(query):
            data = json.loads(detail)
            if kind == "reprocess" or (kind == "state" and data.get("to") == queued):
                queued_at[study_id] = at
            elif kind == "claimed" and data.get("from") == queued and study_id in queued_at:
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
        counts = _delivery_counts(session, {s.id: s.generation for s in studies})
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
                model=_model(result.model_name, result.model_version)
                if result is not None
                else None,
                inference_seconds=timings.get("worker_inference_s"),
                queue_wait_seconds=waits[study.id][-1] if waits.get(study.id) else None,
                deliveries=counts[study.id],
            )
        )
    return rows


def _model(names: str | None, versions: str | None) -> str | None:
    """``demo 1.0.0``, or for a study whose parts several models inferred (names and
    versions stored joined by ``", "``) ``demo 1.0.0, demo-us 1.0.0``."""
    if not names:
        return None
    split_names, split_versions = names.split(", "), (versions or "").split(", ")
    if len(split_names) != len(split_versions):
        return f"{names} {versions or ''}".strip()
    return ", ".join(f"{n} {v}" for n, v in zip(split_names, split_versions, strict=True))


def study_known(session_factory: SessionFactory, study_uid: str) -> bool:
    """Whether a study with this Study Instance UID is in the database."""
    with session_factory() as session:
        found = session.scalar(select(Study.id).where(Study.study_uid == study_uid).limit(1))
    return found is not None


def show_study(session_factory: SessionFactory, study_uid: str) -> dict[str, Any]:
    """Everything the node knows about a study: row, instances, results, deliveries, events."""
    with session_factory() as session:
        study = find_study(session, study_uid)
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


def audit_events(
    session_factory: SessionFactory,
    *,
    study_uid: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit rows as plain data, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if study_uid is not None:
        query = query.where(AuditEvent.study_uid == study_uid)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    with session_factory() as session:
        return [
            {
                "at": row.at.isoformat(),
                "kind": row.kind,
                "study_uid": row.study_uid,
                "ae_title": row.ae_title,
                "peer": row.peer,
                "instances": row.instances,
                "status": row.status,
                "detail": json.loads(row.detail),
            }
            for row in session.scalars(query)
        ]


def deliveries_by_state(session_factory: SessionFactory) -> dict[DeliveryState, int]:
    """Delivery rows of every study and generation by state, every state listed (counted
    from the ``(state, next_attempt_at)`` index)."""
    with session_factory() as session:
        counts = dict(
            session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
        )
    return {state: int(counts.get(state.value, 0)) for state in DeliveryState}


def result_counts(session_factory: SessionFactory) -> dict[ResultOutcome, int]:
    """Stored results by outcome, every outcome listed."""
    with session_factory() as session:
        counts = dict(
            session.execute(select(Result.outcome, func.count()).group_by(Result.outcome)).all()
        )
    return {outcome: int(counts.get(outcome.value, 0)) for outcome in ResultOutcome}


@dataclass(frozen=True)
class HistoryMarks:
    """The newest row of each append-only log that ``/metrics`` folds in (primary keys):
    results, study events and audit rows. Rows after these are news."""

    result_id: int = 0
    event_id: int = 0
    audit_id: int = 0


@dataclass(frozen=True)
class News:
    """What the append-only logs gained after some :class:`HistoryMarks`."""

    marks: HistoryMarks
    inference_seconds: list[float]
    """The worker's inference time of each new result, seconds."""
    queue_events: list[tuple[int, datetime, str, dict[str, Any]]]
    """New ``state``, ``claimed`` and ``reprocess`` events: (study id, time, kind, detail)."""
    sent: list[dict[str, Any]]
    """The objects of new ``sent`` audit rows: one per delivery attempt (``sent``,
    ``attempt``)."""


def history_marks(session_factory: SessionFactory) -> HistoryMarks:
    """The marks as of now (three primary-key maxima)."""
    with session_factory() as session:
        result_id, event_id, audit_id = (
            session.scalar(select(func.coalesce(func.max(column), 0)))
            for column in (Result.id, StudyEvent.id, AuditEvent.id)
        )
    return HistoryMarks(int(result_id or 0), int(event_id or 0), int(audit_id or 0))


def news_since(session_factory: SessionFactory, marks: HistoryMarks) -> News:
    """Rows appended after ``marks`` (range scans of the primary keys), with the new marks.

    Its cost is that of the new rows, however long the history. On PostgreSQL, where
    several processes write, a row whose transaction commits after one with a higher key
    has been read is not seen.
    """
    with session_factory() as session:
        results = session.execute(
            select(Result.id, Result.outcome, Result.timings)
            .where(Result.id > marks.result_id)
            .order_by(Result.id)
        ).all()
        events = session.execute(
            select(StudyEvent.id, StudyEvent.study_id, StudyEvent.at, StudyEvent.kind,
                   StudyEvent.detail)
            .where(StudyEvent.id > marks.event_id)
            .order_by(StudyEvent.id)
        ).all()  # fmt: skip
        audits = session.execute(
            select(AuditEvent.id, AuditEvent.kind, AuditEvent.detail)
            .where(AuditEvent.id > marks.audit_id)
            .order_by(AuditEvent.id)
        ).all()
    seconds = []
    for _, outcome, timings in results:
        if outcome == ResultOutcome.RESULT.value:
            value = json.loads(timings).get("worker_inference_s")
            if isinstance(value, int | float):
                seconds.append(float(value))
    queue_events = [
        (study_id, at, kind, json.loads(detail))
        for _, study_id, at, kind, detail in events
        if kind in ("state", "claimed", "reprocess")
    ]
    sent = [
        item
        for _, kind, detail in audits
        if kind == "sent"
        for item in json.loads(detail).get("objects", [])
    ]
    return News(
        marks=HistoryMarks(
            results[-1][0] if results else marks.result_id,
            events[-1][0] if events else marks.event_id,
            audits[-1][0] if audits else marks.audit_id,
        ),
        inference_seconds=seconds,
        queue_events=queue_events,
        sent=sent,
    )


def queued_studies(session_factory: SessionFactory) -> dict[int, datetime]:
    """Studies waiting in ``queued`` now: id -> when they were queued (the state index)."""
    with session_factory() as session:
        rows = session.execute(
            select(Study.id, Study.state_changed_at).where(Study.state == StudyState.QUEUED.value)
        ).all()
    return {int(study_id): at for study_id, at in rows}
