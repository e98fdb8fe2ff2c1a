"""A throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

The queue must work on PostgreSQL as well as SQLite (several nodes sharing one queue);
the tests prove it against a real server started on a free loopback port by
:mod:`bench.postgres` (the scaling benchmark starts its queue the same way).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench.postgres import bindir
from bench.postgres import postgres_server as _server

__all__ = ["postgres_server"]


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yield an SQLAlchemy URL of a fresh server, or ``None`` when none can be started.

    ``BREAST_NODE_TEST_POSTGRES`` names an existing database instead.
    """
    given = os.environ.get("BREAST_NODE_TEST_POSTGRES")
    if given or bindir() is None:
        yield given
        return
    with _server("-c fsync=off") as url:
        yield url
