"""Nothing acknowledged is deleted or dropped: an instance sent again while purge deletes
its study, the same new instance on two associations when one's recording fails, and an
instance whose SOP Instance UID is recorded under another study. Against a real
``breast-node serve`` (and the listener in this process where a fault must be injected
between two steps), real files and a real SQLite database."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.engine import make_url

import node.dicom.scp as scp_module
import node.pipeline.retention as retention
from node.app import NodeService
from node.config import Settings
from node.db import Instance, Study, utcnow
from node.db.reads import events_of
from node.dicom import status
from node.pipeline.retention import purge
from node.spool import Spool
from tests.conftest import wait_until
from tests.reliability.conftest import TERMINAL, Served
from tests.reliability.test_bad_input import fresh

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@pytest.fixture(scope="module")
def study(synthetic: Callable[..., Path]) -> list[Path]:
    return sorted(synthetic(studies=1, seed=23, size="small").rglob("*.dcm"))


def storescu(port: int, files: list[Path]) -> str:
    done = subprocess.run(
        ["storescu", "-v", "-aec", "BREAST_AI", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def instance_rows(served: Served, sop_uid: str) -> list[tuple[str, str]]:
    """(Study Instance UID, path) of every row of ``sop_uid``."""
    with served.db() as session:
        rows = session.execute(
            select(Study.study_uid, Instance.path)
            .join(Study, Study.id == Instance.study_id)
            .where(Instance.sop_instance_uid == sop_uid)
        ).all()
    return [(str(uid), str(path)) for uid, path in rows]


def test_an_instance_sent_again_while_purge_deletes_its_study_keeps_its_file(
    served: Served, study: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, purge deleted the rows, the instance arrived again and was acknowledged and
    recorded, and purge then deleted the file it had listed: reprocessing the new study
    failed with "No such file or directory"."""
    port, spool_root = served.settings.node.port, served.settings.storage.spool
    storescu(port, study)
    uid = str(dcmread(study[0], stop_before_pixels=True).StudyInstanceUID)
    again = study[0]
    sop = str(dcmread(again, stop_before_pixels=True).SOPInstanceUID)
    assert wait_until(lambda: served.studies()[uid].state in TERMINAL, timeout=120)
    assert served.studies()[uid].state == "done"

    real = retention.delete_study_rows
    resent: list[str] = []

    def rows_deleted_then_resent(*args: Any, **kwargs: Any) -> set[str] | None:
        files = real(*args, **kwargs)
        if files is not None and not resent:  # between the rows and the files
            resent.append(storescu(port, [again]))
            assert instance_rows(served, sop), "the resent instance was not recorded"
        return files

    monkeypatch.setattr(retention, "delete_study_rows", rows_deleted_then_resent)
    report = purge(served.db, Spool(spool_root), days=1, now=utcnow() + timedelta(days=2))
    assert uid in report.studies and resent

    ((holder, path),) = instance_rows(served, sop)
    assert holder == uid
    assert (spool_root / path).is_file(), "purge deleted a file acknowledged after its rows went"
    assert dcmread(spool_root / path).SOPInstanceUID == sop
    assert report.kept == 1
    # the study it now belongs to completes and is inferred from that file
    assert wait_until(lambda: served.studies()[uid].state in TERMINAL, timeout=120)
    assert served.studies()[uid].state == "done", served.studies()[uid].reason


def test_an_instance_under_another_study_is_refused_not_dropped(
    served: Served, base: Dataset, tmp_path: Path
) -> None:
    """Before, the second study's copy was answered Success and then neither recorded under
    that study nor kept."""
    first = fresh(base, "conflict-first")
    path = tmp_path / "first.dcm"
    first.save_as(path, enforce_file_format=True)
    storescu(served.settings.node.port, [path])
    moved = fresh(base, "conflict-second")  # another study, the same SOP Instance UID
    moved.SOPInstanceUID = first.SOPInstanceUID
    moved.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID

    answer = _store(served.settings.node.port, moved)
    assert answer == 0x0111, status.describe(answer or 0)  # Duplicate SOP Instance

    sop = str(first.SOPInstanceUID)
    assert instance_rows(served, sop) == [
        (str(first.StudyInstanceUID), instance_rows(served, sop)[0][1])
    ]
    assert str(moved.StudyInstanceUID) not in served.studies()
    spool = Spool(served.settings.storage.spool)
    stray = spool.path(spool.relative_path(str(moved.StudyInstanceUID), sop))
    assert not stray.exists()
    study_id = served.studies()[str(first.StudyInstanceUID)].id
    conflicts = [d for _, kind, d in events_of(served.db, study_id) if kind == "instance_conflict"]
    assert conflicts == [
        {
            "sop_instance_uid": sop,
            "other_study_uid": str(moved.StudyInstanceUID),
            "calling_ae": "RELIABILITY",
        }
    ]


def _store(port: int, ds: Dataset) -> int | None:
    ae = AE(ae_title="RELIABILITY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="BREAST_AI")
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(answer.Status) if "Status" in answer else None


def _hold_database(url: str, seconds: float) -> threading.Thread:
    """Another connection holds SQLite's write lock for ``seconds`` (from now)."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    return thread


def test_a_failed_duplicate_never_deletes_the_file_another_association_acknowledged(
    node_factory: Callable[..., tuple[NodeService, Settings]],
    base: Dataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two associations store the same new instance. Before, the second, having found no
    file, failed to record it (the database was locked) and deleted the file the first had
    just acknowledged."""
    service, settings = node_factory(storage={"database_busy_timeout_seconds": 1})
    assert service.scp is not None
    spool = service.scp.spool
    inside = threading.Event()  # the second store is about to place its file
    recorded = threading.Event()  # the first store's row is committed
    holders: list[threading.Thread] = []
    order = itertools.count()
    real_adopt, real_record = spool.adopt, scp_module.record_instance

    def adopt(relative: str, source: Path) -> int:
        if next(order) == 0:  # the first: let the second get this far if it can
            inside.wait(timeout=3)
        else:
            inside.set()
            assert recorded.wait(timeout=30)
        return real_adopt(relative, source)

    def record(*args: Any, **kwargs: Any) -> Any:
        outcome = real_record(*args, **kwargs)
        if not recorded.is_set():  # the second store's recording will now fail
            holders.append(_hold_database(settings.storage.database, seconds=4))
            recorded.set()
        return outcome

    monkeypatch.setattr(spool, "adopt", adopt)
    monkeypatch.setattr(scp_module, "record_instance", record)
    ds = fresh(base, "duplicate-race")
    answers: list[int | None] = []
    senders = [
        threading.Thread(target=lambda: answers.append(_store(settings.node.port, ds)))
        for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    for thread in senders:
        thread.join(timeout=60)
    for thread in holders:  # filled while the senders ran
        thread.join(timeout=60)
    assert sorted(a or 0 for a in answers) == [status.SUCCESS, status.PROCESSING_FAILURE]

    assert service.session_factory is not None
    with service.session_factory() as session:
        (row,) = session.scalars(select(Instance)).all()
    stored = spool.path(row.path)
    assert stored.is_file(), "the acknowledged instance's file was deleted"
    assert dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID
