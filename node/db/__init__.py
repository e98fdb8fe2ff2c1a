"""The node's database: ORM models, engine and schema, and the study queue API.

SQLite in WAL mode is the default; the same code runs on PostgreSQL so several node
processes can share one queue.
"""

from node.db.engine import SCHEMA_VERSION, SessionFactory, init_schema, make_engine, open_database
from node.db.instances import InstanceFacts, RecordOutcome, instances_of, record_instance
from node.db.models import Instance, Study, StudyEvent, StudyState, UTCDateTime, utcnow
from node.db.queue import (
    StudyRef,
    add_event,
    claim_next,
    count_by_state,
    events_of,
    recent_studies,
    record_event,
    renew_lease,
    transition,
)

__all__ = [
    "SCHEMA_VERSION",
    "Instance",
    "InstanceFacts",
    "RecordOutcome",
    "SessionFactory",
    "Study",
    "StudyEvent",
    "StudyRef",
    "StudyState",
    "UTCDateTime",
    "add_event",
    "claim_next",
    "count_by_state",
    "events_of",
    "init_schema",
    "instances_of",
    "make_engine",
    "open_database",
    "recent_studies",
    "record_event",
    "record_instance",
    "renew_lease",
    "transition",
    "utcnow",
]
