"""The study queue database: timestamps, schema, recording instances, leases and claims."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from node.db import (
    SCHEMA_VERSION,
    InstanceFacts,
    RecordOutcome,
    SessionFactory,
    Study,
    StudyState,
    claim_next,
    init_schema,
    make_engine,
    open_database,
    record_instance,
    renew_lease,
    transition,
    unclaim,
)
from node.db.models import SchemaVersion
from node.db.queue import reprocess
from node.db.reads import count_by_state, events_of
from node.db.records import StudyRef


def facts(study: str = "1.2.3", sop: str = "1.2.3.1", **extra: object) -> InstanceFacts:
    values: dict[str, object] = {
        "study_uid": study,
        "series_uid": study + ".9",
        "sop_instance_uid": sop,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "calling_ae": "PACS",
        "path": f"studies/{study}/{sop}.dcm",
        "size_bytes": 10,
        "modality": "MG",
        "accession_number": "ACC1",
    }
    values.update(extra)
    return InstanceFacts(**values)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> SessionFactory:
    return open_database(f"sqlite:///{tmp_path / 'node.db'}")


def study_ref(db: SessionFactory, uid: str = "1.2.3") -> StudyRef:
    with db() as session:
        row = session.scalars(select(Study).where(Study.study_uid == uid)).one()
        return StudyRef.of(row)


def test_sqlite_is_wal_and_times_come_back_aware_utc(db: SessionFactory) -> None:
    record_instance(db, facts())
    with db() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    ref = study_ref(db)
    assert ref.first_received_at.tzinfo is timezone.utc
    assert abs(datetime.now(timezone.utc) - ref.first_received_at) < timedelta(minutes=1)


def test_naive_datetimes_are_refused(db: SessionFactory) -> None:
    record_instance(db, facts())
    with pytest.raises(Exception, match="naive"), db.begin() as session:
        row = session.scalars(select(Study)).one()
        row.last_received_at = datetime(2024, 1, 1)
        session.flush()


def test_schema_is_created_once_and_versioned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    db = open_database(url)
    record_instance(db, facts())
    engine = db.kw["bind"]
    assert init_schema(engine) == SCHEMA_VERSION  # second start: nothing to do, data kept
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert count_by_state(open_database(url))["receiving"] == 1


def test_a_version_3_database_gains_attempts_and_keeps_its_studies(database_url: str) -> None:
    """A database made before ``studies.attempts`` existed (schema version 3)."""
    db = open_database(database_url)
    record_instance(db, facts())
    engine = db.kw["bind"]
    with engine.begin() as conn:  # back to what version 3 made
        conn.execute(text("ALTER TABLE studies DROP COLUMN attempts"))
        conn.execute(text("DELETE FROM schema_version WHERE version > 3"))
    engine.dispose()
    db = open_database(database_url)
    try:
        ref = study_ref(db)
        assert (ref.study_uid, ref.attempts) == ("1.2.3", 0)
        with db() as session:
            versions = session.scalars(select(SchemaVersion.version)).all()
        assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
    finally:
        db.kw["bind"].dispose()


def test_attempts_count_claims_of_a_generation(db: SessionFactory) -> None:
    record_instance(db, facts())
    transition(db, study_ref(db), StudyState.QUEUED)
    first = claim_next(db, "w1", StudyState.QUEUED, StudyState.PROCESSING, 60)
    assert first is not None and first.attempts == 1
    back = unclaim(db, first)  # a worker stopping before it began: not an attempt
    assert back is not None and (back.state, back.attempts) == (StudyState.QUEUED, 0)
    claimed = claim_next(db, "w1", StudyState.QUEUED, StudyState.PROCESSING, 60)
    assert claimed is not None and claimed.attempts == 1
    assert renew_lease(db, claimed, lease_seconds=-1)  # w1 died
    again = claim_next(db, "w2", StudyState.QUEUED, StudyState.PROCESSING, 60)
    assert again is not None and again.attempts == 2
    assert transition(db, again, StudyState.FAILED, "x") is not None
    assert "queued as generation 2" in reprocess(db, "1.2.3")
    assert study_ref(db).attempts == 0  # a new generation starts afresh


def test_record_new_duplicate_and_late(db: SessionFactory) -> None:
    assert record_instance(db, facts(sop="1.1")) is RecordOutcome.NEW
    assert record_instance(db, facts(sop="1.2")) is RecordOutcome.NEW
    assert record_instance(db, facts(sop="1.1")) is RecordOutcome.DUPLICATE
    ref = study_ref(db)
    assert (ref.state, ref.instance_count, ref.generation) == (StudyState.RECEIVING, 2, 1)
    assert ref.accession_number == "ACC1"

    queued = transition(db, ref, StudyState.QUEUED)
    assert queued is not None
    assert record_instance(db, facts(sop="1.1")) is RecordOutcome.DUPLICATE  # resend: no change
    assert study_ref(db).state is StudyState.QUEUED

    assert record_instance(db, facts(sop="1.3"), late_policy="ignore") is RecordOutcome.LATE_IGNORED
    ref = study_ref(db)
    assert (ref.state, ref.instance_count, ref.generation) == (StudyState.QUEUED, 3, 1)

    assert record_instance(db, facts(sop="1.4"), late_policy="reprocess") is RecordOutcome.REOPENED
    ref = study_ref(db)
    assert (ref.state, ref.instance_count, ref.generation) == (StudyState.RECEIVING, 4, 2)
    kinds = [kind for _, kind, _ in events_of(db, ref.id)]
    assert kinds == ["created", "state", "late_instance_ignored", "reopened"]


def test_an_instance_recorded_under_another_study_is_not_recorded_again(
    database_url: str,
) -> None:
    db = open_database(database_url)
    try:
        assert record_instance(db, facts(study="1.2.3", sop="1.1")) is RecordOutcome.NEW
        outcome = record_instance(db, facts(study="4.5.6", sop="1.1", calling_ae="OTHER"))
        assert outcome is RecordOutcome.CONFLICT
        with db() as session:
            assert session.scalars(select(Study.study_uid)).all() == ["1.2.3"]
        ref = study_ref(db)
        assert ref.instance_count == 1
        conflicts = [d for _, kind, d in events_of(db, ref.id) if kind == "instance_conflict"]
        assert conflicts == [
            {"sop_instance_uid": "1.1", "other_study_uid": "4.5.6", "calling_ae": "OTHER"}
        ]
        assert record_instance(db, facts(study="1.2.3", sop="1.1")) is RecordOutcome.DUPLICATE
    finally:
        db.kw["bind"].dispose()


def test_transition_is_conditional_on_the_snapshot(db: SessionFactory) -> None:
    record_instance(db, facts(sop="1.1"))
    stale = study_ref(db)
    assert transition(db, stale, StudyState.QUEUED) is not None
    assert transition(db, stale, StudyState.SKIPPED, "x") is None  # state moved on
    assert study_ref(db).state is StudyState.QUEUED


def test_claim_lease_renew_and_reclaim(db: SessionFactory) -> None:
    record_instance(db, facts())
    transition(db, study_ref(db), StudyState.QUEUED)
    claimed = claim_next(db, "w1", StudyState.QUEUED, StudyState.PROCESSING, lease_seconds=60)
    assert claimed is not None and claimed.claimed_by == "w1"
    assert claimed.state is StudyState.PROCESSING
    assert claim_next(db, "w2", StudyState.QUEUED, StudyState.PROCESSING, 60) is None
    assert renew_lease(db, claimed, lease_seconds=60)

    # w1 dies: its lease runs out and w2 takes the study over
    assert renew_lease(db, claimed, lease_seconds=-1)
    taken = claim_next(db, "w2", StudyState.QUEUED, StudyState.PROCESSING, 60)
    assert taken is not None and taken.claimed_by == "w2"
    assert not renew_lease(db, claimed, 60)
    assert transition(db, claimed, StudyState.SENDING) is None  # w1 lost the claim
    done = transition(db, taken, StudyState.SENDING)
    assert done is not None and done.claimed_by is None
    kinds = [(kind, detail.get("reclaimed")) for _, kind, detail in events_of(db, taken.id)]
    assert ("claimed", True) in kinds


def test_late_instance_supersedes_a_claimed_study(db: SessionFactory) -> None:
    record_instance(db, facts(sop="1.1"))
    transition(db, study_ref(db), StudyState.QUEUED)
    claimed = claim_next(db, "w1", StudyState.QUEUED, StudyState.PROCESSING, 60)
    assert claimed is not None
    assert record_instance(db, facts(sop="1.2")) is RecordOutcome.REOPENED
    assert transition(db, claimed, StudyState.SENDING) is None
    ref = study_ref(db)
    assert (ref.state, ref.generation, ref.claimed_by) == (StudyState.RECEIVING, 2, None)


def _queue_studies(db: SessionFactory, count: int) -> None:
    for index in range(count):
        uid = f"1.2.{index + 1}"
        record_instance(db, facts(study=uid, sop=uid + ".1"))
        transition(db, study_ref(db, uid), StudyState.QUEUED)


def _schema_version(url: str) -> int:
    engine = make_engine(url)
    try:
        return init_schema(engine)
    finally:
        engine.dispose()


def _claim_all(url: str, worker: str) -> list[int]:
    db = open_database(url)
    mine = []
    try:
        while ref := claim_next(db, worker, StudyState.QUEUED, StudyState.PROCESSING, 60):
            mine.append(ref.id)
    finally:
        db.kw["bind"].dispose()
    return mine


def test_concurrent_claims_with_threads_never_share_a_study(database_url: str) -> None:
    db = open_database(database_url)
    _queue_studies(db, 40)
    db.kw["bind"].dispose()
    results: dict[str, list[int]] = {}

    def work(name: str) -> None:
        results[name] = _claim_all(database_url, name)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [study for ids in results.values() for study in ids]
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 40


def test_processes_starting_together_on_an_empty_database_all_open_it(
    database_url: str,
) -> None:
    """A node and its workers started at once (systemd starts them together) all create
    or find the schema; none fails on another's half-made tables."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_schema_version, [database_url] * 4)
    assert versions == [SCHEMA_VERSION] * 4
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(SchemaVersion.version)).scalars().all()
    engine.dispose()
    assert sorted(rows) == list(range(1, SCHEMA_VERSION + 1))  # each migration once


