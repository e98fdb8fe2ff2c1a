"""Database engine and schema: SQLite (WAL) by default, PostgreSQL for a shared queue."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import structlog
from sqlalchemy import (
    Connection,
    CursorResult,
    Delete,
    Engine,
    Table,
    Update,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.db.models import Base, SchemaVersion, utcnow
from node.errors import StorageError

__all__ = [
    "SCHEMA_VERSION",
    "SessionFactory",
    "changed_rows",
    "database_now",
    "init_schema",
    "make_engine",
    "open_database",
    "open_reader",
]

log = structlog.get_logger(__name__)

SessionFactory = sessionmaker[Session]

_VERSIONS = cast(Table, SchemaVersion.__table__)


def changed_rows(session: Session, statement: Update | Delete) -> int:
    """Run an ``UPDATE`` or ``DELETE`` in ``session`` without synchronising the session's
    objects, and return how many rows it changed.

    Every conditional change of the queue (``WHERE state = ... AND generation = ...``)
    tells success from a lost race by this count.
    """
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(cast("CursorResult[Any]", result).rowcount)


def database_now(session: Session) -> datetime:
    """The database server's clock, as timezone-aware UTC: what every lease is set and
    judged by, so that nodes and workers on machines whose clocks disagree never take a
    study whose lease has not run out (or keep one whose lease has).

    PostgreSQL: ``clock_timestamp()`` on the server. SQLite has no server: its file is on
    this machine, so this machine's clock is the database's.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        value = session.scalar(select(func.clock_timestamp()))
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise StorageError(f"the database returned no time zone with its clock: {value!r}")
        return value.astimezone(timezone.utc)
    return utcnow()


def _tables(*names: str) -> list[Table]:
    return [Base.metadata.tables[name] for name in names]


def _v1(conn: Connection) -> None:
    # Version 1 is the initial schema; later versions create or ALTER only their own tables.
    Base.metadata.create_all(conn, tables=_tables("studies", "instances", "study_events"))


def _v2(conn: Connection) -> None:
    # results of each study generation, and their delivery to each destination
    Base.metadata.create_all(conn, tables=_tables("results", "deliveries"))


def _v3(conn: Connection) -> None:
    # append-only audit trail: what each peer sent, what was returned where
    Base.metadata.create_all(conn, tables=_tables("audit_events"))


def _v4(conn: Connection) -> None:
    # attempts at inferring each study generation (worker.max_attempts); version 1 made
    # the table from the current model, which has the column already
    if "attempts" not in {column["name"] for column in inspect(conn).get_columns("studies")}:
        conn.execute(text("ALTER TABLE studies ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))


def _v5(conn: Connection) -> None:
    # results counted by outcome from an index, not by reading every row (/metrics);
    # a database created at version 2 or later by this code has it already
    for index in Base.metadata.tables["results"].indexes:
        if index.name == "ix_results_outcome":
            index.create(conn, checkfirst=True)


#: Forward migrations: index i brings the schema from version i to i + 1.
_MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2, _v3, _v4, _v5)
SCHEMA_VERSION = len(_MIGRATIONS)


def make_engine(
    url: str, *, busy_timeout: float = 30.0, pool_size: int = 8, read_only: bool = False
) -> Engine:
    """An engine for ``url``.

    SQLite: WAL journal, ``synchronous=FULL`` (a committed row survives a crash), a busy
    timeout, and ``BEGIN IMMEDIATE`` transactions so concurrent writers queue on the lock
    instead of failing when a read turns into a write. With ``read_only`` (SQLite), plain
    ``BEGIN`` transactions on ``query_only`` connections: in WAL mode they read a snapshot
    and never take the write lock, so a reader never makes a writer wait, nor waits for
    one. PostgreSQL readers never block writers; ``read_only`` marks its transactions
    read-only.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(
            parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size
        )
        return engine.execution_options(postgresql_readonly=True) if read_only else engine
    if parsed.database and parsed.database != ":memory:" and not read_only:
        # never beside open connections of this process: closing any descriptor of the
        # file drops every POSIX lock the process holds on it, SQLite's included
        _private_file(Path(parsed.database))
    engine = create_engine(
        parsed,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=busy_timeout,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (SQLite gives its -wal and -shm
    files the same mode); tighten the mode of an existing file we own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open the database file {path}: {exc.strerror}") from exc


#: PostgreSQL advisory lock key held while the schema is created or migrated.
_SCHEMA_LOCK = 0x42524E44  # "BRND"


def init_schema(engine: Engine) -> int:
    """Create the schema or migrate it forward; returns the version now in place.

    Processes that start together (a node and its workers) take turns: SQLite's
    ``BEGIN IMMEDIATE`` and, on PostgreSQL, a transaction-scoped advisory lock make each
    wait until the one before has created or migrated the schema and committed.
    Raises :class:`StorageError` if the database is newer than this code.
    """
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            _VERSIONS.create(conn, checkfirst=True)
            current = conn.scalar(select(func.max(SchemaVersion.version))) or 0
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema version {current} is newer than this node "
                    f"({SCHEMA_VERSION}); upgrade the node"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[version - 1](conn)
                conn.execute(_VERSIONS.insert().values(version=version, applied_at=utcnow()))
                log.info("db.migrated", version=version)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot prepare the database: {exc}") from exc
    return SCHEMA_VERSION


def open_database(url: str, *, busy_timeout: float = 30.0, pool_size: int = 8) -> SessionFactory:
    """Engine + schema + session factory in one call (what the service and CLI use)."""
    engine = make_engine(url, busy_timeout=busy_timeout, pool_size=pool_size)
    init_schema(engine)
    return sessionmaker(engine, expire_on_commit=False)


def open_reader(url: str, *, busy_timeout: float = 30.0, pool_size: int = 4) -> SessionFactory:
    """Sessions that only read (``make_engine(read_only=True)``): what the monitoring
    endpoint's pages and ``/metrics`` use, so that they never hold up the listener's
    writes. The schema must exist (:func:`open_database` first)."""
    engine = make_engine(url, busy_timeout=busy_timeout, pool_size=pool_size, read_only=True)
    return sessionmaker(engine, expire_on_commit=False)
