"""Shared fixtures: free ports, synthetic studies, node settings and a running node."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.app import NodeService
from node.config import Settings, load_settings


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0 and read what the kernel gave)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, every: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """A node config file in ``folder`` with a free port, its own spool and database."""
    data: dict[str, Any] = {
        "node": {"ae_title": "BREAST_AI", "host": "127.0.0.1", "port": free_port()},
        "storage": {
            "database": "sqlite:///var/node.db",
            "spool": "var/spool",
            "min_free_bytes": 0,
            "max_used_percent": 100,
        },
        "completion": {"quiet_seconds": 1, "check_interval_seconds": 0.2},
        "model": None,
        "destinations": [{"name": "out", "folder": "var/out"}],
        "logging": {"format": "json"},
        # each node under test gets its own monitoring port, so tests never share one
        "http": {"port": free_port()},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Synthetic studies by options, generated once per session: ``synthetic(studies=2, ...)``."""
    from training.synthetic import SynthOptions, write_studies

    made: dict[tuple[Any, ...], Path] = {}

    def make(studies: int = 1, seed: int = 1, **options: Any) -> Path:
        key = (studies, seed, tuple(sorted(options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp("synthetic")
            write_studies(out, studies=studies, seed=seed, options=SynthOptions(**options))
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[NodeService, Settings]]]:
    """Start in-process nodes (SCP threads + scheduler) with section overrides; stopped after."""
    services: list[NodeService] = []

    def start(**sections: dict[str, Any]) -> tuple[NodeService, Settings]:
        folder = tmp_path / f"node{len(services)}"
        folder.mkdir()
        settings = load_settings(write_config(folder, **sections), environ={})
        service = NodeService(settings)
        service.start()
        services.append(service)
        return service, settings

    yield start
    for service in services:
        service.stop()
