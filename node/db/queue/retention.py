"""Retention in the database: which finished studies are old enough to go, and deleting
their rows. The files those rows name are removed by :mod:`node.pipeline.retention`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from node.db.engine import SessionFactory, changed_rows
from node.db.models import Delivery, Instance, Result, Study, StudyEvent, StudyState

__all__ = ["FINISHED", "delete_study_rows", "expired_studies"]

#: States a study ends in; only these are purged.
FINISHED = (StudyState.DONE.value, StudyState.FAILED.value, StudyState.SKIPPED.value)


def expired_studies(session_factory: SessionFactory, cutoff: datetime) -> list[tuple[int, str]]:
    """``(id, Study Instance UID)`` of every finished study unchanged since ``cutoff``."""
    with session_factory() as session:
        rows = session.execute(
            select(Study.id, Study.study_uid).where(
                Study.state.in_(FINISHED), Study.state_changed_at < cutoff
            )
        ).all()
    return [(int(study_id), str(study_uid)) for study_id, study_uid in rows]


def delete_study_rows(
    session_factory: SessionFactory, study_id: int, cutoff: datetime, *, dry_run: bool
) -> set[str] | None:
    """Delete a study's rows (unless ``dry_run``) in one transaction; returns the spool
    files they named, or ``None`` (nothing deleted) when the study changed meanwhile."""
    try:
        return _delete_rows(session_factory, study_id, cutoff, dry_run=dry_run)
    except _ChangedError:
        return None


class _ChangedError(Exception):
    """The study changed while it was being deleted: roll back, leave it alone."""


def _delete_rows(
    session_factory: SessionFactory, study_id: int, cutoff: datetime, *, dry_run: bool
) -> set[str]:
    with session_factory.begin() as session:
        files = set(session.scalars(select(Instance.path).where(Instance.study_id == study_id)))
        files |= set(session.scalars(select(Delivery.path).where(Delivery.study_id == study_id)))
        if dry_run:
            return files
        tables: Sequence[Any] = (Delivery, Result, Instance, StudyEvent)
        for table in tables:
            changed_rows(session, delete(table).where(table.study_id == study_id))
        deleted = changed_rows(
            session,
            delete(Study).where(
                Study.id == study_id,
                Study.state.in_(FINISHED),
                Study.state_changed_at < cutoff,
            ),
        )
        if deleted != 1:  # reopened meanwhile: roll everything back
            raise _ChangedError
    return files
