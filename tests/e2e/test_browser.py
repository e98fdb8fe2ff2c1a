"""What people look at, in a real browser: the node's status page after it processed a
study, and Orthanc showing the node's secondary capture in the study.

Debian's Chromium runs headless: ``--screenshot`` gives the picture a person would see,
``--dump-dom`` the page after its scripts ran. Screenshots stay in the test's tmp folder.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageStat

from deploy.demo.orthanc import storescu
from tests.conftest import wait_until
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers.orthanc import SC_CLASS, orthanc_site

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def chromium(url: str, *, screenshot: Path | None = None, size: str = "1400,900") -> str:
    """Load ``url`` headless; returns the DOM after scripts ran, optionally a screenshot."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            CHROMIUM,
            "--headless",
            *CHROMIUM_ARGS,
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            "--virtual-time-budget=5000",
        ]
        command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run(
            [*command, url], capture_output=True, text=True, timeout=120, check=True
        )
    return done.stdout


def non_blank(path: Path) -> None:
    stat = ImageStat.Stat(Image.open(path).convert("RGB"))
    assert max(stat.stddev) > 10, f"{path.name} looks blank"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
def test_status_page_and_orthanc_preview_in_chromium(
    tmp_path: Path, model_dir: Path, synthetic: Callable[..., Path]
) -> None:
    files = sorted(synthetic(studies=1, seed=7, size="small").rglob("*.dcm"))
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with orthanc_site(tmp_path, model_dir) as site:
        storescu(site.orthanc, files)
        site.wait_done()

        status_url = f"http://127.0.0.1:{site.http_port}/"
        dom = chromium(status_url)
        assert str(source.AccessionNumber) in dom
        assert str(source.StudyInstanceUID) in dom
        assert '<td class="state-done">done</td>' in dom
        for word in (str(source.PatientName), str(source.PatientID)):
            assert word not in dom
        chromium(status_url, screenshot=shots / "status-page.png")
        non_blank(shots / "status-page.png")

        orthanc = site.orthanc
        study_id = orthanc.find_study(str(source.StudyInstanceUID))
        assert study_id is not None
        assert wait_until(
            lambda: (
                sum(i["sop_class_uid"] == SC_CLASS for i in site.results_in(study_id)) == len(files)
            ),
            timeout=60,
        )
        capture = next(i for i in site.results_in(study_id) if i["sop_class_uid"] == SC_CLASS)
        chromium(
            f"{orthanc.url}/instances/{capture['id']}/preview",
            screenshot=shots / "orthanc-preview.png",
            size="800,800",
        )
        non_blank(shots / "orthanc-preview.png")
        # the capture is in colour (heat map and its colour bar) over a grey mammogram
        hsv = np.asarray(Image.open(shots / "orthanc-preview.png").convert("HSV"))
        colourful = (hsv[..., 1] > 120) & (hsv[..., 2] > 120)
        assert int(colourful.sum()) > 500

        explorer = f"{orthanc.url}/app/explorer.html#study?uuid={study_id}"
        dom = chromium(explorer)
        assert "AI heatmaps, not for diagnostic use" in dom
        assert "AI breast cancer detection report" in dom
        chromium(explorer, screenshot=shots / "orthanc-explorer.png")
        non_blank(shots / "orthanc-explorer.png")
