"""Scheduled callables, run by the service's APScheduler ``BackgroundScheduler``.

Each job catches and logs its own failures so that one bad run never stops the
schedule; the next run simply tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import structlog

from node.config import CompletionSettings, EligibilityRule
from node.db import SessionFactory
from node.pipeline.completion import Completed, complete_due_studies
from node.pipeline.delivery import Sender
from node.pipeline.retention import purge
from node.pipeline.worker import InferenceWorker
from node.spool import Spool

__all__ = ["Wake", "complete_studies", "deliver_results", "infer_queued", "purge_finished"]

log = structlog.get_logger(__name__)


class Wake:
    """Runs a polling job now, instead of at its next interval, when work is handed to it.

    The job runs its body through :meth:`run`; another stage calls the instance when it
    has just created work for the job. A call while the body runs makes it run once
    more before it returns, so no hand-over waits for the next interval.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self._start: Callable[[], None] | None = None

    def bind(self, start: Callable[[], None]) -> None:
        """``start`` schedules the job to run now (e.g. APScheduler's ``modify_job``)."""
        self._start = start

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            start = self._start
        if start is not None:
            start()

    def run(self, body: Callable[[], int]) -> int:
        """Run ``body`` until it was not woken while running; returns the sum of its results."""
        with self._lock:
            self._running = True
            self._again = False
        total = 0
        try:
            while True:
                total += body()
                with self._lock:
                    if not self._again:
                        return total
                    self._again = False
        finally:
            with self._lock:
                self._running = False


def complete_studies(
    session_factory: SessionFactory,
    settings: CompletionSettings,
    rules: Sequence[EligibilityRule],
    on_queued: Callable[[], None] | None = None,
) -> list[Completed]:
    """Job: move every study that is due from ``receiving`` to ``queued`` or ``skipped``.

    ``on_queued`` is called when at least one study was queued (to wake the worker).
    """
    try:
        completed = complete_due_studies(session_factory, settings, rules)
    except Exception:
        log.exception("job.failed", job="complete_studies")
        return []
    if on_queued is not None and any(c.decision.eligible for c in completed):
        try:
            on_queued()
        except Exception:
            log.exception("job.wake_failed", job="complete_studies")
    return completed


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


def infer_queued(worker: InferenceWorker, stop: threading.Event, wake: Wake | None = None) -> int:
    """Job: infer queued studies until none are left (or the node stops)."""
    if wake is None:
        return _until_idle("infer_queued", worker.step, stop)
    return wake.run(lambda: _until_idle("infer_queued", worker.step, stop))


def deliver_results(sender: Sender, stop: threading.Event, wake: Wake | None = None) -> int:
    """Job: deliver due result objects until nothing is due (or the node stops)."""
    if wake is None:
        return _until_idle("deliver_results", sender.step, stop)
    return wake.run(lambda: _until_idle("deliver_results", sender.step, stop))


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
