"""A throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

The queue must work on PostgreSQL as well as SQLite (several nodes sharing one queue);
the tests prove it against a real server started here on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

__all__ = ["postgres_server"]


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yield an SQLAlchemy URL of a fresh server, or ``None`` when none can be started.

    ``BREAST_NODE_TEST_POSTGRES`` names an existing database instead. As root the server
    runs as the ``postgres`` user (PostgreSQL refuses to run as root).
    """
    given = os.environ.get("BREAST_NODE_TEST_POSTGRES")
    bindir = _bindir()
    if given or bindir is None:
        yield given
        return
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="breast-node-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
             "-l", str(folder / "server.log"), "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True, timeout=120,
            )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
