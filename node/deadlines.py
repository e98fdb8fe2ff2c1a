"""Deadlines on sockets: one background thread shuts down each socket whose time is up.

A socket timeout bounds each read; a peer that sends one byte just before every timeout
never trips it, and a TLS handshake makes many reads. A deadline bounds the whole
exchange instead: at its time the socket is shut down from this thread, which wakes the
thread blocked reading it (its read returns end of file or fails) and shows the peer a
closed connection. The blocked thread then closes the socket itself.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["SocketDeadlines", "shut_down"]


def shut_down(sock: socket.socket) -> None:
    """Shut a socket down in both directions, waking any thread blocked on it.

    ``socket.socket.shutdown`` is called directly: a TLS socket's own ``shutdown`` also
    drops its TLS state, which the thread still reading it is using.
    """
    with contextlib.suppress(OSError):  # already closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class SocketDeadlines:
    """Sockets with a deadline each; :meth:`cancel` before it passes, or it is shut down.

    ``on_expiry`` (optional, per socket) is called from the background thread after the
    socket was shut down for its deadline (not when :meth:`expire` or :meth:`close` did it).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, tuple[socket.socket, Callable[[], None] | None]] = {}
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(
        self,
        sock: socket.socket,
        seconds: float,
        on_expiry: Callable[[], None] | None = None,
    ) -> int:
        """Shut ``sock`` down in ``seconds`` unless cancelled; returns its token."""
        with self._condition:
            if self._closed:
                shut_down(sock)
                return 0
            token = next(self._tokens)
            self._live[token] = (sock, on_expiry)
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._condition.notify()
        return token

    def cancel(self, token: int) -> bool:
        """Forget the deadline of ``token``; False when it had already passed (or was
        expired or closed), in which case the socket has been shut down."""
        with self._condition:
            return self._live.pop(token, None) is not None

    def expire(self, token: int) -> None:
        """Shut the socket of ``token`` down now."""
        with self._condition:
            entry = self._live.pop(token, None)
        if entry is not None:
            shut_down(entry[0])

    def close(self) -> None:
        """Shut every socket still waiting down and stop the background thread."""
        with self._condition:
            self._closed = True
            entries = list(self._live.values())
            self._live.clear()
            self._condition.notify()
            thread = self._thread
        for sock, _ in entries:
            shut_down(sock)
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._condition:
                due: list[tuple[socket.socket, Callable[[], None] | None]] = []
                while not self._closed and not due:
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        _, token = heapq.heappop(self._heap)
                        entry = self._live.pop(token, None)
                        if entry is not None:
                            due.append(entry)
                    if due:
                        break
                    if self._heap:
                        self._condition.wait(self._heap[0][0] - now)
                    else:
                        self._condition.wait()
                if self._closed:
                    return
            for sock, on_expiry in due:  # outside the lock: callbacks may take their own
                shut_down(sock)
                if on_expiry is not None:
                    on_expiry()
