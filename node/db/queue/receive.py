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

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.db.engine import SessionFactory, changed_rows
from node.db.models import Delivery, Instance, Study, StudyState, utcnow
from node.db.queue.studies import add_event
from node.db.records import INSTANCE_COLUMNS, InstanceFacts, RecordOutcome

__all__ = ["record_instance"]

_OPEN = StudyState.RECEIVING.value


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
            with session_factory.begin() as session:
                return _record(session, facts, late_policy)
        except IntegrityError:
            # another process inserted the same study or instance concurrently: retry,
            # which then sees the row (PostgreSQL; SQLite serialises writers)
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _record(session: Session, facts: InstanceFacts, late_policy: str) -> RecordOutcome:
    now = utcnow()
    existing = session.scalar(
        select(Instance).where(Instance.sop_instance_uid == facts.sop_instance_uid)
    )
    if existing is not None:
        holder = session.scalar(select(Study.study_uid).where(Study.id == existing.study_id))
        if holder != facts.study_uid:
            detail = {
                "sop_instance_uid": facts.sop_instance_uid,
                "other_study_uid": facts.study_uid,
                "calling_ae": facts.calling_ae,
            }
            add_event(session, existing.study_id, "instance_conflict", detail)
            return RecordOutcome.CONFLICT
        existing.receive_count += 1
        changed_rows(
            session,
            update(Study)
            .where(Study.id == existing.study_id, Study.state == _OPEN)
            .values(last_received_at=now),  # the sender is still busy with this study
        )
        return RecordOutcome.DUPLICATE

    study = session.scalar(select(Study).where(Study.study_uid == facts.study_uid))
    if study is None:
        study = Study(
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
        session.add(study)
        session.flush()
        add_event(session, study.id, "created", {"calling_ae": facts.calling_ae})

    outcome = RecordOutcome.NEW
    generation = study.generation
    values: dict[str, object] = {
        "last_received_at": now,
        "instance_count": Study.instance_count + 1,
    }
    if study.state != _OPEN:
        detail = {"sop_instance_uid": facts.sop_instance_uid, "state": study.state}
        # an archive that forwards whole studies sends our own results back: reopening
        # the study for them would re-infer it and send new results, forever
        own_result = session.scalar(
            select(Delivery.id).where(Delivery.sop_instance_uid == facts.sop_instance_uid).limit(1)
        )
        if own_result is not None:
            outcome = RecordOutcome.OWN_RESULT
            add_event(session, study.id, "own_result_received", detail)
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
            add_event(session, study.id, "reopened", {**detail, "generation": generation})
        else:
            outcome = RecordOutcome.LATE_IGNORED
            add_event(session, study.id, "late_instance_ignored", detail)
    if facts.accession_number and not study.accession_number:
        values["accession_number"] = facts.accession_number
    # conditional on the state read above, so a concurrent completion is never overwritten
    updated = changed_rows(
        session,
        update(Study)
        .where(
            Study.id == study.id, Study.state == study.state, Study.generation == study.generation
        )
        .values(**values),
    )
    if updated != 1:
        raise IntegrityError("study changed concurrently", None, Exception("retry"))
    session.add(
        Instance(
            study_id=study.id,
            generation=generation,
            received_at=now,
            receive_count=1,
            **{name: getattr(facts, name) for name in INSTANCE_COLUMNS},
        )
    )
    return outcome
