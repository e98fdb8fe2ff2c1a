"""The plain values the queue hands around: snapshots of rows and what is about to be
stored. No session, no SQL: a snapshot is safe to keep after its transaction ended."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any

from node.db.models import Delivery, DeliveryState, ResultOutcome, Study, StudyState

__all__ = [
    "INSTANCE_COLUMNS",
    "AttemptOutcome",
    "DeliveryRef",
    "InstanceFacts",
    "NewDelivery",
    "NewResult",
    "RecordOutcome",
    "StudyRef",
]


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
INSTANCE_COLUMNS = tuple(
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
    CONFLICT = "conflict"
    """The SOP Instance UID is recorded under another study: nothing was recorded (an
    ``instance_conflict`` event on that study says so); the listener refuses it."""


@dataclass(frozen=True)
class StudyRef:
    """A snapshot of a study row: what a stage needs to act on it and to change it."""

    id: int
    study_uid: str
    accession_number: str | None
    state: StudyState
    generation: int
    instance_count: int
    reason: str | None
    first_received_at: datetime
    last_received_at: datetime
    state_changed_at: datetime
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int = 0
    """Claims for inference of this generation, this one included."""

    @classmethod
    def of(cls, study: Study) -> StudyRef:
        """The snapshot of an ORM row."""
        return cls(
            id=study.id,
            study_uid=study.study_uid,
            accession_number=study.accession_number,
            state=StudyState(study.state),
            generation=study.generation,
            instance_count=study.instance_count,
            reason=study.reason,
            first_received_at=study.first_received_at,
            last_received_at=study.last_received_at,
            state_changed_at=study.state_changed_at,
            claimed_by=study.claimed_by,
            lease_expires_at=study.lease_expires_at,
            attempts=study.attempts,
        )


@dataclass(frozen=True)
class NewResult:
    """A result (or failure report) to store for one study generation."""

    outcome: ResultOutcome
    reason: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    score: float | None = None
    positive: bool | None = None
    assessment: str | None = None
    breast_scores: dict[str, float] = field(default_factory=dict)
    image_scores: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NewDelivery:
    """One object for one destination; ``path`` is relative to the spool root."""

    destination: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    path: str


@dataclass(frozen=True)
class DeliveryRef:
    """A snapshot of a delivery row."""

    id: int
    study_id: int
    generation: int
    destination: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    path: str
    state: DeliveryState
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, row: Delivery) -> DeliveryRef:
        """The snapshot of an ORM row."""
        return cls(
            id=row.id,
            study_id=row.study_id,
            generation=row.generation,
            destination=row.destination,
            sop_instance_uid=row.sop_instance_uid,
            sop_class_uid=row.sop_class_uid,
            kind=row.kind,
            path=row.path,
            state=DeliveryState(row.state),
            attempts=row.attempts,
            last_status=row.last_status,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            sent_at=row.sent_at,
        )


@dataclass(frozen=True)
class AttemptOutcome:
    """How one delivery attempt went. ``retry_at``: when to try again after a failure;
    ``None`` after a failure means the attempts are exhausted."""

    delivery_id: int
    sent: bool
    status: int | None = None
    error: str | None = None
    retry_at: datetime | None = None
