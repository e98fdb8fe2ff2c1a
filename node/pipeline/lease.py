"""Keeping leases alive while a stage works on claimed studies."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import structlog

from node.db import SessionFactory, StudyRef, renew_lease

__all__ = ["keep_leases"]

log = structlog.get_logger(__name__)


@contextmanager
def keep_leases(
    session_factory: SessionFactory, studies: Sequence[StudyRef], lease_seconds: float
) -> Iterator[None]:
    """Renew the leases of ``studies`` every third of ``lease_seconds`` until the block ends.

    A lease that cannot be renewed (the claim was lost: reclaimed, or reopened by a late
    instance) is logged and no longer renewed; the stage's final conditional transition
    then finds the study changed and stores nothing.
    """
    stop = threading.Event()
    held = list(studies)

    def renew() -> None:
        while held and not stop.wait(lease_seconds / 3):
            for study in list(held):
                try:
                    still_held = renew_lease(session_factory, study, lease_seconds)
                except Exception:  # the database may be briefly unavailable; try next time
                    log.exception("lease.renew_failed", study_uid=study.study_uid)
                    continue
                if not still_held:
                    log.warning("lease.lost", study_uid=study.study_uid)
                    held.remove(study)

    thread = threading.Thread(target=renew, name="lease-renewer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
