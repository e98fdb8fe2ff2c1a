"""Patient names and IDs never reach the logs or the database, and the spool and the
database are readable by the service user only: checked on ``breast-node serve`` running
at DEBUG, with real dcmtk peers on both sides."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.engine import make_url

from node.config import load_settings
from node.db import Study, open_database
from tests.conftest import free_port, wait_until
from tests.e2e.conftest import model_dir  # noqa: F401
from tests.helpers.node import Node, StoreSCP
from tests.reliability.conftest import TERMINAL, serve_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]

NAMES = ["QUOKKAFINCH^ZEBEDIAH", "MARMOSETTE^OLUWASEUN"]
IDS = ["PID-8675309-XQ", "PID-4815162342-ZW"]


def distinctive_studies(source: Path, out: Path) -> list[Path]:
    files = []
    for index, study in enumerate(sorted(source.glob("study-*"))):
        for path in sorted(study.glob("*.dcm")):
            ds = dcmread(path)
            ds.PatientName, ds.PatientID = NAMES[index], IDS[index]
            target = out / study.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            files.append(target)
    return files


def test_no_patient_identity_in_logs_or_database_and_private_files(
    tmp_path: Path,
    model_dir: Path,  # noqa: F811
    synthetic: Callable[..., Path],
) -> None:
    files = distinctive_studies(synthetic(studies=2, seed=51, size="small"), tmp_path / "in")
    pacs = StoreSCP(free_port(), tmp_path / "pacs")
    pacs.start()
    config = serve_config(
        tmp_path,
        model_dir,
        logging={"level": "DEBUG", "format": "json"},
        inference={"cam": True},
        outputs={"objects": ["sr", "mgcad", "sc"]},
    )
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    pacs_destination = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1"}
    data["destinations"].append({**pacs_destination, "port": pacs.port})
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = load_settings(config, environ={})
    node = Node(config, tmp_path / "node.log")
    try:
        node.start()
        subprocess.run(
            ["storescu", "-aec", "BREAST_AI", "127.0.0.1", str(settings.node.port),
             *map(str, files)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        db = open_database(settings.storage.database)

        def finished() -> bool:
            with db() as session:
                states = [s.state for s in session.scalars(select(Study))]
            return len(states) == 2 and set(states) <= TERMINAL

        assert wait_until(finished, timeout=180, every=0.5)
    finally:
        node.stop()
        pacs.stop()

    # the results that went to the PACS do carry the patient: that is their job
    assert {str(dcmread(f).PatientID) for f in pacs.files()} == set(IDS)

    log = (tmp_path / "node.log").read_text(encoding="utf-8", errors="replace")
    assert '"level": "debug"' in log  # DEBUG really was on
    database = make_url(settings.storage.database).database
    assert database is not None
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    words = [*IDS, *(part for name in NAMES for part in name.split("^"))]
    for word in words:
        assert word not in log, f"{word} in the log"
        assert word not in dump, f"{word} in the database"

    spool = settings.storage.spool
    for path in [spool, *spool.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert any(spool.glob("results/*/*/*.dcm")) and any(spool.glob("studies/*/*.dcm"))
    for suffix in ("", "-wal", "-shm"):
        path = Path(database + suffix)
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
