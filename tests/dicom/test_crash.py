"""kill -9 at random moments: nothing acknowledged is ever lost, every study completes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from node.config import load_settings
from node.db import Instance, open_database
from tests.conftest import wait_until, write_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BREAST_NODE = Path(sys.executable).parent / "breast-node"
ROOT = Path(__file__).resolve().parents[2]


class Node:
    """``breast-node serve`` as a real subprocess."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(BREAST_NODE), "serve", "--config", str(self.config)], stderr=err, stdout=err
            )

        def started() -> bool:
            with self.log.open("rb") as f:
                f.seek(offset)
                return b'"node.started"' in f.read()

        assert wait_until(started, timeout=60, every=0.05), self.log.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0


def send(settings_port: int, ack_log: Path, files: list[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.dicom.sender",
            "127.0.0.1",
            str(settings_port),
            "BREAST_AI",
            str(ack_log),
            *map(str, files),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def status(config: Path) -> dict[str, dict[str, int]]:
    done = subprocess.run(
        [str(BREAST_NODE), "status", "--config", str(config), "--json", "--limit", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_kill_minus_nine_loses_nothing(tmp_path: Path, synthetic: Callable[..., Path]) -> None:
    rng = random.Random(20240611)
    source = synthetic(studies=6, seed=31, for_processing=True)
    files = sorted(source.rglob("*.dcm"))
    config = write_config(
        tmp_path, completion={"quiet_seconds": 0.5, "check_interval_seconds": 0.1}
    )
    settings = load_settings(config, environ={})
    node = Node(config, tmp_path / "node.log")
    ack_log = tmp_path / "acked.txt"
    ack_log.touch()
    interrupted = 0
    try:
        for _cycle in range(4):
            node.start()
            # the PACS resends what it has not seen acknowledged, plus a few it has
            acked = set(ack_log.read_text().split())
            by_uid = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
            pending = [f for uid, f in by_uid.items() if uid not in acked]
            resend = rng.sample(sorted(by_uid.keys() & acked), k=min(3, len(acked)))
            sender = send(settings.node.port, ack_log, [by_uid[u] for u in resend] + pending)
            time.sleep(rng.uniform(0.0, 0.8))
            node.kill()
            interrupted += sender.wait(timeout=60) != 0

        node.start()
        assert not list((settings.storage.spool / "tmp").iterdir()), (
            "temporary files left after start"
        )
        acked = set(ack_log.read_text().split())
        pending = [
            f for f in files if str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) not in acked
        ]
        if pending:
            assert send(settings.node.port, ack_log, pending).wait(timeout=120) == 0
        assert wait_until(
            lambda: (s := status(config)["studies"])["receiving"] == 0 and sum(s.values()) == 6,
            timeout=60,
            every=0.5,
        )
        assert status(config)["studies"]["queued"] == 6
        assert interrupted >= 2, "the kills should land while instances are in flight"
    finally:
        node.stop()

    acked = set(ack_log.read_text().split())
    assert len(acked) == len(files)
    db = open_database(settings.storage.database)
    with db() as session:
        rows = {row.sop_instance_uid: row for row in session.scalars(select(Instance))}
    assert acked <= rows.keys()
    for uid, row in rows.items():
        ds = dcmread(settings.storage.spool / row.path)  # complete, parsable files only
        assert ds.SOPInstanceUID == uid
        _ = ds.PixelData
    for path in (settings.storage.spool / "studies").rglob("*"):
        if path.is_file():
            dcmread(path)  # even a file written just before a kill is whole
    assert os.listdir(settings.storage.spool / "tmp") == []
