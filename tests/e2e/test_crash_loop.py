"""A study whose inference kills the node is not claimed after every restart for ever:
``breast-node serve`` killed with SIGKILL each time it infers the study, restarted, and
the study failed (with its failure report, to a dcmtk ``storescp``) once
``worker.max_attempts`` claims have died."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from pydicom import dcmread

from node.config import Settings
from node.db.reads import events_of
from tests.conftest import free_port, wait_until
from tests.e2e.conftest import (
    database,
    e2e_config,
    load,
    storescu,
    study_row,
    study_state,
    wait_for_state,
)
from tests.helpers.node import Node, StoreSCP

pytestmark = [pytest.mark.peers, pytest.mark.slow]

DEFAULT_ATTEMPTS = 3  # worker.max_attempts


def claimed(settings: Settings, attempts: int) -> bool:
    """Whether the study is being inferred under its ``attempts``-th claim."""
    row = study_row(settings)
    return row is not None and row.state == "processing" and row.attempts == attempts


def test_a_study_that_kills_the_node_each_time_is_failed_after_max_attempts(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
) -> None:
    """Before, nothing counted the claims: the restarted node claimed the study again,
    and with an image that really kills it, it would have died again, for ever."""
    port = free_port()
    pacs = storescp(port)
    # a decoding process takes seconds to start: the study is in 'processing' long
    # enough to be killed there every time, as an image that kills the node would do
    config = e2e_config(tmp_path, model_dir, port, inference={"decode_processes": 1})
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    try:
        for attempt in range(DEFAULT_ATTEMPTS):
            node.start()
            if attempt == 0:
                storescu(settings.node.port, mg_study)
            # this start's own claim: the killed node left the study in 'processing',
            # so the state alone would let the kill land before the new claim
            this_claim = partial(claimed, settings, attempt + 1)
            assert wait_until(this_claim, 120, 0.02), study_state(settings)
            node.kill()
        node.start()
        study = wait_for_state(settings, "failed", "done")
        assert wait_until(lambda: study_state(settings) == "failed", 60), study_state(settings)
    finally:
        node.stop()
    assert study.state == "failed", "the study was inferred once more instead of given up"
    assert study.reason is not None and "gave up after 3 attempts" in study.reason

    events = events_of(database(settings.storage.database), study.id)
    inference_claims = [d for _, kind, d in events if kind == "claimed" and d["from"] != "sending"]
    assert len(inference_claims) == DEFAULT_ATTEMPTS + 1  # three that died, the last one
    received = [dcmread(path) for path in pacs.files()]
    assert received, "the failure report did not reach the PACS"
    said = " ".join(str(v) for ds in received for v in _texts(ds))
    assert "gave up after 3 attempts" in said


def _texts(ds: object) -> list[str]:
    """Every TextValue anywhere in an SR's content tree."""
    found: list[str] = []
    for item in getattr(ds, "ContentSequence", []):
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += _texts(item)
    return found
