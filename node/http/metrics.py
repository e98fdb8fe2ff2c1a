"""``/metrics``: Prometheus text exposition (format 0.0.4), every name ``breast_node_*``.

Counters of this process (instances and bytes received, associations) come from
:class:`~node.counters.Counters`; everything the database knows (studies by state,
deliveries, send attempts, inference time, queue wait) is read from it at scrape time,
so it survives restarts and covers every node sharing the database; spool use is
measured on disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from node import __version__
from node.db.reads import (
    count_by_state,
    delivery_totals,
    inference_seconds,
    queue_waits,
    result_counts,
)
from node.http.view import NodeView

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram buckets, seconds: inference of one study, and time waiting in the queue.
INFERENCE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600)


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

    def histogram(
        self, name: str, help_text: str, values: Sequence[float], buckets: Iterable[float]
    ) -> None:
        self.family(name, "histogram", help_text)
        for bound in buckets:
            count = sum(1 for v in values if v <= bound)
            self.sample(f"{name}_bucket", count, le=_number(bound))
        self.sample(f"{name}_bucket", len(values), le="+Inf")
        self.sample(f"{name}_sum", sum(values))
        self.sample(f"{name}_count", len(values))


def _spool_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we walked
                continue
    return total


def render_metrics(view: NodeView) -> str:
    """The current metrics as Prometheus text."""
    out = _Writer()
    out.family("info", "gauge", "Node version and model (value always 1).")
    out.sample("info", 1, version=__version__, model=view.model() or "")
    out.family("model_loaded", "gauge", "1 when a model is loaded and studies are inferred.")
    out.sample("model_loaded", 1 if view.model() else 0)

    counters = view.counters.snapshot()
    out.family("associations_total", "counter", "DICOM associations accepted by the listener.")
    out.sample("associations_total", view.counters.value("associations"))
    out.family("instances_received_total", "counter", "C-STORE requests answered, by DIMSE status.")
    for (name, labels), value in sorted(counters.items()):
        if name == "instances_received":
            out.sample("instances_received_total", value, **dict(labels))
    if not any(name == "instances_received" for name, _ in counters):
        out.sample("instances_received_total", 0, status="0x0000")
    out.family("received_bytes_total", "counter", "Bytes of instances stored by the listener.")
    out.sample("received_bytes_total", view.counters.value("bytes_received"))

    sf = view.session_factory
    out.family("studies", "gauge", "Studies in the database, by state.")
    for state, count in count_by_state(sf).items():
        out.sample("studies", count, state=state)

    deliveries = delivery_totals(sf)
    out.family("deliveries", "gauge", "Result objects per destination, by delivery state.")
    for state, count in deliveries.by_state.items():
        out.sample("deliveries", count, state=state.value)
    out.family("send_attempts_total", "counter", "Delivery attempts (C-STORE or file write).")
    out.sample("send_attempts_total", deliveries.attempts)
    out.family("send_failures_total", "counter", "Delivery attempts that failed.")
    out.sample("send_failures_total", deliveries.attempts - deliveries.sent)
    out.family("send_retries_total", "counter", "Delivery attempts after the first, per object.")
    out.sample("send_retries_total", deliveries.retries)
    out.family("results", "gauge", "Stored results, by outcome (result or failure report).")
    for outcome, count in result_counts(sf).items():
        out.sample("results", count, outcome=outcome.value)

    out.histogram(
        "inference_seconds",
        "Inference time per study, seconds.",
        inference_seconds(sf),
        INFERENCE_BUCKETS,
    )
    waits = [wait for per_study in queue_waits(sf).values() for wait in per_study]
    out.histogram(
        "queue_wait_seconds",
        "Time a complete study waited in the queue before inference, seconds.",
        waits,
        QUEUE_BUCKETS,
    )

    root = view.spool.root
    out.family("spool_bytes", "gauge", "Bytes of files under the spool folder.")
    out.sample("spool_bytes", _spool_bytes(root))
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        pass
    else:
        out.family("spool_filesystem_free_bytes", "gauge", "Free bytes on the spool's file system.")
        out.sample("spool_filesystem_free_bytes", usage.free)
        out.family("spool_filesystem_size_bytes", "gauge", "Size of the spool's file system.")
        out.sample("spool_filesystem_size_bytes", usage.total)
    return "\n".join(out.lines) + "\n"
