"""Result files written to a folder destination carry the patient's name and ID: like the
spool, they are readable by the service user only. Checked on ``breast-node serve``
started under the usual umask (022), which left them 0644 in 0755 folders."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from node.config import load_settings
from node.db import Study, open_database
from tests.conftest import wait_until
from tests.e2e.conftest import model_dir, storescu  # noqa: F401
from tests.helpers.node import Node
from tests.reliability.conftest import TERMINAL, serve_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folder_destination_files_are_0600_in_0700_folders(
    tmp_path: Path,
    model_dir: Path,  # noqa: F811
    synthetic: Callable[..., Path],
) -> None:
    files = sorted(synthetic(studies=1, seed=61, size="small").rglob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    config = serve_config(tmp_path, model_dir, outputs={"objects": ["sr", "mgcad"]})
    settings = load_settings(config, environ={})
    out = tmp_path / "var" / "out"  # made by the node
    node = Node(config, tmp_path / "node.log")
    previous = os.umask(0o022)
    try:
        node.start()
    finally:
        os.umask(previous)
    db = open_database(settings.storage.database)
    try:
        storescu(settings.node.port, files)

        def finished() -> bool:
            with db() as session:
                study = session.query(Study).filter(Study.study_uid == uid).one_or_none()
                return study is not None and study.state in TERMINAL

        assert wait_until(finished, timeout=120)
    finally:
        node.stop()
        db.kw["bind"].dispose()

    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 2, written
    for path in written:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    for folder in {out, *(p.parent for p in written)}:
        assert mode(folder) == 0o700, (folder, oct(mode(folder)))
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
