"""Study claims and transitions: every change of a study's state outside receiving.

Every function is one transaction (or runs in the caller's, where it takes a session).
Changes are conditional ``UPDATE``s (``WHERE state = ... AND generation = ...``), so they
are atomic on SQLite and PostgreSQL alike: two workers never claim the same study, and a
stage whose study was reopened by a late instance (a new ``generation``) cannot
overwrite the newer state. Leases are set and judged by the database's clock
(:func:`~node.db.engine.database_now`), so machines whose clocks disagree still agree on
when a lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from node.db.audit import add_action
from node.db.engine import SessionFactory, changed_rows, database_now
from node.db.models import Study, StudyEvent, StudyState, utcnow
from node.db.records import StudyRef
from node.errors import NodeError

__all__ = [
    "add_event",
    "claim_holders",
    "claim_next",
    "event_row",
    "expire_claims",
    "find_study",
    "held_claims",
    "record_event",
    "release_claim",
    "renew_lease",
    "reprocess",
    "requeue",
    "transition",
    "unclaim",
]


def event_row(study_id: int, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The columns of a ``study_events`` row: ``kind`` now, with a JSON ``detail``."""
    return {
        "study_id": study_id,
        "at": utcnow(),
        "kind": kind,
        "detail": json.dumps(detail, default=str),
    }


def add_event(session: Session, study_id: int, kind: str, detail: dict[str, Any]) -> None:
    """Append an event inside the caller's transaction (see :func:`record_event`)."""
    session.add(StudyEvent(**event_row(study_id, kind, detail)))


def record_event(
    session_factory: SessionFactory, study: StudyRef | int, kind: str, detail: dict[str, Any]
) -> None:
    """Append ``kind`` (e.g. ``"inference.started"``) with a JSON ``detail`` to the log."""
    study_id = study if isinstance(study, int) else study.id
    with session_factory.begin() as session:
        add_event(session, study_id, kind, detail)


def find_study(session: Session, study_uid: str) -> Study:
    """The study row with this Study Instance UID; :class:`NodeError` when there is none."""
    row = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if row is None:
        raise NodeError(f"no study with Study Instance UID {study_uid}")
    return row


def claim_next(
    session_factory: SessionFactory,
    worker_id: str,
    from_state: StudyState,
    to_state: StudyState,
    lease_seconds: float,
) -> StudyRef | None:
    """Claim the oldest study in ``from_state`` (or one in ``to_state`` whose lease expired).

    The claim moves it to ``to_state`` with ``claimed_by = worker_id`` and a lease of
    ``lease_seconds``, and counts one more attempt (``attempts``: the worker gives up on a
    study claimed too often, see ``worker.max_attempts``); renew it with
    :func:`renew_lease` while working. Returns ``None`` when there is nothing to claim.
    """
    with session_factory() as session:
        now = database_now(session)
        candidates = session.execute(
            select(Study.id, Study.state, Study.generation)
            .where(
                or_(
                    Study.state == from_state.value,
                    and_(Study.state == to_state.value, Study.lease_expires_at < now),
                )
            )
            .order_by(Study.state_changed_at, Study.id)
            .limit(8)
        ).all()
    for study_id, state, generation in candidates:
        with session_factory.begin() as session:
            # leases are set and judged by the database's clock, never this machine's
            now = database_now(session)
            # rows in from_state carry no claim (every transition releases it); a row
            # already in to_state is claimable only while its lease stays expired
            expired = [] if state == from_state.value else [Study.lease_expires_at < now]
            claimed = changed_rows(
                session,
                update(Study)
                .where(
                    Study.id == study_id,
                    Study.state == state,
                    Study.generation == generation,
                    *expired,
                )
                .values(
                    state=to_state.value,
                    claimed_by=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    state_changed_at=utcnow(),
                    attempts=Study.attempts + 1,
                ),
            )
            if claimed != 1:
                continue
            detail = {"worker": worker_id, "from": state, "generation": generation}
            if state != from_state.value:
                detail["reclaimed"] = True
            add_event(session, study_id, "claimed", detail)
            row = session.get(Study, study_id, populate_existing=True)
            assert row is not None
            return StudyRef.of(row)
    return None


def _unchanged(study: StudyRef) -> list[ColumnElement[bool]]:
    """SQL conditions: the row still has the snapshot's state, generation and claim."""
    claim = (
        Study.claimed_by.is_(None)
        if study.claimed_by is None
        else Study.claimed_by == study.claimed_by
    )
    return [
        Study.id == study.id,
        Study.state == study.state.value,
        Study.generation == study.generation,
        claim,
    ]


def renew_lease(session_factory: SessionFactory, study: StudyRef, lease_seconds: float) -> bool:
    """Extend the lease of a study this worker holds; False if it lost the claim."""
    with session_factory.begin() as session:
        expires = database_now(session) + timedelta(seconds=lease_seconds)
        renewed = changed_rows(
            session, update(Study).where(*_unchanged(study)).values(lease_expires_at=expires)
        )
        return renewed == 1


def held_claims(session_factory: SessionFactory, studies: Iterable[StudyRef]) -> set[int]:
    """The ids of ``studies`` whose claim (as in the snapshot) is still held and whose lease
    has not run out by the database's clock: what a stage may still act on. Nobody else
    can claim such a study before the lease runs out."""
    snapshots = list(studies)
    if not snapshots:
        return set()
    with session_factory() as session:
        now = database_now(session)
        return {
            int(study_id)
            for study_id in session.scalars(
                select(Study.id).where(
                    or_(*(and_(*_unchanged(study)) for study in snapshots)),
                    Study.lease_expires_at > now,
                )
            )
        }


