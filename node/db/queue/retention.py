"""Retention in the database: which finished studies are old enough to go, deleting
their rows, and which spool files no row names any more. The files are removed by
:mod:`node.pipeline.retention` (and by the listener, for a file it could not record),
under the study's lock (:mod:`node.locks`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from node.db.engine import SessionFactory, changed_rows
from node.db.models import Delivery, Instance, Result, Study, StudyEvent, StudyState

__all__ = ["FINISHED", "delete_study_rows", "expired_studies", "unreferenced_files"]

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


def unreferenced_files(session_factory: SessionFactory, paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` (relative to the spool root) that no instance or delivery row
    names: the only files it is safe to delete.

    Call it under the study's lock (:func:`node.locks.study_lock`), which the listener
    holds from placing a file until its row is committed; raises
    :class:`sqlalchemy.exc.SQLAlchemyError` when the database cannot say (then keep them).
    """
    wanted = set(paths)
    if not wanted:
        return set()
    with session_factory() as session:
        named = set(session.scalars(select(Instance.path).where(Instance.path.in_(wanted))))
        named |= set(session.scalars(select(Delivery.path).where(Delivery.path.in_(wanted))))
    return wanted - named
