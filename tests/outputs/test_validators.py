"""Every result object passes dciodvfy, and every SR passes PixelMed's SR validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.outputs.conftest import KINDS, Built

pytestmark = pytest.mark.peers

#: PixelMed's template spells this concept "Failed  Detections" (two spaces); the
#: code meaning in PS3.16 has one. The only warning a CAD SR is allowed.
PIXELMED_TYPO = '"Failed  Detections")'


def _errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("Error")]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dciodvfy_finds_no_errors(
    kind: str, built: dict[str, Built], dciodvfy_reports: dict[Path, list[str]]
) -> None:
    entry = built[kind]
    assert entry.files
    for path in entry.files.values():
        report = dciodvfy_reports[path]
        assert _errors(report) == [], f"{path.name}: {report}"
        assert report and report[0].strip() in {
            "ComprehensiveSR",
            "MammographyCADSR",
            "SCImage",
            "GrayscaleSoftcopyPresentationState",
        }, report


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pixelmed_finds_no_errors_in_any_sr(
    kind: str, built: dict[str, Built], pixelmed_reports: dict[Path, list[str]]
) -> None:
    entry = built[kind]
    checked = 0
    for obj in entry.objects + entry.failure:
        if obj.kind not in ("sr", "mgcad"):
            continue
        report = pixelmed_reports[entry.files[obj.sop_instance_uid]]
        assert "Root Template Validation Complete" in report, report
        assert "IOD validation complete" in report, report
        assert _errors(report) == [], report
        if obj.kind == "mgcad":
            warnings = [line for line in report if line.startswith("Warning")]
            assert all(PIXELMED_TYPO in line for line in warnings), warnings
        checked += 1
    # two SRs (result and failure) per study, plus two CAD SRs for mammograms
    assert checked == (2 if kind == "us" else 4)
