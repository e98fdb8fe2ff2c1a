"""The node's results in the stock OHIF viewer, as a radiologist would open them.

The prebuilt OHIF app (npm ``@ohif/app``, ``make ohif``) runs against Orthanc's
DICOMweb plugin in Debian's headless chromium, driven by Playwright
(:mod:`deploy.ohif.viewer`). Synthetic studies are inferred by the shipped demo
ensemble and every result object is built by the node (:mod:`deploy.ohif.showcase`).

Before, the mammograms and their thumbnails were black (the generator wrote VOI LUT
Function, which cornerstone3D 5.x misreads), opening the TID 1500 report failed
("Something went wrong": measurement groups without coordinates), and so did a report
without measurements; the mammography hanging protocol failed on the heat maps, which
had no View Code Sequence.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deploy.ohif.showcase import Showcase, showcase
from deploy.ohif.viewer import ACTIVE_COLOUR, Viewer, missing, ohif_viewer

pytestmark = [
    pytest.mark.peers,
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Showcase:
    return showcase(tmp_path_factory.mktemp("ohif"))


@pytest.fixture(scope="module")
def viewer(cases: Showcase) -> Viewer:  # type: ignore[misc]
    hanging = cases.others[0]
    files = [
        *cases.positive.files(),
        *cases.negative.files(),
        # a study whose results hold no Comprehensive SR, for the hanging protocol
        *hanging.image_files,
        *(f for o, f in zip(hanging.objects, hanging.object_files, strict=True) if o.kind != "sr"),
    ]
    with ohif_viewer(files) as running:
        yield running


def _breast(canvas: dict[str, object]) -> None:
    """Grey levels spread over a breast, background dark (not a black or flat image)."""
    grey = np.asarray(canvas["grey"], dtype=float)
    assert grey.std() > 20, f"flat or black: std {grey.std():.1f}"
    dark, bright = (grey < 25).mean(), (grey > 60).mean()
    assert 0.1 < dark < 0.9 and 0.1 < bright < 0.9, (dark, bright)


def test_mammograms_and_thumbnails_render(cases: Showcase, viewer: Viewer) -> None:
    study = viewer.open_study(cases.positive.result.study_uid)
    assert study.errors == []
    assert study.canvases
    for canvas in study.canvases:
        _breast(canvas)
    shown = [t for t in study.thumbnails if t is not None]
    assert len(shown) >= 3  # the mammograms' series, the heat maps'
    assert all(t["std"] > 5 for t in shown), shown
    # the mammograms, the heat maps (OT), the presentation states and both SRs
    assert {d["modality"] for d in study.display_sets} == {"MG", "OT", "PR", "SR"}


def test_positive_report_outlines_the_lesion(cases: Showcase, viewer: Viewer) -> None:
    image, _, box = cases.lesion
    viewer.open_study(cases.positive.result.study_uid)
    report = viewer.open_sr(cases.settings.sr_series_description)
    assert report.errors == [] and report.measurement_report is True
    # the SR viewport shows the marked image, with the outline around the lesion
    assert any(image.sop_instance_uid in i for i in report.image_ids), report.image_ids
    active = [o for o in report.outlines if o["colour"] == "rgb(0, 255, 0)"]
    assert active, report.outlines
    points = np.asarray(active[0]["image"], dtype=float)
    x0, y0, x1, y1 = box
    assert points[:, 0].min() <= x1 and points[:, 0].max() >= x0
    assert points[:, 1].min() <= y1 and points[:, 1].max() >= y0
    assert any("Probability of cancer" in t and "%" in t for t in report.texts), report.texts
    # and on the screen: pixels of the annotation colour inside the lesion's box
    left, top, right, bottom = viewer.screen_box((x0 - 8, y0 - 8, x1 + 8, y1 + 8))
    shot = np.asarray(Image.open(io.BytesIO(viewer.screenshot())).convert("RGB"), dtype=int)
    area = shot[int(top) : int(bottom) + 1, int(left) : int(right) + 1]
    green = (np.abs(area - np.array(ACTIVE_COLOUR)).sum(axis=-1) < 60).sum()
    assert green > 20, (left, top, right, bottom, green)


def test_negative_report_opens_and_draws_nothing(cases: Showcase, viewer: Viewer) -> None:
    study = viewer.open_study(cases.negative.result.study_uid)
    assert study.errors == []
    report = viewer.open_sr(cases.settings.sr_series_description)
    assert report.errors == []
    assert report.measurement_report is False  # shown as the text it is
    assert report.outlines == []
    assert "below the operating point" in report.text


def test_mammography_hanging_protocol_takes_the_heat_maps(cases: Showcase, viewer: Viewer) -> None:
    study = viewer.open_study(cases.others[0].result.study_uid, protocol="@ohif/hpMammo")
    assert study.errors == []
    assert study.protocol == "@ohif/hpMammo"
    assert len(study.canvases) >= 3
    for canvas in study.canvases:
        _breast(canvas)
