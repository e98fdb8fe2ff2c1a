"""Leases on a shared queue: judged by the database server's clock, not each machine's,
and a sender that lost its lease sends and records nothing more. Against the real
PostgreSQL server the suite starts (and SQLite where clocks do not matter)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import node.db.models as models
import node.db.queue.deliveries as deliveries_module
import node.db.queue.studies as studies_module
import node.pipeline.delivery as delivery_module
from node.config import Settings
from node.db import (
    NewDelivery,
    NewResult,
    ResultOutcome,
    SessionFactory,
    Study,
    StudyState,
    claim_next,
    claim_sending,
    expire_claims,
    open_database,
    record_instance,
    renew_lease,
    save_result,
    transition,
)
from node.db.models import AuditEvent
from node.db.reads import deliveries_of
from node.pipeline.delivery import Sender
from node.spool import Spool
from tests.queue.test_db import facts, study_ref

LEASE = 600.0


@pytest.fixture
def postgres(postgres_only: str) -> Iterator[SessionFactory]:
    db = open_database(postgres_only)
    yield db
    db.kw["bind"].dispose()


@pytest.fixture
def queue(database_url: str) -> Iterator[SessionFactory]:
    db = open_database(database_url)
    yield db
    db.kw["bind"].dispose()


def clock_ahead(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """This machine's clock runs ``hours`` ahead of the database server's."""
    real = models.utcnow

    def ahead() -> datetime:
        return real() + timedelta(hours=hours)

    for module in (models, studies_module, deliveries_module, delivery_module):
        monkeypatch.setattr(module, "utcnow", ahead)


def server_now(db: SessionFactory) -> datetime:
    with db() as session:
        value = session.scalar(text("SELECT clock_timestamp()"))
    assert isinstance(value, datetime)
    return value


def test_a_machine_whose_clock_runs_ahead_never_takes_a_study_under_lease(
    postgres: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each machine judged leases by its own clock: one an hour ahead saw every
    lease expired and took studies other workers were inferring and sending."""
    db = postgres
    record_instance(db, facts(study="1.1", sop="1.1.1"))
    transition(db, study_ref(db, "1.1"), StudyState.QUEUED)
    record_instance(db, facts(study="2.2", sop="2.2.1"))
    transition(db, study_ref(db, "2.2"), StudyState.QUEUED)
    inferring = claim_next(db, "host-a:1", StudyState.QUEUED, StudyState.PROCESSING, LEASE)
    assert inferring is not None and inferring.study_uid == "1.1"
    sending = claim_next(db, "host-a:1", StudyState.QUEUED, StudyState.PROCESSING, LEASE)
    assert sending is not None and sending.study_uid == "2.2"
    sending = save_result(db, sending, NewResult(ResultOutcome.RESULT), [_delivery("2.2")])
    assert sending is not None and sending.state is StudyState.SENDING
    assert claim_sending(db, "host-a:1", LEASE, 10)

    clock_ahead(monkeypatch, hours=1)  # host B
    assert claim_next(db, "host-b:2", StudyState.QUEUED, StudyState.PROCESSING, LEASE) is None
    assert claim_sending(db, "host-b:2", LEASE, 10) == []
    held = study_ref(db, "1.1")
    assert held.claimed_by == "host-a:1"
    # B's clock never sets a lease either: a renewal ends LEASE seconds after the server's now
    assert renew_lease(db, held, LEASE)
    expires = study_ref(db, "1.1").lease_expires_at
    assert expires is not None
    assert abs((expires - server_now(db)).total_seconds() - LEASE) < 30


def _delivery(study_uid: str, destination: str = "drop") -> NewDelivery:
    return NewDelivery(
        destination=destination,
        sop_instance_uid=f"{study_uid}.99",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
        kind="sr",
        path=f"results/{study_uid}/1/sr-{study_uid}.99.dcm",
    )


def test_a_sender_that_lost_its_lease_sends_and_records_nothing(
    queue: SessionFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a sender went on sending and recording the deliveries of a study another
    sender had taken over after its lease ran out."""
    db = queue
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    folder = tmp_path / "drop"
    settings = Settings.model_validate(
        {"destinations": [{"name": "drop", "folder": str(folder)}], "model": None}
    )
    record_instance(db, facts(study="3.3", sop="3.3.1"))
    transition(db, study_ref(db, "3.3"), StudyState.QUEUED)
    claimed = claim_next(db, "w1", StudyState.QUEUED, StudyState.PROCESSING, LEASE)
    assert claimed is not None
    delivery = _delivery("3.3")
    spool.write(delivery.path, [b"DICM result bytes"])
    assert save_result(db, claimed, NewResult(ResultOutcome.RESULT), [delivery]) is not None

    real_due = delivery_module.due_deliveries
    taken_over: list[Any] = []

    def due_then_taken_over(*args: Any, **kwargs: Any) -> Any:
        due = real_due(*args, **kwargs)
        # sender A stalls here (a pause, a partition); its lease runs out, B takes over
        expire_claims(db, ["A"])
        taken_over.extend(claim_sending(db, "B", LEASE, 10))
        return due

    monkeypatch.setattr(delivery_module, "due_deliveries", due_then_taken_over)
    assert Sender(settings, db, spool, "A").step() == 1
    assert [s.claimed_by for s in taken_over] == ["B"]

    assert not list(folder.rglob("*.dcm")), "A delivered a study B holds"
    with db() as session:
        study = session.scalars(select(Study).where(Study.study_uid == "3.3")).one()
        assert study.claimed_by == "B" and study.state == StudyState.SENDING.value
        assert not session.scalars(select(AuditEvent).where(AuditEvent.kind == "sent")).all()
    (row,) = deliveries_of(db, study.id)
    assert (row.state.value, row.attempts) == ("pending", 0)

    monkeypatch.setattr(delivery_module, "due_deliveries", real_due)
    expire_claims(db, ["B"])  # B stops; whoever claims next delivers it once
    assert Sender(settings, db, spool, "C").step() == 1
    assert [p.name for p in folder.rglob("*.dcm")] == ["sr-3.3.99.dcm"]
    (row,) = deliveries_of(db, study.id)
    assert (row.state.value, row.attempts) == ("sent", 1)
