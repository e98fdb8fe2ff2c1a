"""Recording received instances: the one write the C-STORE handler makes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.db.engine import SessionFactory
from node.db.models import Delivery, Instance, Study, StudyState, utcnow
from node.db.queue import add_event

__all__ = ["InstanceFacts", "RecordOutcome", "instances_of", "record_instance"]

log = structlog.get_logger(__name__)

_OPEN = StudyState.RECEIVING.value


@dataclass(frozen=True)
class InstanceFacts:
    """Header facts of one received instance (read without decoding pixel data)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    path: str
    size_bytes: int
    accession_number: str | None = None
    modality: str | None = None
    laterality: str | None = None
    view: str | None = None
    body_part: str | None = None
    presentation_intent: str | None = None
    number_of_frames: int = 1


#: InstanceFacts fields stored as columns of the same name on Instance.
_COLUMNS = tuple(
    f.name for f in fields(InstanceFacts) if f.name not in {"study_uid", "accession_number"}
)


class RecordOutcome(str, Enum):
    """What recording an instance did to its study."""

    NEW = "new"
    """First time seen; the study is (still) receiving."""
    DUPLICATE = "duplicate"
    """Same SOP Instance UID seen before: acknowledged, not duplicated."""
    REOPENED = "reopened"
    """Late instance, ``late_policy: reprocess``: the study is receiving again, new generation."""
    LATE_IGNORED = "late_ignored"
    """Late instance, ``late_policy: ignore``: stored and recorded, the study is unchanged."""
    OWN_RESULT = "own_result"
    """One of the node's own result objects, sent back by the archive: stored and recorded,
    the study is unchanged whatever ``late_policy`` says."""


def record_instance(
    session_factory: SessionFactory, facts: InstanceFacts, *, late_policy: str = "reprocess"
) -> RecordOutcome:
    """Record ``facts`` and update its study, in one transaction.

    Creates the study (state ``receiving``) on its first instance. Raises
    :class:`sqlalchemy.exc.SQLAlchemyError` when the database fails (the caller answers
    Processing Failure).
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
        existing.receive_count += 1
        session.execute(
            update(Study)
            .where(Study.id == existing.study_id, Study.state == _OPEN)
            .values(last_received_at=now)  # the sender is still busy with this study
            .execution_options(synchronize_session=False)
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
            )
            add_event(session, study.id, "reopened", {**detail, "generation": generation})
        else:
            outcome = RecordOutcome.LATE_IGNORED
            add_event(session, study.id, "late_instance_ignored", detail)
    if facts.accession_number and not study.accession_number:
        values["accession_number"] = facts.accession_number
    # conditional on the state read above, so a concurrent completion is never overwritten
    result = session.execute(
        update(Study)
        .where(
            Study.id == study.id, Study.state == study.state, Study.generation == study.generation
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise IntegrityError("study changed concurrently", None, Exception("retry"))
    session.add(
        Instance(
            study_id=study.id,
            generation=generation,
            received_at=now,
            receive_count=1,
            **{name: getattr(facts, name) for name in _COLUMNS},
        )
    )
    return outcome


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
                **{name: getattr(row, name) for name in _COLUMNS},
            )
            for row in rows
        ]
