"""kill -9 at random moments: nothing acknowledged is ever lost, every study completes."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from node.config import load_settings
from node.db import Instance, open_database
from tests.conftest import wait_until, write_config
from tests.helpers.node import Node, kill_while_receiving, node_status, send_logging_acks

pytestmark = [pytest.mark.peers, pytest.mark.slow]


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
    try:
        interrupted = kill_while_receiving(
            node, settings.node.port, files, ack_log, rng, cycles=4, resend=3, max_delay=0.8
        )
        node.start()
        assert not list((settings.storage.spool / "tmp").iterdir()), (
            "temporary files left after start"
        )
        acked = set(ack_log.read_text().split())
        pending = [
            f for f in files if str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) not in acked
        ]
        if pending:
            assert send_logging_acks(settings.node.port, ack_log, pending).wait(timeout=120) == 0
        assert wait_until(
            lambda: (
                (s := node_status(config)["studies"])["receiving"] == 0 and sum(s.values()) == 6
            ),
            timeout=60,
            every=0.5,
        )
        assert node_status(config)["studies"]["queued"] == 6
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
