"""Requests read in full before a thread is given to them.

One thread reads every connection's request (request line, headers and a small body) as
bytes arrive, with a selector, so a client that sends slowly, or not at all, holds no
request thread and keeps no other client waiting. Each connection has
``http.request_timeout`` seconds to deliver its request and is closed when its time is
up; at most ``http.max_connections`` are read at once, the oldest closed when another
comes. A complete request goes to ``handle``; while more complete requests wait for a
thread than connections may be read, a new one is answered 503 at once.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["LARGEST_REQUEST", "RequestIntake"]

log = structlog.get_logger(__name__)

#: Most bytes of one request read (request line, headers, body); a larger one gets 431.
LARGEST_REQUEST = 64 * 1024
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,9})[ \t]*\r\n", re.IGNORECASE)
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def request_complete(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request: headers ended, and as much body as its
    Content-Length says (or more than :data:`LARGEST_REQUEST`, refused by its handler)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = _LENGTH.search(data, 0, end + 2)
    if length is None:
        return True
    wanted = int(length.group(1))
    return wanted > LARGEST_REQUEST or len(data) >= end + 4 + wanted


@dataclass
class _Reading:
    address: str
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class RequestIntake:
    """Reads requests on one thread and passes each complete one to ``handle(sock,
    client_address, request bytes)``, from that thread (``handle`` must not block)."""

    def __init__(
        self,
        handle: Callable[[socket.socket, Any, bytes], None],
        *,
        timeout: float,
        limit: int,
    ) -> None:
        self._handle = handle
        self.timeout = timeout
        self.limit = limit
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._arrived: list[tuple[socket.socket, Any]] = []
        self._reading: OrderedDict[socket.socket, tuple[Any, _Reading]] = OrderedDict()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="http-intake", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, client_address: Any) -> None:
        """Start reading the request of a connection just accepted (any thread)."""
        with self._lock:
            if self._closed:
                sock.close()
                return
            self._arrived.append((sock, client_address))
        self._wake()

    def close(self) -> None:
        """Stop reading; every connection still being read is closed."""
        with self._lock:
            self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        for sock, _ in self._arrived:
            sock.close()
        for sock in list(self._reading):
            sock.close()
        self._reading.clear()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                arrived, self._arrived = self._arrived, []
            for sock, client_address in arrived:
                self._start(sock, client_address)
            now = time.monotonic()
            for sock, (_, reading) in list(self._reading.items()):
                if reading.deadline <= now:
                    self._drop(sock, f"no whole request within {self.timeout:g} s "
                               "(http.request_timeout)")  # fmt: skip
            first = next(iter(self._reading.values()), None)
            wait = max(first[1].deadline - now, 0.0) if first is not None else None
            for key, _ in self._selector.select(wait):
                if key.fileobj is self._wake_read:
                    with contextlib.suppress(OSError):
                        self._wake_read.recv(4096)
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    self._read(key.fileobj)

    def _start(self, sock: socket.socket, client_address: Any) -> None:
        while len(self._reading) >= self.limit:
            oldest = next(iter(self._reading))
            self._drop(oldest, f"more than {self.limit} requests arriving at once "
                       "(http.max_connections); the oldest is closed")  # fmt: skip
        sock.setblocking(False)
        address = str(client_address[0]) if client_address else "unknown"
        self._reading[sock] = (
            client_address,
            _Reading(address, time.monotonic() + self.timeout),
        )
        self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        client_address, reading = self._reading[sock]
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._forget(sock)
            sock.close()
            return
        reading.data += chunk
        if request_complete(reading.data):
            self._forget(sock)
            sock.setblocking(True)
            self._handle(sock, client_address, bytes(reading.data))
        elif len(reading.data) > LARGEST_REQUEST:
            self._forget(sock)
            with contextlib.suppress(OSError):
                sock.send(_TOO_LARGE)
            sock.close()

    def _forget(self, sock: socket.socket) -> None:
        self._reading.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _drop(self, sock: socket.socket, reason: str) -> None:
        _, reading = self._reading[sock]
        self._forget(sock)
        sock.close()
        log.warning("http.dropped", client=reading.address, reason=reason)


def answer_busy(sock: socket.socket) -> None:
    """Tell a client every request thread is taken (503), without blocking, and close."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(_BUSY)
    sock.close()
