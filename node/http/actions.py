"""Admin actions from the study page: ``retry`` and ``reprocess``, each a POST.

They exist only where ``http.token`` is set: without a token the pages are read-only and
every POST is refused. A POST is authorised like every other request (``Authorization:
Bearer <token>``, or HTTP Basic with the token as password, which is what a browser
sends after asking once) and must carry the form field ``csrf``: an HMAC of the action
and the study under the token, written into the page's form, so that another site
cannot make a logged-in browser post one. The action calls the same function as the
CLI (:func:`node.db.queue.retry`, :func:`node.db.queue.reprocess`), which records who
asked in the audit table.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from node.db import SessionFactory
from node.db.queue import reprocess, retry

__all__ = ["ACTIONS", "csrf_token", "perform"]

#: What the study page can ask for, and the function the CLI calls for it.
ACTIONS: dict[str, Callable[..., str]] = {"retry": retry, "reprocess": reprocess}


def csrf_token(secret: str, action: str, study_uid: str) -> str:
    """The ``csrf`` form value for ``action`` on ``study_uid`` under ``secret``."""
    message = f"{action}\n{study_uid}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def perform(
    session_factory: SessionFactory,
    secret: str,
    action: str,
    study_uid: str,
    given_csrf: str,
    actor: str,
) -> str:
    """Run ``action`` on ``study_uid`` for ``actor``; returns what was done.

    Raises :class:`PermissionError` for a missing or wrong ``csrf`` value and
    :class:`KeyError` for an unknown action; :class:`node.errors.NodeError` from the
    action itself (no such study, changed meanwhile).
    """
    run = ACTIONS[action]
    expected = csrf_token(secret, action, study_uid)
    if not hmac.compare_digest(expected.encode(), given_csrf.encode()):
        raise PermissionError("the form's csrf value is missing or wrong")
    return run(session_factory, study_uid, actor=actor)
