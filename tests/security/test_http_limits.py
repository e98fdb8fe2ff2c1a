"""The monitoring endpoint against slow and many clients, a database write lock held by
someone else, and a long history, with a real ``breast-node serve``: requests read in
full before a thread is given to them, bounded threads and per-request deadlines;
``/metrics`` and the study page never wait for (or take) SQLite's write lock; a scrape
whose cost does not grow with the history."""

from __future__ import annotations

import json
import socket
import sqlite3
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from node.config import Settings, load_settings
from node.db import Delivery, Result, Study, StudyEvent, open_database, utcnow
from node.db.models import AuditEvent
from node.dicom.scu import Peer, send_files
from tests.helpers.hostile import closed_by_peer, threads
from tests.helpers.node import Node
from tests.reliability.conftest import serve_config

pytestmark = pytest.mark.peers

HTTP = {"threads": 4, "request_timeout": 3, "max_connections": 16}


def start(folder: Path, **sections: dict[str, object]) -> tuple[Node, Settings]:
    config = serve_config(folder, None, **sections)
    node = Node(config, folder / "node.log")
    node.start()
    return node, load_settings(config, environ={})


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Node, Settings]]:
    node, settings = start(tmp_path, http=HTTP, storage={"database_busy_timeout_seconds": 5})
    try:
        yield node, settings
    finally:
        node.stop()


