"""A throwaway PostgreSQL server from Debian's ``postgresql`` package, on a free loopback
port: the scaling benchmark's shared queue, and the tests' second database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["bindir", "postgres_server"]


def bindir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` folder, or ``None``."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server(*settings: str) -> Iterator[str]:
    """Yield an SQLAlchemy URL of the ``postgres`` database of a fresh server.

    ``settings`` are extra ``-c name=value`` server options. As root the server runs as
    the ``postgres`` user (PostgreSQL refuses to run as root). Raises ``RuntimeError``
    when PostgreSQL is not installed (``make system-deps`` installs it).
    """
    folder_bin = bindir()
    if folder_bin is None:
        raise RuntimeError("PostgreSQL is not installed (make system-deps)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="breast-node-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    options = " ".join([f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", *settings])
    pg_ctl = [*as_user, str(folder_bin / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [
                *as_user,
                str(folder_bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(folder / "server.log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
