"""The node service: wires settings to the parts that run, starts and stops them.

This is the composition root for ``breast-node serve``. It owns the lifetime of
every long-running part and is the only place that creates them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from datetime import timezone
from types import FrameType
from typing import Any, Literal

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from node import jobs
from node.config import Settings
from node.counters import Counters
from node.db import (
    SessionFactory,
    claim_holders,
    expire_claims,
    open_database,
    open_reader,
    utcnow,
)
from node.dicom.audit import AssociationAudit
from node.dicom.scp import StorageSCP
from node.errors import ModelError
from node.http import MonitoringServer, NodeView
from node.inference.modelset import ModelSet
from node.outputs.pictures import IMAGE_SIZE
from node.pipeline.delivery import Sender
from node.pipeline.eligibility import check_models
from node.pipeline.worker import InferenceWorker
from node.spool import Spool

__all__ = ["NodeService", "serve_forever"]

log = structlog.get_logger(__name__)


class NodeService:
    """Everything ``breast-node serve`` (or ``breast-node worker``) runs, as one unit.

    ``role="node"`` (``serve``): listener, completion, inference (unless
    ``worker.enabled`` is false), sending, retention and the monitoring endpoint.
    ``role="worker"`` (``worker``): only inference and sending, on the database and
    spool that a ``serve`` node fills; several may run side by side.
    """

    def __init__(self, settings: Settings, role: Literal["node", "worker"] = "node") -> None:
        self.settings = settings
        self.role = role
        self._started = False
        self.session_factory: SessionFactory | None = None
        self.scp: StorageSCP | None = None
        self.models: ModelSet | None = None
        self.worker: InferenceWorker | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._stopping = threading.Event()
        self.counters = Counters()
        self.http: MonitoringServer | None = None
        self._reader: SessionFactory | None = None

    def start(self) -> None:
        """Create the node's folders and start its parts. Idempotent.

        Order matters: the models are loaded first (a bad model folder, or an eligibility
        rule that can match images no model accepts, stops the start with a
        :class:`~node.errors.ModelError` before anything runs), then the spool
        (temporary files of a previous run removed) and the database, then the jobs
        (completion, inference, sending), and the listener last, so nothing is
        acknowledged before it can be stored.
        """
        if self._started:
            return
        settings = self.settings
        node_role = self.role == "node"
        log.info("node.starting", role=self.role, settings=settings.redacted())
        infers = settings.worker.enabled or not node_role
        if infers and settings.model_available:
            self.models = load_models(settings)
        elif not node_role:
            configured = ", ".join(map(str, settings.models)) or "none"
            raise ModelError(
                f"a worker needs a model folder; {configured} is not one "
                "(set models: in the settings)"
            )
        spool = Spool(
            settings.storage.spool,
            min_free_bytes=settings.storage.min_free_bytes,
            max_used_percent=settings.storage.max_used_percent,
        )
        if node_role:  # a worker shares the spool: the listener's temporary files are not its
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
        freed = expire_claims(self.session_factory, gone_claim_holders(self.session_factory))
        if freed:
            log.warning("queue.claims_freed", studies=freed, reason="their process is gone")
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        wake_worker, wake_sender = jobs.Wake(), jobs.Wake()
        if node_role:
            self._add_job(
                jobs.complete_studies,
                settings.completion.check_interval_seconds,
                self.session_factory,
                settings.completion,
                settings.eligibility.rules,
                wake_worker,
            )
        if self.models is not None:
            self.worker = InferenceWorker(
                settings, self.session_factory, spool, self.models, worker_id, wake_sender
            )
            self._add_job(
                jobs.infer_queued,
                settings.worker.check_interval_seconds,
                self.worker,
                self._stopping,
                wake_worker,
            )
            wake_worker.bind(self._run_now(jobs.infer_queued))
        sender = Sender(settings, self.session_factory, spool, worker_id)
        self._add_job(
            jobs.deliver_results,
            settings.sending.check_interval_seconds,
            sender,
            self._stopping,
            wake_sender,
        )
        wake_sender.bind(self._run_now(jobs.deliver_results))
        if node_role and settings.retention.days is not None:
            self._add_job(
                jobs.purge_finished,
                settings.retention.check_interval_seconds,
                self.session_factory,
                spool,
                settings.retention.days,
            )
        self._scheduler.start()
        if node_role:
            self.scp = StorageSCP(settings, spool, self.session_factory)
            self.scp.start()
            for event, handler in AssociationAudit(self.session_factory, self.counters).handlers():
                self.scp.bind(event, handler)
            if settings.http.enabled:
                self._start_http(spool)
        if self.models is not None:
            log.info("models.serving", models=self.models.describe())
        elif not settings.worker.enabled:
            log.info("worker.disabled", consequence="queued studies wait for breast-node worker")
        else:
            log.warning(
                "model.unavailable",
                models=[str(folder) for folder in settings.models],
                consequence="studies will be received and queued but not inferred",
            )
        self._started = True
        if self.scp is not None:
            log.info(
                "node.started",
                ae_title=settings.node.ae_title,
                host=settings.node.host,
                port=self.scp.port,
                status_page=self.status_page_url(),
            )
        else:
            log.info("worker.started", worker=worker_id)

    def _run_now(self, func: Any) -> Callable[[], None]:
        """A callable that makes the scheduled job ``func`` run at once."""

        def start() -> None:
            scheduler = self._scheduler
            if scheduler is not None and scheduler.running:
                scheduler.modify_job(func.__name__, next_run_time=utcnow())

        return start

    def _start_http(self, spool: Spool) -> None:
        """Start the monitoring endpoint; a port in use is logged, not fatal (DICOM goes on)."""
        assert self.session_factory is not None
        self._reader = open_reader(
            self.settings.storage.database,
            busy_timeout=self.settings.storage.database_busy_timeout_seconds,
            pool_size=self.settings.http.threads,
        )
        view = NodeView(
            settings=self.settings,
            session_factory=self.session_factory,
            read_factory=self._reader,
            spool=spool,
            counters=self.counters,
            listener_port=lambda: self.scp.port if self.scp is not None else None,
            model=self._model_name,
            decoders=self._decoder_state,
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

    def status_page_url(self) -> str | None:
        """Where the status page is, or ``None`` when the monitoring endpoint is not up."""
        if self.http is None:
            return None
        host = self.settings.http.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.http.port}/"

    def _model_name(self) -> str | None:
        return None if self.models is None else self.models.describe()

    def _decoder_state(self) -> tuple[bool, str] | None:
        state = None if self.models is None else self.models.decoder_state()
        return None if state is None else (state.ok, state.detail)

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
        if self._reader is not None:
            self._reader.kw["bind"].dispose()
            self._reader = None
        if self.scp is not None:
            self.scp.stop()
            self.scp = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.models is not None:
            self.models.close()
            self.models = None
        if self.session_factory is not None:
            bind = self.session_factory.kw.get("bind")
            if bind is not None:
                bind.dispose()
            self.session_factory = None
        log.info("node.stopped")


def load_models(settings: Settings) -> ModelSet:
    """Load every configured model folder that exists and check that each eligibility
    rule has a model for every modality it can match; :class:`ModelError` otherwise (with
    ``eligibility.without_model: refuse``), naming the rule, before any study."""
    outputs = settings.outputs
    for folder in settings.models:
        if not folder.is_dir():
            log.warning("model.missing", model=str(folder), consequence="left out")
    models = ModelSet.load(
        settings.available_models,
        settings.inference,
        settings.eligibility.rules,
        # the display copy draws the SCs and the study page's pictures
        display_size=outputs.sc_size if "sc" in outputs.objects else IMAGE_SIZE,
    )
    try:
        check_models(settings, models.routes)
    except BaseException:
        models.close()
        raise
    for engine in models:
        log.info(
            "model.route",
            model=engine.card.name,
            folder=str(engine.folder),
            modalities=list(engine.card.modalities),
        )
    return models


def gone_claim_holders(session_factory: SessionFactory) -> set[str]:
    """Claim holders on this machine (``host:pid``) whose process is gone: a node or
    worker killed here, whose claims would otherwise wait for their leases to run out.
    A holder with this process's own pid is an earlier process that had it (containers
    restart as pid 1); a pid now used by another live process is left to its lease."""
    host = socket.gethostname()
    gone: set[str] = set()
    for holder in claim_holders(session_factory):
        name, _, pid = holder.rpartition(":")
        if name != host or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or not _alive(int(pid)):
            gone.add(holder)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def serve_forever(
    service: NodeService,
    stop: threading.Event | None = None,
    on_started: Callable[[NodeService], None] | None = None,
) -> None:
    """Start ``service`` and block until SIGINT/SIGTERM (or ``stop`` is set), then stop it.

    ``on_started`` is called once the service is up (the CLI says where it listens)."""
    stop_event = stop if stop is not None else threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("node.signal", signal=signal.Signals(signum).name)
        stop_event.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        if on_started is not None:
            on_started(service)
        while not stop_event.wait(timeout=1.0):
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
