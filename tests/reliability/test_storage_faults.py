"""Storage faults with real SCUs: the spool's file system over its watermark, and the
database locked by another writer for longer than the busy timeout."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.engine import make_url

from node.app import NodeService
from node.config import Settings
from node.db import Instance
from node.db.reads import count_by_state
from node.dicom import status
from node.dicom.scu import Peer, send_files
from tests.conftest import wait_until

pytestmark = pytest.mark.peers

NodeFactory = Callable[..., tuple[NodeService, Settings]]
MARGIN = 256 * 1024**2


def peer(settings: Settings) -> Peer:
    return Peer("127.0.0.1", settings.node.port, settings.node.ae_title, "RELIABILITY", 30)


def recorded(service: NodeService) -> dict[str, Instance]:
    assert service.session_factory is not None
    with service.session_factory() as session:
        return {row.sop_instance_uid: row for row in session.scalars(select(Instance))}


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def spool_files(settings: Settings) -> set[Path]:
    return {p for p in (settings.storage.spool / "studies").rglob("*") if p.is_file()}


def test_spool_over_watermark_refuses_then_resumes(
    node_factory: NodeFactory, synthetic: Callable[..., Path], tmp_path: Path
) -> None:
    """The watermark is re-read from the file system on every C-STORE: a ballast file that
    takes three margins of space pushes the spool under ``min_free_bytes`` (set one margin
    below what is free now); deleting it gives the space back."""
    studies = synthetic(studies=2, seed=41)
    first, second = (sorted(d.rglob("*.dcm")) for d in sorted(studies.glob("study-*")))
    service, settings = node_factory(
        storage={"min_free_bytes": free_bytes(tmp_path) - MARGIN},
        completion={"quiet_seconds": 1},
    )
    assert send_files(peer(settings), first).sent == len(first)
    acknowledged = dict(recorded(service))

    ballast = tmp_path / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 3 * MARGIN)
    finally:
        os.close(fd)
    report = send_files(peer(settings), second)
    assert report.sent == 0 and len(report.failed) == len(second)
    assert {reason for _, reason in report.failed} == {status.describe(status.OUT_OF_RESOURCES)}
    done = subprocess.run(
        ["storescu", "-v", "-aec", settings.node.ae_title, "127.0.0.1", str(settings.node.port),
         str(second[0])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Refused: OutOfResources" in done.stdout + done.stderr
    assert recorded(service).keys() == acknowledged.keys()  # nothing acknowledged was lost
    for row in acknowledged.values():
        assert dcmread(settings.storage.spool / row.path).SOPInstanceUID == row.sop_instance_uid

    ballast.unlink()
    assert send_files(peer(settings), second).sent == len(second)
    assert len(recorded(service)) == len(first) + len(second)
    assert service.session_factory is not None
    factory = service.session_factory
    assert wait_until(lambda: count_by_state(factory).get("queued") == 2, timeout=60)
    assert not list((settings.storage.spool / "tmp").iterdir())


def test_locked_database_fails_the_store_and_keeps_no_file(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    files = sorted(synthetic(studies=1, seed=42).rglob("*.dcm"))
    service, settings = node_factory(storage={"database_busy_timeout_seconds": 1})
    assert send_files(peer(settings), files[:1]).sent == 1
    before = spool_files(settings)

    database = make_url(settings.storage.database).database
    assert database is not None
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock past the timeout
        report = send_files(peer(settings), files[1:2])
        assert report.sent == 0
        assert report.failed == [(files[1], status.describe(status.PROCESSING_FAILURE))]
        assert spool_files(settings) == before  # no file the database does not know of
        assert not list((settings.storage.spool / "tmp").iterdir())
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()

    assert send_files(peer(settings), files[1:]).sent == len(files) - 1
    rows = recorded(service)
    assert rows.keys() == {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert spool_files(settings) == {settings.storage.spool / r.path for r in rows.values()}
