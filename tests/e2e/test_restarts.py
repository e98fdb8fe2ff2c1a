"""Crashes and start-up: kill -9 of ``serve`` while it infers and while it sends, and a
model folder whose weights do not match its card."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from node.db import Instance, Result, Study
from node.db.reads import deliveries_of, events_of
from tests.conftest import free_port, wait_until
from tests.e2e.conftest import (
    database,
    deliveries,
    e2e_config,
    load,
    storescu,
    study_row,
    study_state,
    wait_for_state,
)
from tests.helpers.node import (
    BREAST_NODE,
    Node,
    StoreSCP,
    kill_while_receiving,
    node_status,
    send_logging_acks,
)

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_kill_minus_nine_while_inferring_and_sending_delivers_once(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
) -> None:
    rng = random.Random(20261121)
    port = free_port()
    config = e2e_config(
        tmp_path, model_dir, port, queue={"lease_seconds": 2}, sending={"max_attempts": 100}
    )
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    try:
        node.start()
        storescu(settings.node.port, mg_study)
        wait_for_state(settings, "processing", "sending")
        node.kill()  # while inferring (or, on a slow machine, just after)
        killed_while_inferring = study_state(settings) == "processing"

        node.start()  # the PACS is down: the folder gets its files, the PACS waits
        assert wait_until(
            lambda: any(d.destination == "pacs" and d.attempts >= 1 for d in deliveries(settings)),
            timeout=120,
            every=0.05,
        )
        node.kill()  # while sending

        pacs = storescp(port)
        node.start()
        time.sleep(rng.uniform(0.0, 1.0))
        node.kill()  # at a seeded random moment of the retry, perhaps mid-association

        node.start()
        assert wait_for_state(settings, "done", "failed").state == "done"
    finally:
        node.stop()

    rows = deliveries(settings)
    expected = 2 + 2 * len(mg_study)
    assert len(rows) == 2 * expected and {d.state.value for d in rows} == {"sent"}
    files = pacs.files()
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    assert len(files) == len(set(uids)) == expected
    assert set(uids) == {d.sop_instance_uid for d in rows}
    folder = settings.destinations[1].folder  # type: ignore[union-attr]
    assert len(list(folder.rglob("*.dcm"))) == expected
    assert not [f for f in folder.rglob("*") if f.name.endswith(".part")]

    db = database(settings.storage.database)
    with db() as session:
        assert len(session.scalars(select(Result)).all()) == 1
    study = study_row(settings)
    assert study is not None
    if killed_while_inferring:  # its lease expired and the restarted node took it over
        claims = [detail for _, kind, detail in events_of(db, study.id) if kind == "claimed"]
        assert any(c.get("reclaimed") and c.get("from") == "processing" for c in claims)


def test_serve_refuses_a_model_whose_weights_do_not_match_its_card(
    tmp_path: Path, model_dir: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(model_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    config = e2e_config(tmp_path, broken, free_port())
    done = subprocess.run(
        [str(BREAST_NODE), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "error:" in done.stderr and "m0.safetensors" in done.stderr
    assert '"node.started"' not in done.stderr


def test_kill_minus_nine_while_receiving_processes_and_delivers_each_study_once(
    tmp_path: Path,
    model_dir: Path,
    synthetic: Callable[..., Path],
    storescp: Callable[[int], StoreSCP],
) -> None:
    """The whole chain after crashes mid-transfer: every acknowledged instance is kept,
    every study is inferred and its results reach both destinations, none twice."""
    rng = random.Random(20261122)
    files = sorted(synthetic(studies=3, seed=41, size="small").rglob("*.dcm"))
    uid_of = {f: str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    port = free_port()
    pacs = storescp(port)
    config = e2e_config(tmp_path, model_dir, port, completion={"quiet_seconds": 3})
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    acks = tmp_path / "acked.txt"
    acks.touch()
    try:
        interrupted = kill_while_receiving(
            node, settings.node.port, files, acks, rng, cycles=3, resend=2, max_delay=0.6
        )
        node.start()
        acked = set(acks.read_text().split())
        pending = [f for f in files if uid_of[f] not in acked]
        if pending:
            assert send_logging_acks(settings.node.port, acks, pending).wait(timeout=120) == 0
        db = database(settings.storage.database)

        def all_done() -> bool:
            with db() as session:
                states = [s.state for s in session.scalars(select(Study))]
            return len(states) == 3 and set(states) == {"done"}

        assert wait_until(all_done, timeout=240, every=0.2), node_status(config)["studies"]
    finally:
        node.stop()

    assert interrupted >= 1, "at least one kill should land while instances are in flight"
    assert set(acks.read_text().split()) == set(uid_of.values())
    with db() as session:
        kept = set(session.scalars(select(Instance.sop_instance_uid)))
        results = session.scalars(select(Result)).all()
        studies = session.scalars(select(Study)).all()
    assert set(uid_of.values()) <= kept
    # one result per study generation, and each study's latest one delivered everywhere
    assert len({(r.study_id, r.generation) for r in results}) == len(results)
    sent = [d for s in studies for d in deliveries_of(db, s.id) if d.state.value == "sent"]
    for name, received in (
        ("pacs", pacs.files()),
        ("drop", sorted((tmp_path / "var" / "drop").rglob("*.dcm"))),
    ):
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in received]
        assert len(uids) == len(set(uids)), f"{name} received an object twice"
        assert set(uids) == {d.sop_instance_uid for d in sent if d.destination == name}
        assert {
            str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in received
        } == {s.study_uid for s in studies}
