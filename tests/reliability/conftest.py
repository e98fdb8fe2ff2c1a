"""Reliability fixtures: a ``breast-node serve`` subprocess with a tiny model, shared by a
module, and helpers to read its database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select

from node.config import Settings, load_settings
from node.db import SessionFactory, Study, open_database
from tests.conftest import write_config
from tests.e2e.conftest import model_dir  # noqa: F401  (the session's tiny model)
from tests.helpers.node import Node

FAST: dict[str, dict[str, Any]] = {
    "completion": {"quiet_seconds": 1, "check_interval_seconds": 0.2},
    "worker": {"check_interval_seconds": 0.2},
    "sending": {"check_interval_seconds": 0.2},
    "inference": {"device": "cpu", "tta": "none", "threads": 1, "cam": False},
    "outputs": {"objects": ["sr"]},
}
TERMINAL = {"done", "failed", "skipped"}


def serve_config(folder: Path, model: Path | None, **sections: dict[str, Any]) -> Path:
    """A config with fast intervals, ``model`` and one folder destination (``var/out``)."""
    merged = {name: dict(values) for name, values in FAST.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    path = write_config(folder, **merged)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["model"] = str(model) if model is not None else None
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@dataclass
class Served:
    """A running ``serve`` subprocess, its settings and a session factory on its database."""

    node: Node
    settings: Settings
    db: SessionFactory

    @property
    def pid(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid

    def alive(self) -> bool:
        return self.node.proc is not None and self.node.proc.poll() is None

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def echo(self) -> bool:
        ae = AE(ae_title="RELIABILITY")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", self.settings.node.port, ae_title="BREAST_AI")
        if not assoc.is_established:
            return False
        ok = assoc.send_c_echo().get("Status", -1) == 0
        assoc.release()
        return bool(ok)

    def studies(self) -> dict[str, Study]:
        with self.db() as session:
            return {s.study_uid: s for s in session.scalars(select(Study))}


@pytest.fixture(scope="module")
def base(synthetic: Callable[..., Path]) -> Dataset:
    """A good 'small' synthetic For Presentation mammogram."""
    return dcmread(next(synthetic(studies=1, seed=7, size="small").rglob("L-CC.dcm")))


@contextmanager
def serving(folder: Path, model: Path | None, **sections: dict[str, Any]) -> Iterator[Served]:
    """``serve`` with :func:`serve_config`, stopped on leaving."""
    config = serve_config(folder, model, **sections)
    settings = load_settings(config, environ={})
    node = Node(config, folder / "node.log")
    node.start()
    try:
        yield Served(node, settings, open_database(settings.storage.database))
    finally:
        node.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:  # noqa: F811
    with serving(tmp_path_factory.mktemp("served"), model_dir) as node:
        yield node
