"""The node service: wires settings to the parts that run, starts and stops them.

This is the composition root for ``breast-node serve``. It owns the lifetime of
every long-running part and is the only place that creates them.
"""

from __future__ import annotations

import signal
import threading
from datetime import timezone
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from node import jobs
from node.config import Settings
from node.db import SessionFactory, open_database, utcnow
from node.dicom.scp import StorageSCP
from node.spool import Spool

__all__ = ["NodeService", "serve_forever"]

log = structlog.get_logger(__name__)


class NodeService:
    """Everything ``breast-node serve`` runs, started and stopped as one unit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._started = False
        self.session_factory: SessionFactory | None = None
        self.scp: StorageSCP | None = None
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        """Create the node's folders and start its parts. Idempotent.

        Order matters: the spool (temporary files of a previous run removed) and the
        database come first, then the completion job, and the listener last, so nothing
        is acknowledged before it can be stored.
        """
        if self._started:
            return
        settings = self.settings
        log.info("node.starting", settings=settings.redacted())
        spool = Spool(
            settings.storage.spool,
            min_free_bytes=settings.storage.min_free_bytes,
            max_used_percent=settings.storage.max_used_percent,
        )
        removed = spool.prepare()
        if removed:
            log.info("spool.cleaned", temporary_files=removed)
        self.session_factory = open_database(
            settings.storage.database,
            busy_timeout=settings.storage.database_busy_timeout_seconds,
            pool_size=settings.node.max_associations + 4,
        )
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._scheduler.add_job(
            jobs.complete_studies,
            "interval",
            seconds=settings.completion.check_interval_seconds,
            args=[self.session_factory, settings.completion, settings.eligibility.rules],
            id="complete_studies",
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )
        self._scheduler.start()
        self.scp = StorageSCP(settings, spool, self.session_factory)
        self.scp.start()
        if settings.model_available:
            log.info("model.configured", model=str(settings.model))
        else:
            log.warning(
                "model.unavailable",
                model=str(settings.model) if settings.model else None,
                consequence="studies will be received and queued but not inferred",
            )
        self._started = True
        log.info(
            "node.started",
            ae_title=settings.node.ae_title,
            host=settings.node.host,
            port=self.scp.port,
        )

    def stop(self) -> None:
        """Stop every part, letting work in flight finish its current step."""
        if not self._started:
            return
        self._started = False
        if self.scp is not None:
            self.scp.stop()
            self.scp = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.session_factory is not None:
            bind = self.session_factory.kw.get("bind")
            if bind is not None:
                bind.dispose()
            self.session_factory = None
        log.info("node.stopped")


def serve_forever(service: NodeService, stop: threading.Event | None = None) -> None:
    """Start ``service`` and block until SIGINT/SIGTERM (or ``stop`` is set), then stop it."""
    stop_event = stop if stop is not None else threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("node.signal", signal=signal.Signals(signum).name)
        stop_event.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        while not stop_event.wait(timeout=1.0):
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
