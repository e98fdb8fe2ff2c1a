"""The study queue: the one owner of study and delivery state.

Every change of a study's or a delivery's state is one of the transitions below, each a
conditional ``UPDATE`` in one transaction; admin commands call the same functions as the
pipeline. Reads that change nothing live in :mod:`node.db.reads`.

==========================  ========================================================
module                      transitions
==========================  ========================================================
:mod:`.receive`             an instance arrives: create, reopen or keep its study
:mod:`.studies`             claims and leases, ``transition``, re-queue (reprocess)
:mod:`.deliveries`          store a result and its deliveries, sending, retry
:mod:`.retention`           delete finished studies' rows; files no row names
==========================  ========================================================
"""

from node.db.queue.deliveries import (
    claim_sending,
    due_deliveries,
    finish_sending,
    record_attempts,
    retry,
    retry_failed,
    save_result,
)
from node.db.queue.receive import record_instance
from node.db.queue.retention import (
    FINISHED,
    delete_study_rows,
    expired_studies,
    unreferenced_files,
)
from node.db.queue.studies import (
    add_event,
    claim_holders,
    claim_next,
    expire_claims,
    find_study,
    held_claims,
    record_event,
    release_claim,
    renew_lease,
    reprocess,
    requeue,
    transition,
    unclaim,
)

__all__ = [
    "FINISHED",
    "add_event",
    "claim_holders",
    "claim_next",
    "claim_sending",
    "delete_study_rows",
    "due_deliveries",
    "expire_claims",
    "expired_studies",
    "find_study",
    "finish_sending",
    "held_claims",
    "record_attempts",
    "record_event",
    "record_instance",
    "release_claim",
    "renew_lease",
    "reprocess",
    "requeue",
    "retry",
    "retry_failed",
    "save_result",
    "transition",
    "unclaim",
    "unreferenced_files",
]
