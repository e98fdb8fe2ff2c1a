"""Results and their deliveries: what the worker stores and the sender works through.

The worker stores a study's result, one delivery row per destination and object, and
moves the study to ``sending`` in one transaction (:func:`save_result`). The sender
claims ``sending`` studies that have a delivery due (:func:`claim_sending`), records
each attempt (:func:`record_attempts`) and, when no delivery is pending any more, moves
the study to ``done`` or ``failed`` (:func:`finish_sending`). :func:`retry` sends a
failed study's failed deliveries again, or re-infers it.

Deliveries belong to one generation of a study: a later generation marks the earlier
generation's pending deliveries ``superseded``, so an outdated result is never sent
after a newer one was made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from node.db.audit import add_action, add_sent
from node.db.engine import SessionFactory, changed_rows, database_now
from node.db.models import (
    Delivery,
    DeliveryState,
    Result,
    ResultOutcome,
    Study,
    StudyState,
    utcnow,
)
from node.db.queue.studies import add_event, find_study, release_claim, requeue, transition
from node.db.records import AttemptOutcome, DeliveryRef, NewDelivery, NewResult, StudyRef
from node.errors import NodeError

__all__ = [
    "claim_sending",
    "due_deliveries",
    "finish_sending",
    "record_attempts",
    "retry",
    "retry_failed",
    "save_result",
]

_PENDING = DeliveryState.PENDING.value


def save_result(
    session_factory: SessionFactory,
    study: StudyRef,
    result: NewResult,
    deliveries: Sequence[NewDelivery],
) -> StudyRef | None:
    """Store ``result`` and its ``deliveries`` and move ``study`` on, in one transaction.

    The study goes to ``sending``, or straight to ``failed`` (with the failure reason)
    when a failure report has nothing to deliver, or to ``done`` when a result has no
    destination. Returns ``None``, storing nothing, when the study changed since the
    snapshot (reclaimed after a lost lease, or reopened by a late instance).
    """
    now = utcnow()
    if deliveries:
        to_state = StudyState.SENDING
    elif result.outcome is ResultOutcome.FAILURE:
        to_state = StudyState.FAILED
    else:
        to_state = StudyState.DONE
    reason = result.reason if result.outcome is ResultOutcome.FAILURE else None
    with session_factory.begin() as session:
        moved = transition(session_factory, study, to_state, reason, session=session)
        if moved is None:  # nothing was written: the conditional update matched no row
            return None
        row = Result(
            study_id=study.id,
            generation=study.generation,
            outcome=result.outcome.value,
            reason=result.reason,
            model_name=result.model_name,
            model_version=result.model_version,
            score=result.score,
            positive=result.positive,
            assessment=result.assessment,
            breast_scores=json.dumps(result.breast_scores),
            image_scores=json.dumps(result.image_scores),
            detail=json.dumps(result.detail, default=str),
            timings=json.dumps(result.timings),
            created_at=now,
        )
        session.add(row)
        session.flush()
        superseded = changed_rows(
            session,
            update(Delivery)
            .where(
                Delivery.study_id == study.id,
                Delivery.generation < study.generation,
                Delivery.state == _PENDING,
            )
            .values(state=DeliveryState.SUPERSEDED.value),
        )
        for item in deliveries:
            session.add(
                Delivery(
                    result_id=row.id,
                    study_id=study.id,
                    generation=study.generation,
                    destination=item.destination,
                    sop_instance_uid=item.sop_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    kind=item.kind,
                    path=item.path,
                    state=_PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        add_event(
            session,
            study.id,
            "result",
            {
                "generation": study.generation,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "score": result.score,
                "deliveries": len(deliveries),
                "superseded_deliveries": superseded,
            },
        )
    return moved


def _due(now: datetime) -> Any:
    return exists().where(
        Delivery.study_id == Study.id,
        Delivery.generation == Study.generation,
        Delivery.state == _PENDING,
        Delivery.next_attempt_at <= now,
    )


def claim_sending(
    session_factory: SessionFactory, worker_id: str, lease_seconds: float, limit: int
) -> list[StudyRef]:
    """Claim up to ``limit`` ``sending`` studies that have a delivery due now.

    A study is claimable when nobody holds it or its holder's lease expired; the claim
    keeps the state ``sending`` and sets ``claimed_by`` and a lease. Oldest first.
    """
    now = utcnow()  # delivery times (next_attempt_at) are the senders' clocks

    def claimable(lease_now: datetime) -> Any:
        # leases are set and judged by the database's clock, never this machine's
        return and_(
            Study.state == StudyState.SENDING.value,
            or_(Study.claimed_by.is_(None), Study.lease_expires_at < lease_now),
            _due(now),
        )

    with session_factory() as session:
        candidates = session.execute(
            select(Study.id, Study.claimed_by, Study.generation)
            .where(claimable(database_now(session)))
            .order_by(Study.state_changed_at, Study.id)
            .limit(limit)
        ).all()
    claimed: list[StudyRef] = []
    for study_id, holder, generation in candidates:
        with session_factory.begin() as session:
            lease_now = database_now(session)
            moved = changed_rows(
                session,
                update(Study)
                .where(Study.id == study_id, Study.generation == generation, claimable(lease_now))
                .values(
                    claimed_by=worker_id,
                    lease_expires_at=lease_now + timedelta(seconds=lease_seconds),
                ),
            )
            if moved != 1:
                continue
            detail: dict[str, Any] = {"worker": worker_id, "from": StudyState.SENDING.value}
            if holder is not None:
                detail["reclaimed"] = True
            add_event(session, study_id, "claimed", detail)
            row = session.get(Study, study_id, populate_existing=True)
            assert row is not None
            claimed.append(StudyRef.of(row))
    return claimed


def due_deliveries(session_factory: SessionFactory, study: StudyRef) -> list[DeliveryRef]:
    """Pending deliveries of the study's current generation that are due now."""
    with session_factory() as session:
        rows = session.scalars(
            select(Delivery)
            .where(
                Delivery.study_id == study.id,
                Delivery.generation == study.generation,
                Delivery.state == _PENDING,
                Delivery.next_attempt_at <= utcnow(),
            )
            .order_by(Delivery.id)
        ).all()
        return [DeliveryRef.of(row) for row in rows]


