"""Connections the listener accepted whose association request has not arrived yet.

Until its A-ASSOCIATE-RQ is read, a connection is held by its own thread, not by an
association, so it does not count against ``node.max_associations``. Each has until
``node.association_request_timeout`` to deliver the whole request (a TLS handshake
included) and is closed when its time is up; at most ``node.max_pending_connections`` are
kept, and when one more comes the oldest is closed. A peer that opens connections and
stalls therefore holds nothing for long and never keeps senders out: a real sender's
request takes milliseconds.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict

import structlog

from node.deadlines import SocketDeadlines

__all__ = ["PendingConnections"]

log = structlog.get_logger(__name__)


class PendingConnections:
    """Accepted connections waiting for their association request, with a deadline each."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._deadlines = SocketDeadlines("dicom-pending")
        self._lock = threading.Lock()
        self._order: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)

    def admit(self, sock: socket.socket, address: str) -> int:
        """Start the request clock of a new connection, closing the oldest waiting one
        if there are already ``limit``; returns the connection's token."""
        evicted: list[tuple[int, str]] = []
        with self._lock:
            while len(self._order) >= self.limit:
                evicted.append(self._order.popitem(last=False))
            token = self._deadlines.add(sock, self.timeout, lambda: self._expired(token, address))
            self._order[token] = address
        for old, old_address in evicted:
            self._deadlines.expire(old)
            log.warning(
                "connection.dropped",
                address=old_address,
                reason=f"more than {self.limit} connections waiting for their association "
                "request (node.max_pending_connections); the oldest is closed",
            )
        return token

    def settle(self, token: int) -> bool:
        """The request of ``token`` has arrived (or its connection ended): stop its clock.
        False when it had already been closed for its time or for a newer connection."""
        with self._lock:
            self._order.pop(token, None)
        return self._deadlines.cancel(token)

    def close(self) -> None:
        """Close every waiting connection (the listener stops)."""
        with self._lock:
            self._order.clear()
        self._deadlines.close()

    def _expired(self, token: int, address: str) -> None:
        with self._lock:
            self._order.pop(token, None)
        log.warning(
            "connection.dropped",
            address=address,
            reason=f"no whole association request within {self.timeout:g} s "
            "(node.association_request_timeout)",
        )
