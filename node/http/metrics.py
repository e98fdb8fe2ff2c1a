"""``/metrics``: Prometheus text exposition (format 0.0.4), every name ``breast_node_*``.

A scrape costs the same however long the node's history; it reads the database in
read-only transactions that never take SQLite's write lock. Three kinds of value:

* counters of this process, counted as things happen (:class:`~node.counters.Counters`):
  associations, C-STORE answers by status, bytes received;
* counters and histograms folded in from the database's append-only logs (results, study
  events, audit rows): each scrape reads only the rows added since the one before (by
  primary key), so they count from this node's start, cover every process sharing the
  database (``breast-node worker`` processes, a shared PostgreSQL queue), and start from
  zero again when the node restarts, as Prometheus counters may: inference time, queue
  wait, send attempts, failures and retries;
* gauges counted at scrape time from indexes (studies by state, deliveries by state,
  results by outcome), the spool's file system from ``statvfs``, and the bytes under
  the spool, measured by walking it at most once every :data:`SPOOL_WALK_SECONDS`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from node import __version__
from node.counters import Histogram
from node.db import StudyState
from node.db.reads import (
    count_by_state,
    deliveries_by_state,
    history_marks,
    news_since,
    queued_studies,
    result_counts,
)
from node.http.view import NodeView

__all__ = ["CONTENT_TYPE", "SPOOL_WALK_SECONDS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram buckets, seconds: inference of one study, and time waiting in the queue.
INFERENCE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600)
#: Seconds a measurement of the bytes under the spool is reused.
SPOOL_WALK_SECONDS = 60.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return "{" + inner + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP breast_node_{name} {help_text}")
        self.lines.append(f"# TYPE breast_node_{name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"breast_node_{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self.family(name, "histogram", help_text)
        cumulative, total, count = histogram.snapshot()
        for bound, at_most in zip(histogram.bounds, cumulative, strict=True):
            self.sample(f"{name}_bucket", at_most, le=_number(bound))
        self.sample(f"{name}_bucket", count, le="+Inf")
        self.sample(f"{name}_sum", total)
        self.sample(f"{name}_count", count)


def _spool_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we walked
                continue
    return total


class Metrics:
    """The metrics of one node, folded in from the database as its logs grow.

    Made when the monitoring endpoint starts: what the logs held before counts as
    history and is never read again.
    """

    def __init__(self, view: NodeView) -> None:
        self.view = view
        self._lock = threading.Lock()
        self._marks = history_marks(view.read_factory)
        self._queued_at: dict[int, datetime] = queued_studies(view.read_factory)
        self._inference = Histogram(INFERENCE_BUCKETS)
        self._queue_wait = Histogram(QUEUE_BUCKETS)
        self._attempts = self._failures = self._retries = 0
        self._spool_bytes = 0
        self._spool_walked = -SPOOL_WALK_SECONDS

    def _catch_up(self) -> None:
        news = news_since(self.view.read_factory, self._marks)
        self._marks = news.marks
        for seconds in news.inference_seconds:
            self._inference.observe(seconds)
        queued = StudyState.QUEUED.value
        for study_id, at, kind, detail in news.queue_events:
            if kind == "reprocess" or (kind == "state" and detail.get("to") == queued):
                self._queued_at[study_id] = at
            elif kind == "claimed" and detail.get("from") == queued:
                since = self._queued_at.pop(study_id, None)
                if since is not None:
                    self._queue_wait.observe(max((at - since).total_seconds(), 0.0))
            elif kind == "state" and detail.get("from") == queued:
                self._queued_at.pop(study_id, None)  # left the queue unclaimed
        for item in news.sent:
            self._attempts += 1
            self._failures += 0 if item.get("sent") else 1
            self._retries += 1 if int(item.get("attempt") or 1) > 1 else 0

    def _spool(self, root: Path) -> int:
        now = time.monotonic()
        if now - self._spool_walked >= SPOOL_WALK_SECONDS:
            self._spool_bytes = _spool_bytes(root)
            self._spool_walked = now
        return self._spool_bytes

    def render(self) -> str:
        """The current metrics as Prometheus text."""
        with self._lock:  # one scrape folds the news in at a time
            self._catch_up()
            return self._render()

    def _render(self) -> str:
        view = self.view
        out = _Writer()
        out.family("info", "gauge", "Node version and model (value always 1).")
        out.sample("info", 1, version=__version__, model=view.model() or "")
        out.family("model_loaded", "gauge", "1 when a model is loaded and studies are inferred.")
        out.sample("model_loaded", 1 if view.model() else 0)
        self._render_counters(out)

        sf = view.read_factory
        out.family("studies", "gauge", "Studies in the database, by state.")
        for state, count in count_by_state(sf).items():
            out.sample("studies", count, state=state)
        out.family("deliveries", "gauge", "Result objects per destination, by delivery state.")
        for delivery_state, count in deliveries_by_state(sf).items():
            out.sample("deliveries", count, state=delivery_state.value)
        out.family("send_attempts_total", "counter", "Delivery attempts (C-STORE or file write).")
        out.sample("send_attempts_total", self._attempts)
        out.family("send_failures_total", "counter", "Delivery attempts that failed.")
        out.sample("send_failures_total", self._failures)
        out.family(
            "send_retries_total", "counter", "Delivery attempts after the first, per object."
        )
        out.sample("send_retries_total", self._retries)
        out.family("results", "gauge", "Stored results, by outcome (result or failure report).")
        for outcome, count in result_counts(sf).items():
            out.sample("results", count, outcome=outcome.value)

        out.histogram("inference_seconds", "Inference time per study, seconds.", self._inference)
        out.histogram(
            "queue_wait_seconds",
            "Time a complete study waited in the queue before inference, seconds.",
            self._queue_wait,
        )

        root = view.spool.root
        out.family("spool_bytes", "gauge", "Bytes of files under the spool folder.")
        out.sample("spool_bytes", self._spool(root))
        try:
            usage = shutil.disk_usage(root)
        except OSError:
            pass
        else:
            out.family(
                "spool_filesystem_free_bytes", "gauge", "Free bytes on the spool's file system."
            )
            out.sample("spool_filesystem_free_bytes", usage.free)
            out.family("spool_filesystem_size_bytes", "gauge", "Size of the spool's file system.")
            out.sample("spool_filesystem_size_bytes", usage.total)
        return "\n".join(out.lines) + "\n"

    def _render_counters(self, out: _Writer) -> None:
        counters = self.view.counters
        snapshot = counters.snapshot()
        out.family("associations_total", "counter", "DICOM associations accepted by the listener.")
        out.sample("associations_total", counters.value("associations"))
        out.family(
            "instances_received_total", "counter", "C-STORE requests answered, by DIMSE status."
        )
        received = _received(snapshot.items())
        for labels, value in received or [({"status": "0x0000"}, 0.0)]:
            out.sample("instances_received_total", value, **labels)
        out.family("received_bytes_total", "counter", "Bytes of instances stored by the listener.")
        out.sample("received_bytes_total", counters.value("bytes_received"))


def _received(
    items: Iterable[tuple[tuple[str, tuple[tuple[str, str], ...]], float]],
) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), value) for (name, labels), value in sorted(items)
            if name == "instances_received"]  # fmt: skip