def record_attempts(
    session_factory: SessionFactory, outcomes: Sequence[AttemptOutcome], holder: str | None = None
) -> int:
    """Record delivery attempts, and their audit rows, in one transaction; returns how many
    delivery rows changed.

    Only pending rows change, so a row that was superseded meanwhile stays so. With
    ``holder`` (the sender's worker id), only rows of studies it still holds: a sender
    that lost its claim changes none (the new holder sends again, with the same SOP
    Instance UIDs, and records). The audit records every attempt made, whatever changed.
    """
    now = utcnow()
    recorded = 0
    with session_factory.begin() as session:
        still_held = (
            []
            if holder is None
            else [
                exists().where(
                    Study.id == Delivery.study_id,
                    Study.generation == Delivery.generation,
                    Study.claimed_by == holder,
                )
            ]
        )
        for outcome in outcomes:
            values: dict[str, Any] = {
                "attempts": Delivery.attempts + 1,
                "last_status": outcome.status,
                "last_error": outcome.error,
            }
            if outcome.sent:
                values.update(state=DeliveryState.SENT.value, sent_at=now)
            elif outcome.retry_at is None:
                values.update(state=DeliveryState.FAILED.value)
            else:
                values.update(next_attempt_at=outcome.retry_at)
            recorded += changed_rows(
                session,
                update(Delivery)
                .where(Delivery.id == outcome.delivery_id, Delivery.state == _PENDING, *still_held)
                .values(**values),
            )
        add_sent(session, outcomes)
    return recorded


