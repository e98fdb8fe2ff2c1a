"""Breast ultrasound end to end, as a new user runs it: the model settings of
config/node.example.yaml (models/demo for mammograms, models/demo-us for ultrasound), a
real ``breast-node serve``, studies sent with dcmtk storescu and results delivered to a
dcmtk storescp. An ultrasound study, and a study with mammograms and ultrasound images,
both end ``done`` with valid results that say which model made what."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset

from node.models.card import read_card
from tests.conftest import free_port
from tests.e2e.conftest import e2e_config, load, read_all, storescu, wait_for_state
from tests.helpers.images import one_study
from tests.helpers.node import BREAST_NODE, Node, StoreSCP, node_status
from tests.outputs.conftest import run_dciodvfy, run_pixelmed
from tests.outputs.test_validators import OPERATING_POINT_VALUES

pytestmark = [pytest.mark.peers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "node.example.yaml"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"


def example_models() -> dict[str, Any]:
    """The model keys of config/node.example.yaml, resolved against its folder as the node
    resolves them."""
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    resolved: dict[str, Any] = {}
    for key in ("model", "models"):
        if key in example:
            value = example[key]
            folders = value if isinstance(value, list) else [value]
            paths = [str((EXAMPLE.parent / f).resolve()) for f in folders if f is not None]
            resolved[key] = paths if isinstance(value, list) else (paths or [None])[0]
    return resolved


def run_study(
    tmp_path: Path, files: list[Path], storescp: Callable[[int], StoreSCP]
) -> tuple[dict[str, Any], list[Path]]:
    """Serve with the example's models, send ``files``, wait; the study's status row and
    what the storescp received."""
    pacs = storescp(free_port())
    config = e2e_config(tmp_path, None, pacs.port)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    del data["model"], data["inference"]["tta"]  # the defaults: each card's own TTA
    data.update(example_models())
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = load(config)
    node = Node(config, tmp_path / "node.log")
    node.start()
    try:
        storescu(settings.node.port, files)
        wait_for_state(settings, "done", "failed", timeout=300)
        status = node_status(config)
    finally:
        node.stop()
    (study,) = status["recent"]
    return study, pacs.files()


def check_valid(received: list[Path], sources: list[Path]) -> list[Dataset]:
    """Every received object is of the source study, dciodvfy finds no error in it, and
    PixelMed none in its SRs; returns the objects."""
    source_sets = read_all(sources)
    results = read_all(received)
    assert len({str(ds.SOPInstanceUID) for ds in results}) == len(results)
    for path, ds in zip(received, results, strict=True):
        assert ds.StudyInstanceUID == source_sets[0].StudyInstanceUID
        errors = [line for line in run_dciodvfy(path) if line.startswith("Error")]
        assert not errors, (path.name, errors)
    srs = [p for p, ds in zip(received, results, strict=True) if ds.Modality == "SR"]
    if shutil.which("java") and Path("/usr/share/java/pixelmed.jar").exists():
        for path, lines in run_pixelmed(srs).items():
            errors = [line for line in lines if line.startswith("Error")]
            # the demo card gives each operating point its specificity and sensitivity
            assert all(OPERATING_POINT_VALUES.match(line) for line in errors), (path.name, errors)
    return results


def _model(ds: Dataset) -> str:
    if "ManufacturerModelName" in ds:
        return str(ds.ManufacturerModelName)
    return str(ds.DerivationDescription).split()[4]  # "Grad-CAM heat map of <name> ..."


def test_an_ultrasound_study_is_inferred_by_the_ultrasound_model(
    tmp_path: Path, synthetic: Callable[..., Path], storescp: Callable[[int], StoreSCP]
) -> None:
    files = sorted(synthetic(studies=1, seed=21, modality="us").rglob("*.dcm"))
    study, received = run_study(tmp_path, files, storescp)
    assert study["state"] == "done", study["reason"]
    results = check_valid(received, files)
    kinds = sorted(str(ds.SOPClassUID) for ds in results)
    assert COMPREHENSIVE_SR in kinds and CAD_SR not in kinds  # no CAD SR for ultrasound
    assert {_model(ds) for ds in results} == {"demo-us"}
    assert study["deliveries"] == {"sent": 2 * len(results)}  # the PACS and the folder


def test_a_mammography_and_ultrasound_study_is_inferred_part_by_part(
    tmp_path: Path, synthetic: Callable[..., Path], storescp: Callable[[int], StoreSCP]
) -> None:
    files = one_study(
        sorted(synthetic(studies=1, seed=22).rglob("*.dcm"))
        + sorted(synthetic(studies=1, seed=23, modality="us").rglob("*.dcm")),
        tmp_path / "study",
    )
    study, received = run_study(tmp_path, files, storescp)
    assert study["state"] == "done", study["reason"]
    results = check_valid(received, files)
    modality = {
        str(ds.SOPInstanceUID): str(ds.Modality)
        for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)
    }
    srs = [ds for ds in results if ds.SOPClassUID == COMPREHENSIVE_SR]
    assert sorted(_model(ds) for ds in srs) == ["demo", "demo-us"]
    assert [_model(ds) for ds in results if ds.SOPClassUID == CAD_SR] == ["demo"]
    for ds in results:
        if ds.Modality != "SR":  # a heat map or a presentation state: made by its image's model
            assert _model(ds) == {"MG": "demo", "US": "demo-us"}[modality[_source(ds)]]
    listed = subprocess.run(
        [str(BREAST_NODE), "studies", "--config", str(tmp_path / "node.yaml"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (row,) = json.loads(listed.stdout)
    versions = {name: read_card(ROOT / "models" / name).version for name in ("demo", "demo-us")}
    assert row["model"] == f"demo {versions['demo']}, demo-us {versions['demo-us']}"


def _source(ds: Dataset) -> str:
    """The image a secondary capture or a presentation state was made for."""
    if "SourceImageSequence" in ds:
        return str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
    return str(ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID)
