"""A failed study always tells the archive: against ``breast-node serve`` with a dcmtk
``storescp`` destination, images missing every optional attribute get a failure report
that needs nothing from them, which dciodvfy accepts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.conftest import free_port
from tests.e2e.conftest import e2e_config, load, storescu, wait_for_state
from tests.helpers.node import Node, StoreSCP

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

#: What an image cannot do without: its identity, and the pixel data with its description.
REQUIRED = {
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
}


def bare(files: list[Path], out: Path) -> list[Path]:
    """The study's images with every attribute outside ``REQUIRED`` removed: no patient,
    no dates, no Patient Orientation, Imager Pixel Spacing, laterality, view, window..."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        ds = dcmread(path)
        for element in list(ds):
            if element.keyword not in REQUIRED:
                del ds[element.tag]
        assert "PatientOrientation" not in ds and "ImagerPixelSpacing" not in ds
        written.append(out / path.name)
        ds.save_as(written[-1], enforce_file_format=True)
    return written


def texts(ds: Dataset) -> list[str]:
    return [str(item.TextValue) for item in ds.ContentSequence if item.ValueType == "TEXT"]


def test_images_missing_every_optional_attribute_still_get_a_failure_report(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    storescp: Callable[[int], StoreSCP],
) -> None:
    """Before, the result objects could not be built (no Patient Orientation), the failure
    report could not be built either, and nothing at all was sent back."""
    port = free_port()
    pacs = storescp(port)
    config = e2e_config(tmp_path, model_dir, port, outputs={"objects": ["sr", "mgcad"]})
    settings = load(config)
    files = bare(mg_study, tmp_path / "bare")
    node = Node(config, tmp_path / "node.log")
    node.start()
    try:
        storescu(settings.node.port, files)
        study = wait_for_state(settings, "failed", "done")
    finally:
        node.stop()
    assert study.state == "failed" and study.reason, study.reason
    assert "PatientOrientation" in study.reason

    received = pacs.files()
    assert len(received) == 1, received
    report = dcmread(received[0])
    assert report.SOPClassUID == BASIC_TEXT_SR
    assert report.StudyInstanceUID == dcmread(files[0]).StudyInstanceUID
    said = " ".join(texts(report))
    assert "AI analysis was not completed" in said and "PatientOrientation" in said
    assert "not a normal (negative) result" in said
    folder = settings.destinations[1].folder  # type: ignore[union-attr]
    assert [p.name for p in folder.rglob("*.dcm")] == [f"sr-{report.SOPInstanceUID}.dcm"]

    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(received[0])], capture_output=True, text=True)
        lines = (done.stderr + done.stdout).splitlines()
        assert "BasicTextSR" in [line.strip() for line in lines], lines
        # warnings only: the images had no Patient ID or Study ID to copy (DICOMDIR keys)
        assert not [line for line in lines if line.startswith("Error")], lines
