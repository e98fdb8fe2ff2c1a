"""Association audit for the listener: what each peer sent, recorded when it disconnects.

Bound to the running server as notification handlers (they run beside the SCP's own
C-STORE handler, which stays untouched): every C-STORE response the node sends is
noted with its status, and when the connection closes (release, abort or timeout) one
audit row per study is appended (:func:`node.db.audit.record_received`) and the
process counters are updated.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP

from node.counters import Counters
from node.db import SessionFactory, utcnow
from node.db.audit import StoreAnswer, record_received

__all__ = ["AssociationAudit"]

log = structlog.get_logger(__name__)


class AssociationAudit:
    """Collects C-STORE answers per association; writes them when the connection closes."""

    def __init__(self, session_factory: SessionFactory, counters: Counters) -> None:
        self.session_factory = session_factory
        self.counters = counters
        self._lock = threading.Lock()
        self._open: dict[int, tuple[Any, list[StoreAnswer]]] = {}

    def handlers(self) -> list[tuple[evt.NotificationEvent, Any]]:
        """(event, handler) pairs to bind on the association server."""
        return [
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_DIMSE_SENT, self.on_dimse_sent),
            (evt.EVT_CONN_CLOSE, self.on_close),
        ]

    def on_established(self, event: evt.Event) -> None:
        self.counters.add("associations")
        with self._lock:
            self._open[id(event.assoc)] = (utcnow(), [])

    def on_dimse_sent(self, event: evt.Event) -> None:
        message = event.message
        if not isinstance(message, C_STORE_RSP):
            return
        command = message.command_set
        answer = StoreAnswer(str(command.AffectedSOPInstanceUID or ""), int(command.Status))
        self.counters.add("instances_received", status=f"0x{answer.status:04X}")
        with self._lock:
            # setdefault: an association may have been established before we were bound
            self._open.setdefault(id(event.assoc), (utcnow(), []))[1].append(answer)

    def on_close(self, event: evt.Event) -> None:
        with self._lock:
            entry = self._open.pop(id(event.assoc), None)
        if entry is None or not entry[1]:
            return
        started_at, answers = entry
        requestor = event.assoc.requestor
        calling_ae = str(requestor.ae_title).strip()
        peer = f"{requestor.address}:{requestor.port}"
        try:
            received = record_received(
                self.session_factory,
                calling_ae=calling_ae,
                peer=peer,
                answers=answers,
                started_at=started_at,
            )
        except Exception:  # the audit must never take the listener down
            log.exception("audit.failed", calling_ae=calling_ae, peer=peer)
            return
        for item in received:
            self.counters.add("bytes_received", item.bytes)
            log.info(
                "association.audited",
                calling_ae=calling_ae,
                peer=peer,
                study_uid=item.study_uid,
                instances=item.instances,
            )
