"""The audit trail: append-only rows of what came in (per association and study) and what
went out (per delivery pass, study and destination). See :class:`~node.db.models.AuditEvent`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from node.db.engine import SessionFactory, changed_rows
from node.db.models import AuditEvent, Delivery, Instance, Study, utcnow
from node.db.records import AttemptOutcome

__all__ = [
    "Received",
    "StoreAnswer",
    "add_action",
    "add_sent",
    "count_audit_before",
    "delete_audit_before",
    "record_received",
]


@dataclass(frozen=True)
class StoreAnswer:
    """One C-STORE the listener answered: the instance and the DIMSE status returned."""

    sop_instance_uid: str
    status: int


@dataclass(frozen=True)
class Received:
    """What one association delivered for one study (``study_uid`` ``None``: not stored)."""

    study_uid: str | None
    instances: int
    bytes: int


def _status(total: int, failed: int) -> str:
    if not failed:
        return "ok"
    return "failed" if failed == total else "partial"


def record_received(
    session_factory: SessionFactory,
    *,
    calling_ae: str,
    peer: str,
    answers: Sequence[StoreAnswer],
    started_at: datetime,
) -> list[Received]:
    """Append one ``received`` row per study of an association that stored instances.

    Instances answered with a non-success status are counted (with their status) on a
    row without a study, since a refused instance may never have been parsed.
    """
    stored = [a.sop_instance_uid for a in answers if a.status == 0]
    refused = Counter(f"0x{a.status:04X}" for a in answers if a.status != 0)
    now = utcnow()
    received: list[Received] = []
    with session_factory.begin() as session:
        rows = session.execute(
            select(Study.study_uid, Instance.size_bytes)
            .join(Study, Study.id == Instance.study_id)
            .where(Instance.sop_instance_uid.in_(stored))
        ).all()
        by_study: dict[str, list[int]] = {}
        for study_uid, size in rows:
            by_study.setdefault(study_uid, []).append(int(size))
        for study_uid, sizes in sorted(by_study.items()):
            received.append(Received(study_uid, len(sizes), sum(sizes)))
        if refused:
            received.append(Received(None, sum(refused.values()), 0))
        for item in received:
            detail: dict[str, Any] = {"association_started_at": started_at.isoformat()}
            if item.study_uid is None:
                detail["statuses"] = dict(refused)
            else:
                detail["bytes"] = item.bytes
            session.add(
                AuditEvent(
                    at=now,
                    kind="received",
                    study_uid=item.study_uid,
                    ae_title=calling_ae[:16],
                    peer=peer[:128],
                    instances=item.instances,
                    status="failed" if item.study_uid is None else "ok",
                    detail=json.dumps(detail),
                )
            )
    return received


def add_sent(session: Session, outcomes: Sequence[AttemptOutcome]) -> None:
    """Append ``sent`` rows for delivery attempts, inside the caller's transaction.

    One row per study and destination: the SOP Instance UIDs with the status each got
    (the DIMSE status, or the error when there was none) and which attempt of that
    object it was (``attempt``, counted by the delivery row, which the caller has already
    updated).
    """
    if not outcomes:
        return
    by_id = {outcome.delivery_id: outcome for outcome in outcomes}
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.destination,
            Delivery.sop_instance_uid,
            Delivery.attempts,
            Study.study_uid,
        )
        .join(Study, Study.id == Delivery.study_id)
        .where(Delivery.id.in_(list(by_id)))
        .order_by(Delivery.id)
    ).all()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for delivery_id, destination, sop_uid, attempts, study_uid in rows:
        outcome = by_id[delivery_id]
        groups.setdefault((study_uid, destination), []).append(
            {
                "sop_instance_uid": sop_uid,
                "status": None if outcome.status is None else f"0x{outcome.status:04X}",
                "sent": outcome.sent,
                "attempt": int(attempts),
                **({} if outcome.sent else {"error": outcome.error}),
            }
        )
    now = utcnow()
    for (study_uid, destination), items in sorted(groups.items()):
        failed = sum(1 for item in items if not item["sent"])
        session.add(
            AuditEvent(
                at=now,
                kind="sent",
                study_uid=study_uid,
                peer=destination,
                instances=len(items),
                status=_status(len(items), failed),
                detail=json.dumps({"objects": items}),
            )
        )


def add_action(session: Session, *, action: str, study_uid: str, actor: str, result: str) -> None:
    """Append an ``action`` row (``retry``, ``reprocess``) inside the caller's transaction:
    who asked (``actor``: ``cli`` or ``http <address>``) and what was done."""
    session.add(
        AuditEvent(
            at=utcnow(),
            kind=action[:16],
            study_uid=study_uid,
            peer=actor[:128],
            instances=0,
            status="ok",
            detail=json.dumps({"result": result}),
        )
    )


def count_audit_before(session: Session, cutoff: datetime) -> int:
    """How many audit rows are older than ``cutoff`` (what retention would delete)."""
    count = session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.at < cutoff)
    )
    return int(count or 0)


def delete_audit_before(session: Session, cutoff: datetime) -> int:
    """Delete audit rows older than ``cutoff`` (retention only); returns how many."""
    return changed_rows(session, delete(AuditEvent).where(AuditEvent.at < cutoff))
