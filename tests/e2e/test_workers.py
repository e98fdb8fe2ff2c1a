"""Inference outside the listener's process: ``breast-node worker`` processes sharing the
node's database and spool, and stages that hand work on at once instead of polling."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from node.config import Settings
from node.db import Result, Study
from node.db.reads import deliveries_of, events_of
from tests.conftest import free_port, wait_until
from tests.e2e.conftest import database, e2e_config, load, storescu, wait_for_state
from tests.helpers.node import Node, StoreSCP, Worker

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_each_stage_wakes_the_next_instead_of_waiting_for_its_interval(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
    running_node: Callable[[Path], Settings],
) -> None:
    port = free_port()
    storescp(port)
    hour = {"check_interval_seconds": 3600}
    config = e2e_config(tmp_path, model_dir, port, worker=hour, sending=hour)
    settings = running_node(config)
    time.sleep(1.0)  # the jobs' first runs (at start) are over: only a wake runs them now

    start = time.monotonic()
    storescu(settings.node.port, mg_study)
    wait_for_state(settings, "done", "failed", timeout=60)
    assert wait_for_state(settings, "done").state == "done"
    # quiet period 1 s, completion checks every 0.2 s, a tiny model: seconds, not an hour
    assert time.monotonic() - start < 60


@pytest.fixture
def worker_processes() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def test_two_worker_processes_share_the_queue_and_infer_each_study_once(
    tmp_path: Path,
    model_dir: Path,
    synthetic: Callable[..., Path],
    storescp: Callable[[int], StoreSCP],
    worker_processes: list[Worker],
) -> None:
    files = sorted(synthetic(studies=4, seed=43, size="small").rglob("*.dcm"))
    port = free_port()
    pacs = storescp(port)
    config = e2e_config(
        tmp_path,
        model_dir,
        port,
        worker={"enabled": False, "batch_studies": 1, "check_interval_seconds": 0.2},
    )
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    node.start()
    try:
        worker_processes += [Worker(config, tmp_path / f"worker{i}.log") for i in (1, 2)]
        # inference yields the CPU to receiving: each worker runs at worker.nice, the node not
        assert [_nice(w.proc.pid) for w in worker_processes] == [10, 10]
        assert node.proc is not None and _nice(node.proc.pid) == 0
        for start in range(0, len(files), 4):
            storescu(settings.node.port, files[start : start + 4])
        db = database(settings.storage.database)

        def all_done() -> bool:
            with db() as session:
                states = [s.state for s in session.scalars(select(Study))]
            return len(states) == 4 and set(states) == {"done"}

        assert wait_until(all_done, timeout=240, every=0.2)
        assert [w.stop() for w in worker_processes] == [0, 0]
    finally:
        node.stop()

    with db() as session:
        studies = session.scalars(select(Study)).all()
        results = session.scalars(select(Result)).all()
    assert sorted(r.study_id for r in results) == sorted(s.id for s in studies)
    # every claim was a worker's, none the node's own (worker.enabled: false)
    workers = {f":{w.proc.pid}" for w in worker_processes}
    claimers = {
        detail["worker"]
        for study in studies
        for _, kind, detail in events_of(db, study.id)
        if kind == "claimed" and detail.get("from") == "queued"
    }
    assert claimers and {c[c.rindex(":") :] for c in claimers} <= workers
    to_pacs = [d for s in studies for d in deliveries_of(db, s.id) if d.destination == "pacs"]
    assert to_pacs and {d.state.value for d in to_pacs} == {"sent"}
    assert len(pacs.files()) == len(to_pacs)  # each object once


def _nice(pid: int) -> int:
    """The nice value of process ``pid`` (field 19 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])
