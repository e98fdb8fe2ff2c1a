"""The node service: wires settings to the parts that run, starts and stops them.

This is the composition root for ``breast-node serve``. It owns the lifetime of
every long-running part and is the only place that creates them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from datetime import timezone
from types import FrameType
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from node import jobs
from node.config import Settings
from node.counters import Counters
from node.db import SessionFactory, open_database, utcnow
from node.dicom.audit import AssociationAudit
from node.dicom.scp import StorageSCP
from node.http import MonitoringServer, NodeView
from node.pipeline.delivery import Sender
from node.pipeline.infer import InferenceEngine
from node.pipeline.worker import InferenceWorker
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
        self.engine: InferenceEngine | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._stopping = threading.Event()
        self.counters = Counters()
        self.http: MonitoringServer | None = None

    def start(self) -> None:
        """Create the node's folders and start its parts. Idempotent.

        Order matters: the model is loaded first (a bad model folder stops the start with
        a :class:`~node.errors.ModelError` before anything runs), then the spool
        (temporary files of a previous run removed) and the database, then the jobs
        (completion, inference, sending), and the listener last, so nothing is
        acknowledged before it can be stored.
        """
        if self._started:
            return
        settings = self.settings
        log.info("node.starting", settings=settings.redacted())
        if settings.model_available and settings.model is not None:
            self.engine = InferenceEngine.load(settings.model, settings.inference)
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
        self._stopping.clear()
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._add_job(
            jobs.complete_studies,
            settings.completion.check_interval_seconds,
            self.session_factory,
            settings.completion,
            settings.eligibility.rules,
        )
        if self.engine is not None:
            worker = InferenceWorker(settings, self.session_factory, spool, self.engine, worker_id)
            self._add_job(
                jobs.infer_queued, settings.worker.check_interval_seconds, worker, self._stopping
            )
        sender = Sender(settings, self.session_factory, spool, worker_id)
        self._add_job(
            jobs.deliver_results, settings.sending.check_interval_seconds, sender, self._stopping
        )
        if settings.retention.days is not None:
            self._add_job(
                jobs.purge_finished,
                settings.retention.check_interval_seconds,
                self.session_factory,
                spool,
                settings.retention.days,
            )
        self._scheduler.start()
        self.scp = StorageSCP(settings, spool, self.session_factory)
        self.scp.start()
        for event, handler in AssociationAudit(self.session_factory, self.counters).handlers():
            self.scp.bind(event, handler)
        if settings.http.enabled:
            self._start_http(spool)
        if self.engine is not None:
            log.info("model.loaded", model=str(settings.model), name=self.engine.card.name)
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

    def _start_http(self, spool: Spool) -> None:
        """Start the monitoring endpoint; a port in use is logged, not fatal (DICOM goes on)."""
        assert self.session_factory is not None
        view = NodeView(
            settings=self.settings,
            session_factory=self.session_factory,
            spool=spool,
            counters=self.counters,
            listener_port=lambda: self.scp.port if self.scp is not None else None,
            model=self._model_name,
        )
        server = MonitoringServer(view, self.settings.http)
        try:
            server.start()
        except OSError as exc:
            log.error(
                "http.unavailable",
                host=self.settings.http.host,
                port=self.settings.http.port,
                reason=exc.strerror or str(exc),
            )
            return
        self.http = server

    def _model_name(self) -> str | None:
        if self.engine is None:
            return None
        card = self.engine.card
        return f"{card.name} {card.version}"

    def _add_job(self, func: Any, seconds: float, *args: Any) -> None:
        assert self._scheduler is not None
        self._scheduler.add_job(
            func,
            "interval",
            seconds=seconds,
            args=list(args),
            id=func.__name__,
            max_instances=1,
            coalesce=True,
            next_run_time=utcnow(),
        )

    def stop(self) -> None:
        """Stop every part, letting work in flight finish its current step."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        if self.http is not None:
            self.http.stop()
            self.http = None
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
