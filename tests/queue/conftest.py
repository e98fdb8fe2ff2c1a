"""Queue fixtures: the two databases the queue must work on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.db import make_engine
from node.db.models import Base, SchemaVersion
from tests.helpers.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A real PostgreSQL server for the session (Debian's postgresql), when installed."""
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    """A fresh SQLite file; and a PostgreSQL database, emptied (``make test`` installs the
    server; ``BREAST_NODE_TEST_POSTGRES`` may name another)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    return emptied_postgres(postgres_url)


@pytest.fixture
def postgres_only(postgres_url: str | None) -> str:
    """The PostgreSQL database alone, emptied: for what only a server with its own clock
    can show."""
    return emptied_postgres(postgres_url)


def emptied_postgres(url: str | None) -> str:
    if not url:
        pytest.skip("no PostgreSQL server: install Debian's postgresql to test the shared queue")
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    SchemaVersion.__table__.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
    engine.dispose()
    return url
