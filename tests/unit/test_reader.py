"""The read-only sessions of the monitoring endpoint (``open_reader``): they never take
SQLite's write lock, and opening them beside the node's own writer leaves SQLite's file
locks alone (another process must never see the database as unused and take its WAL
away while the node writes to it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from node.db import open_database, open_reader


def other_process(database: Path, sql: str) -> str:
    """Run ``sql`` in another process as ``breast-node status`` would: open the database
    (with its migrations check), read, close."""
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; from sqlalchemy import text; from node.db import open_database; "
         "factory = open_database(sys.argv[1]); session = factory(); "
         "print(session.execute(text(sys.argv[2])).all()); session.close(); "
         "factory.kw['bind'].dispose()", f"sqlite:///{database}", sql],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def test_a_reader_beside_the_writer_keeps_sqlites_locks(tmp_path: Path) -> None:
    database = tmp_path / "node.db"
    writer = open_database(f"sqlite:///{database}")
    try:
        with writer.begin() as session:  # the writer's connection stays in its pool
            session.execute(text("SELECT count(*) FROM schema_version"))
        reader = open_reader(f"sqlite:///{database}")
        with reader() as session:
            session.execute(text("SELECT 1"))
        other_process(database, "SELECT 1")  # opens and closes the database
        assert (tmp_path / "node.db-wal").exists()
        with writer.begin() as session:
            session.execute(text("CREATE TABLE marks (x INTEGER)"))
            session.execute(text("INSERT INTO marks VALUES (7)"))
        assert other_process(database, "SELECT x FROM marks") == "[(7,)]"
        with reader() as session:
            assert session.execute(text("SELECT x FROM marks")).scalar() == 7
            with pytest.raises(OperationalError, match="readonly"):
                session.execute(text("INSERT INTO marks VALUES (8)"))
        reader.kw["bind"].dispose()
    finally:
        writer.kw["bind"].dispose()
