"""Recording received instances: how a study enters the queue, and the one write the
C-STORE handler makes.

The first instance of a study creates it (``receiving``); a late instance of a finished
study reopens it as a new generation, or is kept without changing it, as
``completion.late_policy`` says. An instance whose SOP Instance UID is already recorded
under another study is not recorded at all (:attr:`RecordOutcome.CONFLICT`): moving it
would take an image out of a study whose results were already made from it, and a SOP
Instance UID names one instance everywhere, so two studies claiming it is an error at
the sender to be seen, not settled here.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from node.db.engine import SessionFactory
from node.db.models import Delivery, Instance, Study, StudyEvent, StudyState, utcnow
from node.db.queue.studies import event_row
from node.db.records import INSTANCE_COLUMNS, InstanceFacts, RecordOutcome

__all__ = ["record_instance"]

_OPEN = StudyState.RECEIVING.value
_STUDIES = cast(Table, Study.__table__)
_INSTANCES = cast(Table, Instance.__table__)
_EVENTS = cast(Table, StudyEvent.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)


def record_instance(
    session_factory: SessionFactory, facts: InstanceFacts, *, late_policy: str = "reprocess"
) -> RecordOutcome:
    """Record ``facts`` and update its study, in one transaction.

    Creates the study (state ``receiving``) on its first instance. Records nothing for an
    instance already recorded under another study (:attr:`RecordOutcome.CONFLICT`).
    Raises :class:`sqlalchemy.exc.SQLAlchemyError` when the database fails (the caller
    answers Processing Failure).
    """
    for attempt in range(5):
        try:
            # a connection, not a session: nothing here needs the ORM's bookkeeping
            with session_factory.kw["bind"].begin() as conn:
                return _record(conn, facts, late_policy)
        except IntegrityError:
            # another process inserted the same study or instance concurrently: retry,
            # which then sees the row (PostgreSQL; SQLite serialises writers)
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _event(conn: Connection, study_id: int, kind: str, detail: dict[str, Any]) -> None:
    conn.execute(insert(_EVENTS).values(**event_row(study_id, kind, detail)))


def _record(conn: Connection, facts: InstanceFacts, late_policy: str) -> RecordOutcome:
    # SQL expressions on the tables, not ORM objects: this runs for every received
    # instance, while the sender waits, and the ORM's unit of work would cost more CPU
    # than the statements themselves
    now = utcnow()
    existing = conn.execute(
        select(_INSTANCES.c.id, _INSTANCES.c.study_id, _STUDIES.c.study_uid)
        .join(_STUDIES, _STUDIES.c.id == _INSTANCES.c.study_id)
        .where(_INSTANCES.c.sop_instance_uid == facts.sop_instance_uid)
    ).first()
    if existing is not None:
        instance_id, holder_id, holder_uid = existing
        if holder_uid != facts.study_uid:
            detail = {
                "sop_instance_uid": facts.sop_instance_uid,
                "other_study_uid": facts.study_uid,
                "calling_ae": facts.calling_ae,
            }
            _event(conn, holder_id, "instance_conflict", detail)
            return RecordOutcome.CONFLICT
        conn.execute(
            update(_INSTANCES)
            .where(_INSTANCES.c.id == instance_id)
            .values(receive_count=_INSTANCES.c.receive_count + 1)
        )
        conn.execute(
            update(_STUDIES)
            .where(_STUDIES.c.id == holder_id, _STUDIES.c.state == _OPEN)
            .values(last_received_at=now)  # the sender is still busy with this study
        )
        return RecordOutcome.DUPLICATE

    study = conn.execute(
        select(
            _STUDIES.c.id, _STUDIES.c.state, _STUDIES.c.generation, _STUDIES.c.accession_number
        ).where(_STUDIES.c.study_uid == facts.study_uid)
    ).first()
    if study is None:
        study_id = conn.execute(
            insert(_STUDIES)
            .values(
                study_uid=facts.study_uid,
                accession_number=facts.accession_number,
                state=_OPEN,
                generation=1,
                instance_count=0,
                calling_ae=facts.calling_ae,
                first_received_at=now,
                last_received_at=now,
                created_at=now,
                state_changed_at=now,
            )
            .returning(_STUDIES.c.id)
        ).scalar_one()
        state, generation, accession = _OPEN, 1, facts.accession_number
        _event(conn, study_id, "created", {"calling_ae": facts.calling_ae})
    else:
        study_id, state, generation, accession = study
    read_generation = generation

    outcome = RecordOutcome.NEW
    values: dict[str, object] = {
        "last_received_at": now,
        "instance_count": _STUDIES.c.instance_count + 1,
    }
    if state != _OPEN:
        detail = {"sop_instance_uid": facts.sop_instance_uid, "state": state}
        # an archive that forwards whole studies sends our own results back: reopening
        # the study for them would re-infer it and send new results, forever
        own_result = conn.scalar(
            select(_DELIVERIES.c.id)
            .where(_DELIVERIES.c.sop_instance_uid == facts.sop_instance_uid)
            .limit(1)
        )
        if own_result is not None:
            outcome = RecordOutcome.OWN_RESULT
            _event(conn, study_id, "own_result_received", detail)
        elif late_policy == "reprocess":
            outcome = RecordOutcome.REOPENED
            generation += 1
            values.update(
                state=_OPEN,
                generation=generation,
                reason=None,
                first_received_at=now,
                state_changed_at=now,
                claimed_by=None,
                lease_expires_at=None,
                attempts=0,
            )
            _event(conn, study_id, "reopened", {**detail, "generation": generation})
        else:
            outcome = RecordOutcome.LATE_IGNORED
            _event(conn, study_id, "late_instance_ignored", detail)
    if facts.accession_number and not accession:
        values["accession_number"] = facts.accession_number
    # conditional on the state read above, so a concurrent completion is never overwritten
    updated = conn.execute(
        update(_STUDIES)
        .where(
            _STUDIES.c.id == study_id,
            _STUDIES.c.state == state,
            _STUDIES.c.generation == read_generation,
        )
        .values(**values)
    )
    if updated.rowcount != 1:
        raise IntegrityError("study changed concurrently", None, Exception("retry"))
    conn.execute(
        insert(_INSTANCES).values(
            study_id=study_id,
            generation=generation,
            received_at=now,
            receive_count=1,
            **{name: getattr(facts, name) for name in INSTANCE_COLUMNS},
        )
    )
    return outcome
