"""The node's database: ORM models, engine and schema, the study queue and its reads.

SQLite in WAL mode is the default; the same code runs on PostgreSQL so several node
processes can share one queue.

==========================  ========================================================
module                      what it holds
==========================  ========================================================
:mod:`.models`              ORM tables and the state enums (``StudyState``, ...)
:mod:`.engine`              engine, schema migrations, the ``changed_rows`` helper
:mod:`.records`             snapshots and inputs: ``StudyRef``, ``InstanceFacts``, ...
:mod:`.queue`               every state change (the one owner of study and delivery
                            state)
:mod:`.reads`               every read of the CLI, the status page and ``/metrics``
:mod:`.audit`               the append-only audit trail
==========================  ========================================================
"""

from node.db.engine import (
    SCHEMA_VERSION,
    SessionFactory,
    changed_rows,
    init_schema,
    make_engine,
    open_database,
    open_reader,
)
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
    add_event,
    claim_holders,
    claim_next,
    claim_sending,
    due_deliveries,
    expire_claims,
    finish_sending,
    held_claims,
    record_attempts,
    record_event,
    record_instance,
    release_claim,
    renew_lease,
    save_result,
    transition,
    unclaim,
)
from node.db.records import (
    AttemptOutcome,
    DeliveryRef,
    InstanceFacts,
    NewDelivery,
    NewResult,
    RecordOutcome,
    StudyRef,
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
    "changed_rows",
    "claim_holders",
    "claim_next",
    "claim_sending",
    "due_deliveries",
    "expire_claims",
    "finish_sending",
    "held_claims",
    "init_schema",
    "make_engine",
    "open_database",
    "open_reader",
    "record_attempts",
    "record_event",
    "record_instance",
    "release_claim",
    "renew_lease",
    "save_result",
    "transition",
    "unclaim",
    "utcnow",
]