def test_concurrent_claims_with_processes_never_share_a_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    _queue_studies(open_database(url), 30)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_claim_all, [(url, f"p{i}") for i in range(3)])
    claimed = [study for ids in results for study in ids]
    assert sorted(claimed) == list(range(1, 31))


def test_concurrent_receivers_create_one_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    db = open_database(url)
    outcomes: list[RecordOutcome] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for index in range(10):
            outcome = record_instance(db, facts(sop=f"1.2.3.{index}"))  # every worker, same UIDs
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(RecordOutcome.NEW) == 10
    assert outcomes.count(RecordOutcome.DUPLICATE) == 30
    assert study_ref(db).instance_count == 10


def test_claims_of_a_process_gone_from_this_machine_are_freed_at_start(
    db: SessionFactory,
) -> None:
    """A node killed while holding claims must not make its successor wait for the
    leases (queue.lease_seconds, 10 minutes by default) before finishing them."""
    import os
    import socket
    import subprocess

    from node.app import gone_claim_holders
    from node.db import expire_claims

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    holders = {
        "dead": f"{host}:{dead.pid}",  # this machine, process gone
        "alive": f"{host}:{os.getppid()}",  # this machine, still running
        "elsewhere": f"other-host:{dead.pid}",  # another machine: only its lease tells
    }
    for index, holder in enumerate(holders.values()):
        record_instance(db, facts(study=f"1.2.{index}", sop=f"1.2.{index}.1"))
        study = study_ref(db, f"1.2.{index}")
        assert transition(db, study, StudyState.QUEUED) is not None
        assert claim_next(db, holder, StudyState.QUEUED, StudyState.PROCESSING, 600) is not None

    gone = gone_claim_holders(db)
    assert gone == {holders["dead"]}
    assert expire_claims(db, gone) == 1
    taken = claim_next(db, "successor", StudyState.QUEUED, StudyState.PROCESSING, 600)
    assert taken is not None and taken.study_uid == "1.2.0"
    assert claim_next(db, "successor", StudyState.QUEUED, StudyState.PROCESSING, 600) is None