def get(settings: Settings, path: str, timeout: float = 60) -> tuple[int, float, bytes]:
    """(status, seconds, body) of a GET on the node's monitoring port."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{settings.http.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            return response.status, time.monotonic() - started, body
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started, exc.read()


def test_slow_clients_hold_a_thread_for_no_longer_than_the_request_timeout(
    served: tuple[Node, Settings],
) -> None:
    """64 clients that send half a request line and stall: the node's threads stay
    bounded, a real scrape is answered meanwhile at once (slow clients hold no request
    thread), and each of them is disconnected: the oldest as newer ones come beyond
    ``http.max_connections``, the rest after ``http.request_timeout``."""
    node, settings = served
    assert node.proc is not None
    assert get(settings, "/metrics")[0] == 200
    before = threads(node.proc.pid)
    slow = []
    for _ in range(64):
        sock = socket.create_connection(("127.0.0.1", settings.http.port), timeout=10)
        sock.sendall(b"GET /healthz HTT")
        slow.append(sock)
    try:
        time.sleep(1.0)
        during = threads(node.proc.pid)
        status, seconds, _ = get(settings, "/metrics")
        print(f"threads {before} -> {during} with 64 slow clients; /metrics in {seconds:.2f} s")
        assert during <= before + HTTP["threads"] + 2
        assert status == 200 and seconds < 1.0
        assert all(closed_by_peer(sock, HTTP["request_timeout"] + 2) for sock in slow)
    finally:
        for sock in slow:
            sock.close()


def test_a_trickled_request_is_cut_off(served: tuple[Node, Settings]) -> None:
    _, settings = served
    with socket.create_connection(("127.0.0.1", settings.http.port), timeout=10) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_peer(sock, 0.5):
                closed = True
                break
        seconds = time.monotonic() - started
    assert closed and seconds < HTTP["request_timeout"] + 2, seconds


def test_read_only_pages_do_not_wait_for_the_write_lock(
    served: tuple[Node, Settings], synthetic: Callable[..., Path]
) -> None:
    """Another connection holds SQLite's write lock (``BEGIN IMMEDIATE``) for longer than
    the busy timeout: ``/metrics``, the status page and a study's page still answer at
    once, since they read in transactions that never ask for that lock (``/healthz``
    alone probes that the database takes a write)."""
    _, settings = served
    image = sorted(synthetic(studies=1, seed=7, size="small").rglob("*.dcm"))[0]
    peer = Peer("127.0.0.1", settings.node.port, settings.node.ae_title, "HTTP_TEST", 30)
    assert send_files(peer, [image]).sent == 1
    study_uid = str(dcmread(image, stop_before_pixels=True).StudyInstanceUID)
    database = make_url(settings.storage.database).database
    assert database is not None
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        for path in ("/metrics", "/", f"/studies/{study_uid}"):
            status, seconds, _ = get(settings, path)
            print(f"{path} with the write lock held elsewhere: {status} in {seconds:.2f} s")
            assert status == 200 and seconds < 2.0, (path, status, seconds)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def seed_history(url: str, studies: int) -> None:
    """``studies`` finished studies with a result, four deliveries, two audit rows and
    four events each, written straight into the database (as months of work would)."""
    factory = open_database(url)
    now = utcnow() - timedelta(days=1)
    timings = json.dumps({"worker_inference_s": 1.5, "decode_s": 0.1})
    with factory.begin() as session:
        session.execute(
            insert(Study),
            [
                {"id": i, "study_uid": f"1.2.826.0.1.{i}", "state": "done", "generation": 1,
                 "instance_count": 4, "first_received_at": now, "last_received_at": now,
                 "created_at": now, "state_changed_at": now}
                for i in range(1, studies + 1)
            ],
        )  # fmt: skip
        session.execute(
            insert(Result),
            [
                {"id": i, "study_id": i, "generation": 1, "outcome": "result", "score": 0.5,
                 "timings": timings, "image_scores": json.dumps({"x": [0.5] * 20}),
                 "created_at": now}
                for i in range(1, studies + 1)
            ],
        )  # fmt: skip
        session.execute(
            insert(StudyEvent),
            [
                {"study_id": i, "at": now, "kind": kind, "detail": json.dumps(detail)}
                for i in range(1, studies + 1)
                for kind, detail in (
                    ("state", {"from": "receiving", "to": "queued"}),
                    ("claimed", {"from": "queued", "worker": "w:1"}),
                    ("state", {"from": "processing", "to": "sending"}),
                    ("state", {"from": "sending", "to": "done"}),
                )
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {"result_id": i, "study_id": i, "generation": 1, "destination": "pacs",
                 "sop_instance_uid": f"1.2.826.0.2.{i}.{k}", "sop_class_uid": "1.2",
                 "kind": "sr", "path": "x", "state": "sent", "attempts": 1,
                 "next_attempt_at": now, "created_at": now}
                for i in range(1, studies + 1)
                for k in range(4)
            ],
        )  # fmt: skip
        session.execute(
            insert(AuditEvent),
            [
                {"at": now, "kind": "sent", "study_uid": f"1.2.826.0.1.{i}", "peer": "pacs",
                 "instances": 4, "status": "ok",
                 "detail": json.dumps({"objects": [{"sent": True, "attempt": 1}] * 4})}
                for i in range(1, studies + 1)
                for _ in range(2)
            ],
        )  # fmt: skip
    factory.kw["bind"].dispose()


def scrape_seconds(settings: Settings, times: int = 7) -> float:
    """Median seconds of ``times`` scrapes of ``/metrics``."""
    seconds = []
    for _ in range(times):
        status, took, _ = get(settings, "/metrics")
        assert status == 200
        seconds.append(took)
    return statistics.median(seconds)


def test_a_scrape_costs_the_same_however_long_the_history(tmp_path: Path) -> None:
    """The same node with no history and with 20,000 finished studies (results, events,
    deliveries, audit rows): the median scrape stays within a few times the empty one."""
    empty, long = tmp_path / "empty", tmp_path / "long"
    empty.mkdir()
    long.mkdir()
    node, settings = start(empty, http=HTTP)
    try:
        short_history = scrape_seconds(settings)
    finally:
        node.stop()
    seed_history(load_settings(serve_config(long, None), environ={}).storage.database, 20_000)
    node, settings = start(long, http=HTTP)
    try:
        long_history = scrape_seconds(settings)
        _, _, body = get(settings, "/metrics")
    finally:
        node.stop()
    print(f"/metrics median: {short_history * 1000:.1f} ms empty, "
          f"{long_history * 1000:.1f} ms with 20,000 studies")  # fmt: skip
    text = body.decode()
    assert 'breast_node_studies{state="done"} 20000' in text
    assert 'breast_node_results{outcome="result"} 20000' in text
    assert long_history < max(4 * short_history, 0.25)
