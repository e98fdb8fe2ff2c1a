"""ORM models of the study queue: studies, their instances and their event log."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "Instance",
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
