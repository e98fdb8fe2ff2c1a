"""ORM models of the study queue: studies, their instances and their event log."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AuditEvent",
    "Base",
    "Delivery",
    "DeliveryState",
    "Instance",
    "Result",
    "ResultOutcome",
    "SchemaVersion",
    "Study",
    "StudyEvent",
    "StudyState",
    "UTCDateTime",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class StudyState(str, Enum):
    """Where a study is in its lifecycle. Each change is one database transaction."""

    RECEIVING = "receiving"
    """Instances are arriving; completion not yet decided."""
    QUEUED = "queued"
    """Complete and eligible: waiting for inference."""
    PROCESSING = "processing"
    """Claimed by an inference worker (under a lease)."""
    SENDING = "sending"
    """Results built; being delivered (under a lease)."""
    DONE = "done"
    """Results delivered."""
    FAILED = "failed"
    """Gave up; ``reason`` says why."""
    SKIPPED = "skipped"
    """Complete but not eligible (or discarded); ``reason`` says why."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every database.

    SQLite has no time zones: values are stored as naive UTC text (which sorts and
    compares correctly) and come back with ``tzinfo=UTC``. Naive input is rejected.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"naive or non-datetime value for a UTC column: {value!r}")
        utc: datetime = value.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        aware: datetime = (
            value.replace(tzinfo=timezone.utc)
            if value.tzinfo is None
            else value.astimezone(timezone.utc)
        )
        return aware


class Base(DeclarativeBase):
    """Declarative base of the node's tables."""


class SchemaVersion(Base):
    """One row per migration applied (see :mod:`node.db.engine`)."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Study(Base):
    """A study, keyed by Study Instance UID, and its place in the pipeline."""

    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_state_changed", "state", "state_changed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING.value)
    reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    """Increases when late instances reopen a processed study; later results supersede."""
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """First instance of the current generation (the force-complete timer starts here)."""
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Claims for inference of the current generation (``worker.max_attempts``): a study
    whose image kills the process inferring it is claimed again after every restart."""


class Instance(Base):
    """One received SOP instance: where its file is and the header facts the pipeline needs."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    laterality: Mapped[str | None] = mapped_column(String(4))
    view: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    presentation_intent: Mapped[str | None] = mapped_column(String(32))
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    calling_ae: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(300))
    """Relative to the spool root."""
    generation: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    receive_count: Mapped[int] = mapped_column(Integer, default=1)


class StudyEvent(Base):
    """The event log of a study: state changes, late instances, forced completion..."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object."""


class ResultOutcome(str, Enum):
    """What a result row holds."""

    RESULT = "result"
    """The model's result; the study ends ``done`` once it is delivered."""
    FAILURE = "failure"
    """A failure report (``reason`` says why); the study ends ``failed`` once it is delivered."""


class Result(Base):
    """The result of one generation of a study: scores, decision, and what was built.

    A later generation (late instances, ``late_policy: reprocess``) has its own row and
    supersedes this one.
    """

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("study_id", "generation"),
        Index("ix_results_outcome", "outcome"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    """Why the study failed (failure reports only)."""
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    """Study malignancy probability."""
    positive: Mapped[bool | None] = mapped_column(Boolean)
    """Decision at the operating point."""
    assessment: Mapped[str | None] = mapped_column(String(16))
    """Assessment category from the model card's bands."""
    breast_scores: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object: laterality -> score."""
    image_scores: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object: SOP Instance UID -> score."""
    detail: Mapped[str] = mapped_column(Text, default="{}")
    """JSON: the full result (heat maps excluded), or the failure's context."""
    timings: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object: seconds per stage."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeliveryState(str, Enum):
    """Where one object is with one destination."""

    PENDING = "pending"
    """Not delivered yet; tried again at ``next_attempt_at``."""
    SENT = "sent"
    """Delivered (C-STORE success, or the file is in the folder)."""
    FAILED = "failed"
    """Every attempt failed; ``last_error`` says why."""
    SUPERSEDED = "superseded"
    """A later generation's result replaced this one before it was delivered."""


class Delivery(Base):
    """One result object for one destination, and how delivering it went."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("result_id", "destination", "sop_instance_uid"),
        Index("ix_deliveries_state_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    destination: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    """The object's file, relative to the spool root."""
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    """DIMSE status of the last C-STORE response, if there was one."""
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Append-only audit trail: who sent the node what, and what it returned where.

    ``kind`` ``received``: one row per association and study (``ae_title`` the calling
    AE, ``peer`` its address); ``sent``: one row per delivery pass, study and
    destination (``peer`` the destination's name, ``detail`` the SOP Instance UIDs and
    their status); ``retry`` and ``reprocess``: an admin action (``peer`` who asked:
    ``cli`` or ``http <address>``, ``detail`` what was done). Rows are never updated;
    ``breast-node purge`` deletes those older than the retention period. Never holds
    patient names or IDs.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    ae_title: Mapped[str | None] = mapped_column(String(16))
    peer: Mapped[str | None] = mapped_column(String(128))
    instances: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32))
    """``ok`` when every instance succeeded, else ``partial`` or ``failed``."""
    detail: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object."""