def finish_sending(session_factory: SessionFactory, study: StudyRef) -> StudyRef | None:
    """After a pass: release the claim, or end the study when nothing is pending.

    All of the generation's deliveries sent: ``done`` (a result) or ``failed`` with the
    failure reason (a failure report). Some failed for good: ``failed``, the reason
    naming each destination and its last status or error. Returns the new snapshot, or
    ``None`` when the study changed meanwhile.
    """
    with session_factory.begin() as session:
        rows = session.scalars(
            select(Delivery).where(
                Delivery.study_id == study.id, Delivery.generation == study.generation
            )
        ).all()
        if any(row.state == _PENDING for row in rows):
            return release_claim(session, study)
        result = session.scalar(
            select(Result).where(Result.study_id == study.id, Result.generation == study.generation)
        )
        failed = [row for row in rows if row.state == DeliveryState.FAILED.value]
        reasons = _failed_reasons(failed)
        if result is not None and result.outcome == ResultOutcome.FAILURE.value:
            reasons.insert(0, result.reason or "failed")
        if reasons:
            return transition(
                session_factory, study, StudyState.FAILED, "; ".join(reasons), session=session
            )
        return transition(session_factory, study, StudyState.DONE, session=session)


def _failed_reasons(failed: Sequence[Delivery]) -> list[str]:
    """One reason per destination: how many objects failed and the last error."""
    by_destination: dict[str, list[Delivery]] = {}
    for row in failed:
        by_destination.setdefault(row.destination, []).append(row)
    reasons = []
    for destination, rows in sorted(by_destination.items()):
        last = rows[-1]
        reasons.append(
            f"delivery to {destination} failed for {len(rows)} object(s) after "
            f"{last.attempts} attempt(s): {last.last_error or 'unknown error'}"
        )
    return reasons


def retry(session_factory: SessionFactory, study_uid: str, *, actor: str = "cli") -> str:
    """Retry a failed study; returns what was done.

    When the failure was a delivery, its failed deliveries go back to pending with fresh
    attempts and the study to ``sending`` (the results are not rebuilt); otherwise (the
    inference or its result objects failed) the study is re-inferred as a new generation.
    The request is an audit row (``actor``: who asked).
    """
    with session_factory.begin() as session:
        done = _retry(session, find_study(session, study_uid))
        add_action(session, action="retry", study_uid=study_uid, actor=actor, result=done)
    return done


def _retry(session: Session, study: Study) -> str:
    study_uid = study.study_uid
    if study.state != StudyState.FAILED.value:
        return f"{study_uid}: {study.state}, not failed; nothing to retry"
    failed = and_(
        Delivery.study_id == study.id,
        Delivery.generation == study.generation,
        Delivery.state == DeliveryState.FAILED.value,
    )
    count = session.scalar(select(func.count()).select_from(Delivery).where(failed)) or 0
    if not count:
        generation = requeue(session, study, "retry", {"action": "reinfer"})
        return f"{study_uid}: failed -> queued as generation {generation} (re-infer)"
    now = utcnow()
    changed_rows(
        session,
        update(Delivery)
        .where(failed)
        .values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now),
    )
    resent = changed_rows(
        session,
        update(Study)
        .where(
            Study.id == study.id,
            Study.generation == study.generation,
            Study.state == StudyState.FAILED.value,
        )
        .values(state=StudyState.SENDING.value, reason=None, state_changed_at=now),
    )
    if resent != 1:
        raise NodeError(f"study {study_uid} changed meanwhile; try again")
    add_event(session, study.id, "retry", {"action": "resend", "deliveries": count})
    return f"{study_uid}: failed -> sending ({count} failed deliveries re-sent)"


def retry_failed(session_factory: SessionFactory, *, actor: str = "cli") -> list[str]:
    """:func:`retry` every failed study, oldest first."""
    with session_factory() as session:
        uids = list(
            session.scalars(
                select(Study.study_uid)
                .where(Study.state == StudyState.FAILED.value)
                .order_by(Study.state_changed_at)
            )
        )
    return [retry(session_factory, uid, actor=actor) for uid in uids]