def claim_holders(session_factory: SessionFactory) -> set[str]:
    """Every ``claimed_by`` that holds a study now."""
    with session_factory() as session:
        rows = session.scalars(
            select(Study.claimed_by).where(Study.claimed_by.is_not(None)).distinct()
        )
        return {holder for holder in rows if holder}


def expire_claims(session_factory: SessionFactory, holders: Iterable[str]) -> int:
    """End the leases of every study held by ``holders`` (processes known to be gone), so
    that any worker may claim them at once; returns how many studies that freed."""
    names = sorted(set(holders))
    if not names:
        return 0
    with session_factory.begin() as session:
        expired = database_now(session) - timedelta(seconds=1)
        return changed_rows(
            session,
            update(Study).where(Study.claimed_by.in_(names)).values(lease_expires_at=expired),
        )


def release_claim(session: Session, study: StudyRef) -> StudyRef | None:
    """Give up the claim on ``study`` without changing its state, in the caller's transaction.

    Returns the new snapshot, or ``None`` when the claim was lost meanwhile.
    """
    released = changed_rows(
        session,
        update(Study).where(*_unchanged(study)).values(claimed_by=None, lease_expires_at=None),
    )
    if released != 1:
        return None
    row = session.get(Study, study.id, populate_existing=True)
    assert row is not None
    return StudyRef.of(row)


def transition(
    session_factory: SessionFactory,
    study: StudyRef,
    to_state: StudyState,
    reason: str | None = None,
    *,
    unchanged_since: datetime | None = None,
    session: Session | None = None,
) -> StudyRef | None:
    """Move ``study`` from the state it had in the snapshot to ``to_state``; release its claim.

    Conditional on state, generation and claim being unchanged since the snapshot;
    returns the new snapshot, or ``None`` if someone else changed the study meanwhile
    (e.g. a late instance reopened it). ``reason`` is recorded for ``failed`` and
    ``skipped``. ``unchanged_since``: also require that no instance arrived after it
    (``last_received_at``). ``session``: run inside the caller's transaction.
    """
    if session is None:
        with session_factory.begin() as own:
            return transition(
                session_factory,
                study,
                to_state,
                reason,
                unchanged_since=unchanged_since,
                session=own,
            )
    now = utcnow()
    since = [] if unchanged_since is None else [Study.last_received_at == unchanged_since]
    moved = changed_rows(
        session,
        update(Study)
        .where(*_unchanged(study), *since)
        .values(
            state=to_state.value,
            reason=reason,
            state_changed_at=now,
            claimed_by=None,
            lease_expires_at=None,
        ),
    )
    if moved != 1:
        return None
    detail: dict[str, Any] = {"from": study.state.value, "to": to_state.value}
    if reason:
        detail["reason"] = reason
    add_event(session, study.id, "state", detail)
    row = session.get(Study, study.id, populate_existing=True)
    assert row is not None
    return StudyRef.of(row)


def unclaim(session_factory: SessionFactory, study: StudyRef) -> StudyRef | None:
    """Give a claimed study back to ``queued`` untouched (a worker stopping before it began
    on it), taking back the attempt its claim counted. ``None`` when it changed meanwhile."""
    with session_factory.begin() as session:
        moved = transition(session_factory, study, StudyState.QUEUED, session=session)
        if moved is None:
            return None
        changed_rows(
            session,
            update(Study)
            .where(Study.id == study.id, Study.attempts > 0)
            .values(attempts=Study.attempts - 1),
        )
        row = session.get(Study, study.id, populate_existing=True)
        assert row is not None
        return StudyRef.of(row)


def requeue(session: Session, study: Study, event: str, detail: dict[str, Any]) -> int:
    """Move ``study`` to ``queued`` as a new generation, in the caller's transaction.

    Returns the new generation; :class:`NodeError` when the study changed meanwhile.
    """
    generation = study.generation + 1
    moved = changed_rows(
        session,
        update(Study)
        .where(Study.id == study.id, Study.generation == study.generation)
        .values(
            state=StudyState.QUEUED.value,
            generation=generation,
            reason=None,
            state_changed_at=utcnow(),
            claimed_by=None,
            lease_expires_at=None,
            attempts=0,
        ),
    )
    if moved != 1:
        raise NodeError(f"study {study.study_uid} changed meanwhile; try again")
    add_event(session, study.id, event, {**detail, "generation": generation})
    return generation


def reprocess(session_factory: SessionFactory, study_uid: str, *, actor: str = "cli") -> str:
    """Queue a study for inference again as a new generation; returns what was done.

    The new generation's results supersede the earlier ones: pending deliveries of an
    earlier generation are never sent. The request is an audit row (``actor``: who asked).
    """
    with session_factory.begin() as session:
        study = find_study(session, study_uid)
        if study.state == StudyState.RECEIVING.value:
            done = f"{study_uid}: still receiving; it is processed once complete"
        else:
            previous = study.state
            generation = requeue(session, study, "reprocess", {"from": previous})
            done = (
                f"{study_uid}: {previous} -> queued as generation {generation} (results supersede)"
            )
        add_action(session, action="reprocess", study_uid=study_uid, actor=actor, result=done)
    return done
