"""The node service: wires settings to the parts that run, starts and stops them.

This is the composition root for ``breast-node serve``. It owns the lifetime of
every long-running part and is the only place that creates them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from node.config import Settings

__all__ = ["NodeService", "serve_forever"]

log = structlog.get_logger(__name__)


class NodeService:
    """Everything ``breast-node serve`` runs, started and stopped as one unit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._started = False

    def start(self) -> None:
        """Create the node's folders and start its parts. Idempotent."""
        if self._started:
            return
        settings = self.settings
        settings.storage.spool.mkdir(parents=True, exist_ok=True)
        log.info("node.starting", settings=settings.redacted())
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
            port=settings.node.port,
        )

    def stop(self) -> None:
        """Stop every part, letting work in flight finish its current step."""
        if not self._started:
            return
        self._started = False
        log.info("node.stopped")


def serve_forever(service: NodeService, stop: threading.Event | None = None) -> None:
    """Start ``service`` and block until SIGINT/SIGTERM (or ``stop`` is set), then stop it."""
    stop_event = stop if stop is not None else threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("node.signal", signal=signal.Signals(signum).name)
        stop_event.set()

    previous = {
        sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        service.start()
        while not stop_event.wait(timeout=1.0):
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
