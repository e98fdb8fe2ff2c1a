"""Delivery faults with real peers: a PACS that is down for a while, one that never comes
up, and a study that cannot be inferred (it still gets a failure report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from node.config import Settings
from tests.conftest import free_port, wait_until
from tests.e2e.conftest import (
    deliveries,
    e2e_config,
    storescu,
    study_state,
    values_of,
    wait_for_state,
)
from tests.helpers.node import StoreSCP
from tests.outputs.conftest import run_dciodvfy

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_destination_down_then_up(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
    running_node: Callable[[Path], Settings],
) -> None:
    port = free_port()  # nothing listens there yet
    settings = running_node(e2e_config(tmp_path, model_dir, port, sending={"max_attempts": 100}))
    storescu(settings.node.port, mg_study)
    assert wait_until(
        lambda: any(d.destination == "pacs" and d.attempts >= 3 for d in deliveries(settings)),
        timeout=120,
    )
    # the folder did not wait for the PACS; the study waits for its own deliveries
    rows = deliveries(settings)
    assert {d.state.value for d in rows if d.destination == "drop"} == {"sent"}
    assert study_state(settings) == "sending"
    pending = [d for d in rows if d.destination == "pacs"]
    assert {d.state.value for d in pending} == {"pending"}
    assert all("no association" in (d.last_error or "") for d in pending)

    pacs = storescp(port)
    assert wait_for_state(settings, "done", "failed").state == "done"
    files = pacs.files()
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    sent = [d for d in deliveries(settings) if d.destination == "pacs"]
    assert len(files) == len(set(uids)) == len(sent)
    assert set(uids) == {d.sop_instance_uid for d in sent}
    assert {d.state.value for d in sent} == {"sent"}
    assert min(d.attempts for d in sent) >= 4  # at least three failures, then success
    assert all(d.last_status == 0 and d.sent_at is not None for d in sent)


def test_attempts_exhausted_fail_the_study_but_not_the_other_destination(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    running_node: Callable[[Path], Settings],
) -> None:
    port = free_port()  # never listens
    settings = running_node(e2e_config(tmp_path, model_dir, port, sending={"max_attempts": 3}))
    storescu(settings.node.port, mg_study)
    study = wait_for_state(settings, "done", "failed")
    assert study.state == "failed"
    assert study.reason is not None
    assert "delivery to pacs failed" in study.reason and "after 3 attempt(s)" in study.reason
    rows = deliveries(settings)
    to_pacs = [d for d in rows if d.destination == "pacs"]
    to_folder = [d for d in rows if d.destination == "drop"]
    assert {(d.state.value, d.attempts) for d in to_pacs} == {("failed", 3)}
    assert {d.state.value for d in to_folder} == {"sent"}
    folder = settings.destinations[1].folder  # type: ignore[union-attr]
    written = sorted(folder.rglob("*.dcm"))
    assert {f.name for f in written} == {Path(d.path).name for d in to_folder}
    assert not [f for f in folder.rglob("*") if f.name.endswith(".part")]


def corrupt_copy(study: list[Path], folder: Path) -> list[Path]:
    """The study with one image's pixel data cut in half (its header still parses)."""
    folder.mkdir()
    copies = []
    for index, path in enumerate(study):
        ds = pydicom.dcmread(path)
        if index == 0:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        copy = folder / path.name
        ds.save_as(copy, enforce_file_format=True)
        copies.append(copy)
    return copies


def test_inference_failure_is_reported_not_silent(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
    running_node: Callable[[Path], Settings],
) -> None:
    pacs = storescp(free_port())
    settings = running_node(e2e_config(tmp_path, model_dir, pacs.port))
    storescu(settings.node.port, corrupt_copy(mg_study, tmp_path / "corrupt"))
    study = wait_for_state(settings, "done", "failed")
    assert study.state == "failed"
    assert study.reason is not None and "inference failed" in study.reason
    assert "pixel data" in study.reason

    rows = deliveries(settings)
    assert {d.state.value for d in rows} == {"sent"}
    assert sorted(d.kind for d in rows if d.destination == "pacs") == ["mgcad", "sr"]
    reports = {str(ds.SOPClassUID): (f, ds) for f in pacs.files() for ds in [pydicom.dcmread(f)]}
    assert set(reports) == {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.50"}
    for path, ds in reports.values():
        assert ds.StudyInstanceUID == pydicom.dcmread(mg_study[0]).StudyInstanceUID
        assert not [line for line in run_dciodvfy(path) if line.startswith("Error")]
    _, cad = reports["1.2.840.10008.5.1.4.1.1.88.50"]
    assert "111245" in values_of(cad, "CodeValue")  # No algorithms succeeded; without findings
    _, sr = reports["1.2.840.10008.5.1.4.1.1.88.33"]
    assert any("pixel data" in text for text in values_of(sr, "TextValue"))
