"""Scheduled callables, run by the service's APScheduler ``BackgroundScheduler``.

Each job catches and logs its own failures so that one bad run never stops the
schedule; the next run simply tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import structlog

from node.admin import purge
from node.config import CompletionSettings, EligibilityRule
from node.db import SessionFactory
from node.pipeline.completion import Completed, complete_due_studies
from node.pipeline.delivery import Sender
from node.pipeline.worker import InferenceWorker
from node.spool import Spool

__all__ = ["complete_studies", "deliver_results", "infer_queued", "purge_finished"]

log = structlog.get_logger(__name__)


def complete_studies(
    session_factory: SessionFactory,
    settings: CompletionSettings,
    rules: Sequence[EligibilityRule],
) -> list[Completed]:
    """Job: move every study that is due from ``receiving`` to ``queued`` or ``skipped``."""
    try:
        return complete_due_studies(session_factory, settings, rules)
    except Exception:
        log.exception("job.failed", job="complete_studies")
        return []


def _until_idle(job: str, step: Callable[[], int], stop: threading.Event) -> int:
    """Run ``step`` until it finds nothing to do (returns 0) or ``stop`` is set."""
    handled = 0
    try:
        while not stop.is_set():
            done = step()
            if not done:
                break
            handled += done
    except Exception:
        log.exception("job.failed", job=job)
    return handled


def infer_queued(worker: InferenceWorker, stop: threading.Event) -> int:
    """Job: infer queued studies until none are left (or the node stops)."""
    return _until_idle("infer_queued", worker.step, stop)


def deliver_results(sender: Sender, stop: threading.Event) -> int:
    """Job: deliver due result objects until nothing is due (or the node stops)."""
    return _until_idle("deliver_results", sender.step, stop)


def purge_finished(session_factory: SessionFactory, spool: Spool, days: float) -> int:
    """Job: apply the retention period (``retention.days``); returns studies purged."""
    try:
        report = purge(session_factory, spool, days)
    except Exception:
        log.exception("job.failed", job="purge_finished")
        return 0
    if report.studies or report.audit_events:
        log.info(
            "retention.purged",
            studies=len(report.studies),
            files=report.files,
            bytes=report.bytes,
            audit_events=report.audit_events,
        )
    return len(report.studies)
