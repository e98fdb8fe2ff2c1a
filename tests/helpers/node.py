"""Real processes for end-to-end tests: ``breast-node serve`` and a dcmtk ``storescp``."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread

from tests.conftest import wait_until

__all__ = [
    "BREAST_NODE",
    "Node",
    "StoreSCP",
    "Worker",
    "healthz",
    "kill_while_receiving",
    "node_status",
    "send_logging_acks",
]

ROOT = Path(__file__).resolve().parents[2]

BREAST_NODE = Path(sys.executable).parent / "breast-node"


class Node:
    """``breast-node serve`` as a real subprocess, logging JSON lines to ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        """Start ``serve``; with ``wait``, return once it logged ``node.started``."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(BREAST_NODE), "serve", "--config", str(self.config)], stderr=err, stdout=err
            )
        if not wait:
            return

        def started() -> bool:
            with self.log.open("rb") as f:
                f.seek(offset)
                return b'"node.started"' in f.read()

        assert wait_until(started, timeout=120, every=0.05), self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and expect a clean exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0


class Worker:
    """``breast-node worker`` as a subprocess, logging to ``log``; started at once."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BREAST_NODE), "worker", "--config", str(config)], stdout=out, stderr=out
            )
        assert wait_until(lambda: b'"worker.started"' in log.read_bytes(), timeout=120), (
            log.read_text()
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """``GET /healthz`` of the node whose monitoring endpoint is on ``port``: the HTTP
    status and the JSON answer."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def node_status(config: Path) -> dict[str, Any]:
    """``breast-node status --json`` as data."""
    done = subprocess.run(
        [str(BREAST_NODE), "status", "--config", str(config), "--json", "--limit", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


class StoreSCP:
    """dcmtk ``storescp`` receiving into ``folder`` (one file per SOP Instance UID)."""

    def __init__(self, port: int, folder: Path, ae_title: str = "PACS") -> None:
        self.port = port
        self.folder = folder
        self.ae_title = ae_title
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start listening; returns once an association can be made."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                shutil.which("storescp") or "storescp",
                "-aet",
                self.ae_title,
                "-od",
                str(self.folder),
                "+B",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            echo = subprocess.run(
                ["echoscu", "-aec", self.ae_title, "127.0.0.1", str(self.port)],
                capture_output=True,
                timeout=30,
            )
            return echo.returncode == 0

        assert wait_until(listening, timeout=30, every=0.1)

    def files(self) -> list[Path]:
        """Every file received so far."""
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def send_logging_acks(port: int, acks: Path, files: list[Path]) -> subprocess.Popen[bytes]:
    """Send ``files`` to the node on ``port`` from a separate process that appends each
    acknowledged SOP Instance UID to ``acks`` (see ``tests/dicom/sender.py``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dicom.sender", "127.0.0.1", str(port), "BREAST_AI",
         str(acks), *map(str, files)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def kill_while_receiving(
    node: Node,
    port: int,
    files: list[Path],
    acks: Path,
    rng: random.Random,
    *,
    cycles: int,
    resend: int,
    max_delay: float,
) -> int:
    """``cycles`` times: start the node, send what it has not acknowledged yet plus
    ``resend`` files it has (a PACS resending), and kill -9 it after a seeded random
    delay of up to ``max_delay`` seconds. Returns how many sends the kills cut short."""
    uid_of = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    interrupted = 0
    for _cycle in range(cycles):
        node.start()
        acked = set(acks.read_text().split())
        pending = [f for f in files if uid_of[f] not in acked]
        again = rng.sample([f for f in files if uid_of[f] in acked], k=min(resend, len(acked)))
        sender = send_logging_acks(port, acks, again + pending)
        time.sleep(rng.uniform(0.0, max_delay))
        node.kill()
        interrupted += sender.wait(timeout=60) != 0
    return interrupted
