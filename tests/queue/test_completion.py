"""Completion: quiet period, force-complete actions, eligibility outcome, late instances."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from node.config import CompletionSettings, EligibilitySettings
from node.db import (
    RecordOutcome,
    SessionFactory,
    StudyState,
    open_database,
    record_instance,
    utcnow,
)
from node.db.reads import count_by_state, events_of, recent_studies
from node.pipeline.completion import complete_due_studies
from tests.queue.test_db import facts

RULES = EligibilitySettings().rules
MG_PROC = "1.2.840.10008.5.1.4.1.1.1.2.1"


@pytest.fixture
def db(tmp_path: Path) -> SessionFactory:
    return open_database(f"sqlite:///{tmp_path / 'node.db'}")


def settings(**values: object) -> CompletionSettings:
    base: dict[str, object] = {"quiet_seconds": 60, "force_seconds": 600}
    base.update(values)
    return CompletionSettings.model_validate(base)


def test_study_completes_after_the_quiet_period(db: SessionFactory) -> None:
    record_instance(db, facts(sop="1.1"))
    now = utcnow()
    assert complete_due_studies(db, settings(), RULES, now=now + timedelta(seconds=30)) == []
    done = complete_due_studies(db, settings(), RULES, now=now + timedelta(seconds=61))
    assert [(c.trigger, c.study.state) for c in done] == [("quiet", StudyState.QUEUED)]
    assert complete_due_studies(db, settings(), RULES, now=now + timedelta(seconds=120)) == []


def test_ineligible_study_is_skipped_with_reason(db: SessionFactory) -> None:
    record_instance(
        db, facts(sop="1.1", sop_class_uid=MG_PROC, presentation_intent="FOR PROCESSING")
    )
    complete_due_studies(db, settings(), RULES, now=utcnow() + timedelta(seconds=61))
    (study,) = recent_studies(db)
    assert (study.state, study.reason) == (StudyState.SKIPPED, "only For Processing images")
    completed = [d for _, kind, d in events_of(db, study.id) if kind == "completed"]
    assert completed == [
        {
            "trigger": "quiet",
            "generation": 1,
            "instances": 1,
            "rule": None,
            "reason": "only For Processing images",
        }
    ]


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("process", StudyState.QUEUED),
        ("discard", StudyState.SKIPPED),
        ("ignore", StudyState.RECEIVING),
    ],
)
def test_force_complete_actions(db: SessionFactory, action: str, state: StudyState) -> None:
    record_instance(db, facts(sop="1.1"))
    later = utcnow() + timedelta(seconds=601)
    # keep the study busy: an instance arrives just before the check
    record_instance(db, facts(sop="1.2"))
    forced = settings(quiet_seconds=86400, force_seconds=1, force_action=action)
    complete_due_studies(db, forced, RULES, now=later)
    (study,) = recent_studies(db)
    assert study.state is state
    if action == "discard":
        assert study.reason is not None and study.reason.startswith("discarded")


def test_late_instance_reprocess_goes_through_completion_again(db: SessionFactory) -> None:
    record_instance(db, facts(sop="1.1"))
    complete_due_studies(db, settings(), RULES, now=utcnow() + timedelta(seconds=61))
    assert record_instance(db, facts(sop="1.2")) is RecordOutcome.REOPENED
    assert count_by_state(db)["receiving"] == 1
    done = complete_due_studies(db, settings(), RULES, now=utcnow() + timedelta(seconds=61))
    assert [(c.study.state, c.study.generation) for c in done] == [(StudyState.QUEUED, 2)]


def test_instance_arriving_during_the_decision_defers_it(db: SessionFactory) -> None:
    record_instance(db, facts(sop="1.1"))
    stale_now = utcnow() + timedelta(seconds=61)
    # a decision based on a snapshot taken before this instance must not win
    from node.db import transition
    from node.db.records import StudyRef

    (before,) = recent_studies(db)
    record_instance(db, facts(sop="1.2"))
    assert (
        transition(db, before, StudyState.QUEUED, unchanged_since=before.last_received_at) is None
    )
    assert isinstance(before, StudyRef)
    done = complete_due_studies(db, settings(), RULES, now=stale_now)
    assert [c.study.instance_count for c in done] == [2]
