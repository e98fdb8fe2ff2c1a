"""Process-lifetime counters (thread-safe), exported by ``/metrics``.

Counters count what happened since the process started, as Prometheus expects; what
the database can answer (studies by state, deliveries, timings) is read from it at
scrape time instead.
"""

from __future__ import annotations

import threading

__all__ = ["Counters"]


class Counters:
    """Named counters with optional label values: ``counters.add("x", 2, status="ok")``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def snapshot(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """A copy of every counter: (name, sorted labels) -> value."""
        with self._lock:
            return dict(self._values)

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return float(self._values.get((name, tuple(sorted(labels.items()))), 0))
