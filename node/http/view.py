"""What the monitoring endpoints read: the running node's parts, passed in by the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.config import Settings
from node.counters import Counters
from node.db import SessionFactory
from node.spool import Spool

__all__ = ["NodeView"]


@dataclass(frozen=True)
class NodeView:
    """Read-only handles on a running node.

    ``session_factory`` is the node's own (it writes); ``read_factory`` only reads, in
    transactions that never take SQLite's write lock (:func:`node.db.open_reader`): the
    pages and ``/metrics`` read through it. ``listener_port`` returns the port the DICOM
    listener is bound to, or ``None`` when it is not running; ``model`` names the loaded
    model (``None``: no model loaded); ``decoders`` says whether the decoding processes
    are alive, and how (``None``: images are decoded in the worker's own thread).
    """

    settings: Settings
    session_factory: SessionFactory
    read_factory: SessionFactory
    spool: Spool
    counters: Counters
    listener_port: Callable[[], int | None]
    model: Callable[[], str | None]
    decoders: Callable[[], tuple[bool, str] | None] = lambda: None
