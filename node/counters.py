"""Process-lifetime counters and histograms (thread-safe), exported by ``/metrics``.

They count what happened since the process started, as Prometheus expects, and are
kept as things happen, so reading them costs the same however long the process ran.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

__all__ = ["Counters", "Histogram"]


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


class Histogram:
    """Observations counted into fixed buckets (upper bounds, ascending), with their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float, int]:
        """(cumulative count at each bound, sum, count of all observations)."""
        with self._lock:
            cumulative, total = [], 0
            for count in self._counts[:-1]:
                total += count
                cumulative.append(total)
            return cumulative, self._sum, total + self._counts[-1]
