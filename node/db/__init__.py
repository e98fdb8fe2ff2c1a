"""The node's database: ORM models, engine and schema, and the study queue API.

SQLite in WAL mode is the default; the same code runs on PostgreSQL so several node
processes can share one queue.
"""

from node.db.engine import SCHEMA_VERSION, SessionFactory, init_schema, make_engine, open_database
from node.db.instances import InstanceFacts, RecordOutcome, instances_of, record_instance
from node.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Result,
    ResultOutcome,
    Study,
    StudyEvent,
    StudyState,
    UTCDateTime,
    utcnow,
)
from node.db.queue import (
    StudyRef,
    add_event,
    claim_next,
    count_by_state,
    events_of,
    recent_studies,
    record_event,
    release_claim,
    renew_lease,
    transition,
)
from node.db.results import (
    AttemptOutcome,
    DeliveryRef,
    NewDelivery,
    NewResult,
    claim_sending,
    deliveries_of,
    due_deliveries,
    finish_sending,
    record_attempts,
    results_of,
    save_result,
)

__all__ = [
    "SCHEMA_VERSION",
    "AttemptOutcome",
    "Delivery",
    "DeliveryRef",
    "DeliveryState",
    "Instance",
    "InstanceFacts",
    "NewDelivery",
    "NewResult",
    "RecordOutcome",
    "Result",
    "ResultOutcome",
    "SessionFactory",
    "Study",
    "StudyEvent",
    "StudyRef",
    "StudyState",
    "UTCDateTime",
    "add_event",
    "claim_next",
    "claim_sending",
    "count_by_state",
    "deliveries_of",
    "due_deliveries",
    "events_of",
    "finish_sending",
    "init_schema",
    "instances_of",
    "make_engine",
    "open_database",
    "recent_studies",
    "record_attempts",
    "record_event",
    "record_instance",
    "release_claim",
    "renew_lease",
    "results_of",
    "save_result",
    "transition",
    "utcnow",
]
