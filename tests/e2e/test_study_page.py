"""The study page in a real browser: Debian's Chromium, driven by Playwright with page
scripts turned off (the page needs none). Pictures are there and are what the node made;
actions exist only with a token, need the page's csrf value, and are audited; values are
escaped; no patient name or ID appears."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from node.config import HttpSettings, Settings, load_settings
from node.counters import Counters
from node.db import InstanceFacts, open_database, record_instance
from node.db.reads import audit_events
from node.http import MonitoringServer, NodeView
from node.http.study import render_study_page
from node.spool import Spool
from tests.conftest import free_port, write_config
from tests.e2e.conftest import e2e_config, storescu, wait_for_state
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.peers, pytest.mark.slow]

TOKEN = "page-token-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright import sync_api

    if CHROMIUM is None:
        pytest.fail("Debian's chromium is missing (make test installs it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def _node_with_failed_delivery(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    running_node: Callable[[Path], Settings],
    token: str | None,
) -> Settings:
    """A node whose one study was inferred and then failed its delivery to a PACS that
    never answers (the folder got the results)."""
    http = {"port": free_port(), **({"token": token} if token else {})}
    config = e2e_config(tmp_path, model_dir, free_port(), sending={"max_attempts": 1}, http=http)
    settings = running_node(config)
    storescu(settings.node.port, mg_study)
    study = wait_for_state(settings, "failed", timeout=180)
    assert study.reason is not None and "delivery to pacs failed" in study.reason
    return settings


def test_study_page_in_chromium_with_pictures_and_audited_actions(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    running_node: Callable[[Path], Settings],
    browser: object,
) -> None:
    settings = _node_with_failed_delivery(tmp_path, model_dir, mg_study, running_node, TOKEN)
    source = pydicom.dcmread(mg_study[0], stop_before_pixels=True)
    study_uid = str(source.StudyInstanceUID)
    base = f"http://127.0.0.1:{settings.http.port}"

    context = browser.new_context(  # type: ignore[attr-defined]
        java_script_enabled=False,
        http_credentials={"username": "admin", "password": TOKEN},
        viewport={"width": 1400, "height": 1000},
    )
    page = context.new_page()
    page.goto(base + "/")
    page.click(f"a:has-text('{study_uid}')")
    page.wait_for_load_state("load")
    assert page.url.endswith(f"/studies/{study_uid}")
    text = page.inner_text("body")
    assert str(source.AccessionNumber) in text
    assert "delivery to pacs failed" in text  # the whole reason
    for word in ("malignant", "benign", "normal", "disagreement", "operating point"):
        assert word in text
    for word in (str(source.PatientName), str(source.PatientID)):
        assert word not in page.content()

    # every picture loaded: a thumbnail, the image and its heat map for each of 4 images
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth, e.naturalHeight])"
    )
    sources = [src for src, width, height in images if width > 0 and height > 0]
    assert len(sources) == len(images) == 12, images
    assert sum(src.endswith("-heatmap.png") for src in sources) == 4
    assert sum(src.endswith("-thumb.png") for src in sources) == 4
    heat = next(src for src in sources if src.endswith("-heatmap.png"))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    png = page.request.get(base + heat, headers=bearer)
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    hsv = np.asarray(Image.open(io.BytesIO(png.body())).convert("HSV"))
    assert int(((hsv[..., 1] > 120) & (hsv[..., 2] > 120)).sum()) > 200  # a colour heat map
    page.screenshot(path=str(tmp_path / "study-page.png"), full_page=True)

    # a POST without the page's csrf value is refused; the page's own form works
    forged = page.request.post(
        f"{base}/studies/{study_uid}/retry", form={"csrf": "0" * 64}, headers=bearer
    )
    assert forged.status == 403
    page.click("form[action$='/retry'] button")
    page.wait_for_load_state("load")
    assert "failed -&gt; sending" in page.content()
    context.close()
    actions = [
        row
        for row in audit_events(open_database(settings.storage.database), study_uid=study_uid)
        if row["kind"] == "retry"
    ]
    assert [row["peer"] for row in actions] == ["http 127.0.0.1"]
    assert "failed -> sending" in actions[0]["detail"]["result"]


def test_without_a_token_the_page_is_read_only(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    running_node: Callable[[Path], Settings],
) -> None:
    settings = _node_with_failed_delivery(tmp_path, model_dir, mg_study, running_node, None)
    study_uid = str(pydicom.dcmread(mg_study[0], stop_before_pixels=True).StudyInstanceUID)
    url = f"http://127.0.0.1:{settings.http.port}/studies/{study_uid}"
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode()
    assert "Read-only" in page and "<form" not in page
    request = urllib.request.Request(url + "/retry", data=b"csrf=x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    refused.value.close()


def test_every_value_on_the_page_is_escaped(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config, environ={})
    session_factory = open_database(settings.storage.database)
    hostile = "<script>alert(1)</script>&"
    record_instance(
        session_factory,
        InstanceFacts(
            study_uid="1.2.3.4",
            series_uid="1.2.3.4.1",
            sop_instance_uid="1.2.3.4.1.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="<b>AE</b>",
            path="studies/x.dcm",
            size_bytes=1,
            accession_number=hostile[:16],
        ),
    )
    view = NodeView(
        settings=settings,
        session_factory=session_factory,
        read_factory=session_factory,
        spool=Spool(settings.storage.spool),
        counters=Counters(),
        listener_port=lambda: None,
        model=lambda: None,
    )
    page = render_study_page(view, "1.2.3.4")
    assert page is not None
    assert "<script>" not in page and "<b>AE</b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;AE&lt;/b&gt;" in page
    assert render_study_page(view, "9.9.9") is None
    server = MonitoringServer(view, HttpSettings(port=free_port()))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/studies/1.2.3.4/pictures/1/..%2F..%2Fnode.db"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url, timeout=30)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.stop()
