"""Retention: finished studies older than ``retention.days`` leave the node, rows and files.

A study is purged when it is ``done``, ``failed`` or ``skipped`` and has not changed for
the retention period. Its rows (deliveries, results, instances, events, study) are
deleted in one transaction that re-checks that condition
(:func:`node.db.queue.delete_study_rows`), then the files those rows named (received
instances, result objects), the study page's pictures and the emptied folders. Audit
rows older than the period are deleted here and nowhere else.

A file is deleted only under the study's lock (:mod:`node.locks`) and only when no row
names it any more: the same instance sent again after the rows were deleted is stored,
recorded and acknowledged by the listener under that lock, and then keeps its file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from node.db import SessionFactory, utcnow
from node.db.audit import count_audit_before, delete_audit_before
from node.db.queue import delete_study_rows, expired_studies, unreferenced_files
from node.db.reads import study_known
from node.locks import study_lock
from node.spool import Spool, uid_component

__all__ = ["PurgeReport", "purge"]


@dataclass
class PurgeReport:
    """What :func:`purge` removed (or, in a dry run, would remove)."""

    cutoff: str
    dry_run: bool
    studies: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    audit_events: int = 0
    kept: int = 0
    """Files of purged rows kept because a row names them again (an instance sent anew)."""


def purge(
    session_factory: SessionFactory,
    spool: Spool,
    days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete finished studies older than ``days`` and audit rows older than ``days``."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff.isoformat(), dry_run=dry_run)
    for study_id, study_uid in expired_studies(session_factory, cutoff):
        files = delete_study_rows(session_factory, study_id, cutoff, dry_run=dry_run)
        if files is None:  # changed meanwhile
            continue
        report.studies.append(study_uid)
        pictures = spool.root / "pictures" / uid_component(study_uid)
        drawn = {str(p.relative_to(spool.root)) for p in pictures.rglob("*.png")}
        if dry_run:
            _count(spool, files | drawn, report, delete=False)
            continue
        with study_lock(spool.root, study_uid):
            unwanted = unreferenced_files(session_factory, files)
            report.kept += len(files) - len(unwanted)
            if not study_known(session_factory, study_uid):  # not sent anew meanwhile
                unwanted |= drawn
            _count(spool, unwanted, report, delete=True)
            for kind in ("studies", "results", "pictures"):
                _remove_empty(spool.root / kind / uid_component(study_uid))
    with session_factory.begin() as session:
        count = count_audit_before if dry_run else delete_audit_before
        report.audit_events = count(session, cutoff)
    return report


def _count(spool: Spool, files: Iterable[str], report: PurgeReport, *, delete: bool) -> None:
    """Add ``files`` to the report, deleting them when ``delete``."""
    for relative in files:
        path = spool.path(relative)
        try:
            size = path.stat().st_size
            if delete:
                path.unlink()
        except FileNotFoundError:
            continue
        report.files += 1
        report.bytes += size


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and its subfolders bottom-up, where they are empty."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()
