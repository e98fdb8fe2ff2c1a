"""When a study is complete, and what happens to it then.

A study in ``receiving`` is complete ``completion.quiet_seconds`` after its last
instance arrived. One still receiving ``completion.force_seconds`` after its first
instance is forced: ``process`` completes it now, ``discard`` skips it, ``ignore`` keeps
waiting for the quiet period. A complete study becomes ``queued`` when the eligibility
rules accept it and ``skipped`` (with the reason) when they do not.

Each decision is one conditional transaction: an instance arriving meanwhile, or
another node process deciding first, makes it a no-op that the next run revisits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select

from node.config import CompletionSettings, EligibilityRule
from node.db import SessionFactory, Study, StudyRef, StudyState, add_event, transition, utcnow
from node.db.reads import instances_of
from node.pipeline.eligibility import Decision, decide

__all__ = ["Completed", "complete_due_studies"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Completed:
    """One study whose completion was decided."""

    study: StudyRef
    trigger: str
    """``quiet`` or ``force``."""
    decision: Decision


def complete_due_studies(
    session_factory: SessionFactory,
    settings: CompletionSettings,
    rules: Sequence[EligibilityRule],
    now: datetime | None = None,
) -> list[Completed]:
    """Decide every study that is due at ``now``; returns what was decided."""
    now = now or utcnow()
    quiet_before = now - timedelta(seconds=settings.quiet_seconds)
    force_before = now - timedelta(seconds=settings.force_seconds)
    due = Study.last_received_at <= quiet_before
    if settings.force_action != "ignore":
        due = or_(due, Study.first_received_at <= force_before)
    with session_factory() as session:
        rows = session.scalars(
            select(Study)
            .where(Study.state == StudyState.RECEIVING.value, due)
            .order_by(Study.last_received_at)
        ).all()
        candidates = [StudyRef.of(row) for row in rows]
    done: list[Completed] = []
    for study in candidates:
        trigger = "quiet" if study.last_received_at <= quiet_before else "force"
        completed = _complete(session_factory, settings, rules, study, trigger)
        if completed is not None:
            done.append(completed)
    return done


def _complete(
    session_factory: SessionFactory,
    settings: CompletionSettings,
    rules: Sequence[EligibilityRule],
    study: StudyRef,
    trigger: str,
) -> Completed | None:
    bound = log.bind(study_uid=study.study_uid, accession_number=study.accession_number)
    if trigger == "force" and settings.force_action == "discard":
        decision = Decision(
            False,
            reason=f"discarded: still receiving {settings.force_seconds:g} s after the first "
            "instance (completion.force_action: discard)",
        )
    else:
        decision = decide(instances_of(session_factory, study.id), rules)
    to_state = StudyState.QUEUED if decision.eligible else StudyState.SKIPPED
    with session_factory.begin() as session:
        moved = transition(
            session_factory,
            study,
            to_state,
            decision.reason,
            unchanged_since=study.last_received_at,
            session=session,
        )
        if moved is None:
            bound.info("completion.deferred", reason="study changed meanwhile")
            return None
        add_event(
            session,
            study.id,
            "completed",
            {
                "trigger": trigger,
                "generation": study.generation,
                "instances": study.instance_count,
                "rule": decision.rule,
                "reason": decision.reason,
            },
        )
    bound.info(
        "study.completed",
        trigger=trigger,
        state=to_state.value,
        rule=decision.rule,
        reason=decision.reason,
        generation=study.generation,
        instances=study.instance_count,
    )
    return Completed(moved, trigger, decision)
