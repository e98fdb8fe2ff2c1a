"""Scheduled callables, run by the service's APScheduler ``BackgroundScheduler``.

Each job catches and logs its own failures so that one bad run never stops the
schedule; the next run simply tries again.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from node.config import CompletionSettings, EligibilityRule
from node.db import SessionFactory
from node.pipeline.completion import Completed, complete_due_studies

__all__ = ["complete_studies"]

log = structlog.get_logger(__name__)


def complete_studies(
    session_factory: SessionFactory,
    settings: CompletionSettings,
    rules: Sequence[EligibilityRule],
) -> list[Completed]:
    """Job: move every study that is due from ``receiving`` to ``queued`` or ``skipped``."""
    try:
        return complete_due_studies(session_factory, settings, rules)
    except Exception:
        log.exception("job.failed", job="complete_studies")
        return []
