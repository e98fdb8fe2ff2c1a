"""End-to-end fixtures: a tiny model folder, synthetic studies, node configs, result checks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset
from sqlalchemy import select

from node.app import NodeService
from node.config import Settings, load_settings
from node.db import DeliveryRef, SessionFactory, Study, open_database
from node.db.reads import deliveries_of
from tests.conftest import free_port, wait_until, write_config
from tests.helpers.models import write_random_model_folder
from tests.helpers.node import StoreSCP

ALL_OBJECTS = ["sr", "mgcad", "sc", "gsps"]
PACS = "PACS"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-member random-weight model with a 128 x 64 input: quick on a CPU."""
    return write_random_model_folder(tmp_path_factory.mktemp("model") / "tiny", seed=5)


@pytest.fixture(scope="session")
def mg_study(synthetic: Callable[..., Path]) -> list[Path]:
    """One synthetic four-view mammography study (its four files)."""
    return sorted(synthetic(studies=1, seed=7, size="small").rglob("*.dcm"))


def e2e_config(
    folder: Path, model: Path | None, pacs_port: int, **sections: dict[str, Any]
) -> Path:
    """A node config with short intervals, a DICOM destination ``pacs`` on ``pacs_port``
    (AE title ``PACS``) and a folder destination ``drop`` (``folder/var/drop``)."""
    defaults: dict[str, dict[str, Any]] = {
        "completion": {"quiet_seconds": 1, "check_interval_seconds": 0.2},
        "worker": {"check_interval_seconds": 0.2},
        "sending": {
            "check_interval_seconds": 0.2,
            "backoff_initial_seconds": 0.2,
            "backoff_max_seconds": 0.5,
            "acse_timeout": 5,
            "dimse_timeout": 10,
            "network_timeout": 10,
        },
        "inference": {"device": "cpu", "tta": "none", "threads": 1},
        "outputs": {"objects": ALL_OBJECTS, "sc_size": 256},
    }
    for name, values in sections.items():
        defaults.setdefault(name, {}).update(values)
    path = write_config(folder, **defaults)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["model"] = str(model) if model is not None else None
    data["destinations"] = [
        {"name": "pacs", "ae_title": PACS, "host": "127.0.0.1", "port": pacs_port},
        {"name": "drop", "folder": "var/drop"},
    ]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[[int], StoreSCP]]:
    """Start dcmtk storescp destinations on given ports; stopped after the test."""
    started: list[StoreSCP] = []

    def start(port: int) -> StoreSCP:
        scp = StoreSCP(port, tmp_path / f"pacs{len(started)}", PACS)
        scp.start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def running_node() -> Iterator[Callable[[Path], Settings]]:
    """Start the node in this process (listener, scheduler, worker, sender); stopped after."""
    services: list[NodeService] = []

    def start(config: Path) -> Settings:
        service = NodeService(load(config))
        service.start()
        services.append(service)
        return service.settings

    yield start
    for service in services:
        service.stop()


def storescu(port: int, files: list[Path], ae_title: str = "BREAST_AI") -> None:
    """Send ``files`` to the node with dcmtk storescu (the PACS forwarding a study)."""
    subprocess.run(
        ["storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        capture_output=True,
        timeout=120,
    )


_DATABASES: dict[str, SessionFactory] = {}


def database(url: str) -> SessionFactory:
    """One session factory per database for the whole run: polling must not open
    (and migrate) a database many times a second beside the node under test."""
    if url not in _DATABASES:
        _DATABASES[url] = open_database(url)
    return _DATABASES[url]


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    yield
    for factory in _DATABASES.values():
        factory.kw["bind"].dispose()
    _DATABASES.clear()


def study_row(settings: Settings) -> Study | None:
    """The only study in the node's database (``None`` before it arrives)."""
    with database(settings.storage.database)() as session:
        return session.scalars(select(Study)).one_or_none()


def study_state(settings: Settings) -> str | None:
    row = study_row(settings)
    return None if row is None else row.state


def wait_for_state(settings: Settings, *states: str, timeout: float = 120) -> Study:
    assert wait_until(lambda: study_state(settings) in states, timeout=timeout, every=0.05), (
        f"study state {study_state(settings)!r}, expected one of {states}"
    )
    row = study_row(settings)
    assert row is not None
    return row


def deliveries(settings: Settings) -> list[DeliveryRef]:
    row = study_row(settings)
    return [] if row is None else deliveries_of(database(settings.storage.database), row.id)


def read_all(files: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(f) for f in files]


def values_of(ds: Dataset, keyword: str) -> set[str]:
    """Every value of ``keyword`` anywhere in ``ds``, nested sequences included."""
    found: set[str] = set()

    def visit(item: Dataset) -> None:
        for element in item:
            if element.keyword == keyword:
                found.add(str(element.value))
            elif element.VR == "SQ":
                for child in element.value:
                    visit(child)

    visit(ds)
    return found


def referenced_uids(ds: Dataset) -> set[str]:
    """Every Referenced SOP Instance UID in ``ds`` (SR content, evidence, source images)."""
    return values_of(ds, "ReferencedSOPInstanceUID")


def load(config: Path) -> Settings:
    return load_settings(config, environ={})


__all__ = [
    "ALL_OBJECTS",
    "database",
    "deliveries",
    "e2e_config",
    "free_port",
    "load",
    "read_all",
    "referenced_uids",
    "running_node",
    "storescu",
    "study_row",
    "study_state",
    "values_of",
    "wait_for_state",
]
