"""The whole path: storescu -> breast-node serve -> inference -> storescp and a folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import (
    ALL_OBJECTS,
    deliveries,
    e2e_config,
    load,
    read_all,
    referenced_uids,
    storescu,
    wait_for_state,
)
from tests.helpers.node import Node, StoreSCP, node_status
from tests.outputs.conftest import run_dciodvfy, run_pixelmed

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.50",  # Mammography CAD SR
}


def check_results(files: list[Path], sources: list[Path], *, pixelmed: bool) -> None:
    """Valid objects of the source study that reference its images."""
    source_sets = read_all(sources)
    study_uid = source_sets[0].StudyInstanceUID
    source_uids = {str(ds.SOPInstanceUID) for ds in source_sets}
    results = read_all(files)
    assert len({str(ds.SOPInstanceUID) for ds in results}) == len(results)
    for path, ds in zip(files, results, strict=True):
        assert ds.StudyInstanceUID == study_uid
        assert ds.PatientID == source_sets[0].PatientID
        assert ds.PatientName == source_sets[0].PatientName
        errors = [line for line in run_dciodvfy(path) if line.startswith("Error")]
        assert not errors, (path.name, errors)
        refs = referenced_uids(ds)
        assert refs & source_uids, f"{path.name} references no source image"
        assert refs <= source_uids | {str(r.SOPInstanceUID) for r in results}
        if str(ds.SOPClassUID) in SR_CLASSES:
            assert refs >= source_uids, f"{path.name} misses source images"
    srs = [p for p, ds in zip(files, results, strict=True) if str(ds.SOPClassUID) in SR_CLASSES]
    assert len(srs) == 2
    if pixelmed and shutil.which("java") and Path("/usr/share/java/pixelmed.jar").exists():
        for path, lines in run_pixelmed(srs).items():
            assert not [line for line in lines if "Error" in line], (path.name, lines)


def test_serve_infers_and_delivers_to_storescp_and_folder(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
) -> None:
    pacs = storescp(free_port())
    config = e2e_config(tmp_path, model_dir, pacs.port)
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    node.start()
    try:
        storescu(settings.node.port, mg_study)
        wait_for_state(settings, "done", "failed")
        status = node_status(config)
    finally:
        node.stop()

    (study,) = status["recent"]
    assert study["state"] == "done", study
    assert study["deliveries"] == {"sent": 2 * (2 + 2 * len(mg_study))}
    assert status["studies"]["done"] == 1
    # 1 TID 1500 SR, 1 CAD SR, a secondary capture and a presentation state per image
    expected = 2 + 2 * len(mg_study)
    rows = deliveries(settings)
    assert len(rows) == 2 * expected
    assert {r.state.value for r in rows} == {"sent"} and {r.attempts for r in rows} == {1}
    assert {r.kind for r in rows} == set(ALL_OBJECTS)

    received = pacs.files()
    folder = sorted((settings.destinations[1].folder).rglob("*.dcm"))  # type: ignore[union-attr]
    assert len(received) == len(folder) == expected
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in received}
    assert uids == {r.sop_instance_uid for r in rows}
    assert {f.parent.name for f in folder} == {study["study_uid"]}
    check_results(received, mg_study, pixelmed=True)
    check_results(folder, mg_study, pixelmed=False)  # the same objects, written to a folder
    assert {f.name for f in folder} == {f"{r.kind}-{r.sop_instance_uid}.dcm" for r in rows}
