"""Monitoring endpoint, admin operations and audit trail on a node that processed a study.

One in-process node (seeded random model, storescu as the sender) infers a synthetic
study; its DICOM destination is down, so the study fails after one attempt. The tests
then read it through the HTTP routes and the CLI, retry it once the destination is up,
reprocess it, and purge it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
import yaml

from node.app import NodeService
from node.cli import main
from node.config import HttpSettings, load_settings
from node.db import utcnow
from node.db.queue import reprocess, retry
from node.db.reads import audit_events, list_studies, show_study
from node.http import MonitoringServer, NodeView
from node.pipeline.retention import purge
from node.spool import Spool
from tests.conftest import free_port, wait_until, write_config
from tests.helpers.models import write_random_model_folder
from tests.helpers.node import StoreSCP

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@dataclass
class Site:
    service: NodeService
    config: Path
    study_uid: str
    accession: str
    patient_words: tuple[str, ...]
    pacs_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.settings.http.port}"

    def state(self) -> str:
        return list_studies(self.service.session_factory)[0].state


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, synthetic: Callable[..., Path]
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("site")
    files = sorted(synthetic(studies=1, seed=7, size="small").rglob("*.dcm"))
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    model = write_random_model_folder(folder / "model", seed=5)
    pacs_port = free_port()  # nothing listens there yet
    config = write_config(
        folder,
        http={"port": free_port()},
        worker={"check_interval_seconds": 0.2},
        inference={"device": "cpu", "tta": "none", "threads": 1},
        outputs={"sc_size": 256},
        sending={"check_interval_seconds": 0.2, "max_attempts": 1, "acse_timeout": 5},
    )
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["model"] = str(model)
    data["destinations"] = [
        {"name": "drop", "folder": "var/drop"},
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port},
    ]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    service = NodeService(load_settings(config, environ={}))
    service.start()
    try:
        subprocess.run(
            ["storescu", "-aec", "BREAST_AI", "127.0.0.1", str(service.settings.node.port)]
            + [str(f) for f in files],
            check=True,
            capture_output=True,
            timeout=120,
        )
        site = Site(
            service,
            config,
            str(header.StudyInstanceUID),
            str(header.AccessionNumber),
            (str(header.PatientName), str(header.PatientID)),
            pacs_port,
            folder,
        )
        assert wait_until(
            lambda: bool(list_studies(service.session_factory)) and site.state() == "failed",
            timeout=120,
        )
        yield site
    finally:
        service.stop()


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_status_page_health_and_metrics(site: Site) -> None:
    status, kind, page = get(site.url + "/")
    assert status == 200 and kind.startswith("text/html")
    assert site.accession in page and site.study_uid in page
    assert "state-failed" in page and "delivery to pacs failed" in page
    for word in site.patient_words:
        assert word not in page

    status, kind, body = get(site.url + "/healthz")
    health = json.loads(body)
    assert status == 200 and kind == "application/json" and health["healthy"] is True
    assert "tiny" in health["checks"]["model"]["detail"]

    status, kind, text = get(site.url + "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    lines = set(text.splitlines())
    assert 'breast_node_studies{state="failed"} 1' in lines
    assert 'breast_node_instances_received_total{status="0x0000"} 4' in lines
    assert "breast_node_inference_seconds_count 1" in lines
    assert "breast_node_queue_wait_seconds_count 1" in lines
    failures = next(line for line in lines if line.startswith("breast_node_send_failures_total"))
    assert int(failures.split()[1]) >= 1
    spool = next(line for line in lines if line.startswith("breast_node_spool_bytes "))
    assert int(spool.split()[1]) > 0
    assert get(site.url + "/nothing")[0] == 404


def test_unhealthy_and_token(site: Site) -> None:
    service = site.service
    assert service.session_factory is not None
    view = NodeView(
        settings=service.settings,
        session_factory=service.session_factory,
        read_factory=service.session_factory,
        spool=Spool(service.settings.storage.spool),
        counters=service.counters,
        listener_port=lambda: None,  # as if the listener had stopped
        model=lambda: None,
    )
    token = "s3cret-token-0123456789"
    server = MonitoringServer(view, HttpSettings(port=free_port(), token=token))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(base + "/healthz")[0] == 401
        assert get(base + "/healthz", token="wrong-token-0123456789")[0] == 401
        status, _, body = get(base + "/healthz", token=token)
        health = json.loads(body)
        assert status == 503 and health["healthy"] is False
        assert not health["checks"]["listener"]["ok"]
        assert not health["checks"]["model"]["ok"]
        assert health["checks"]["database"]["ok"] and health["checks"]["spool"]["ok"]
    finally:
        server.stop()


def test_cli_listings_and_audit(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(site.config)
    table = cli(capsys, "studies", "--config", config, "--state", "failed")
    assert site.study_uid in table and site.accession in table
    rows = json.loads(cli(capsys, "studies", "--config", config, "--since", "1h", "--json"))
    assert [row["study_uid"] for row in rows] == [site.study_uid]
    assert rows[0]["score"] is not None and rows[0]["inference_seconds"] is not None
    shown = cli(capsys, "show", site.study_uid, "--config", config, "--json")
    known = json.loads(shown)
    assert known["instances"]["count"] == 4
    assert {d["destination"] for d in known["deliveries"]} == {"drop", "pacs"}
    assert any(event["kind"] == "result" for event in known["events"])
    summary = cli(capsys, "show", site.study_uid, "--config", config)
    (result,) = known["results"][-1]["detail"]["parts"]  # one model inferred the study
    assert f"accession {site.accession}" in summary and "reason: delivery to pacs failed" in summary
    for image in result["images"]:
        assert image["sop_instance_uid"] in summary
        # every label's probability and the disagreement, as the model gave them
        for label, p in image["class_probabilities"].items():
            assert f"{label} {100 * p:.1f} %" in summary
        assert f"disagreement {100 * image['uncertainty']:.1f} %" in summary
        for region in image["regions"]:
            # regions at or above the operating point are listed with their score
            x, y = region["peak_point"]
            shown_region = f": {100 * region['score']:.1f} % at ({x:.0f}, {y:.0f})" in summary
            assert shown_region == (region["score"] >= result["threshold"])
    assert "pacs: failed" in summary and "drop: sent" in summary
    for text in (table, shown, summary):
        for word in site.patient_words:
            assert word not in text

    audit = json.loads(cli(capsys, "audit", "--config", config, "--json"))
    received = [row for row in audit if row["kind"] == "received"]
    assert len(received) == 1
    assert received[0]["ae_title"] == "STORESCU" and received[0]["instances"] == 4
    assert received[0]["peer"].startswith("127.0.0.1:")
    assert received[0]["study_uid"] == site.study_uid
    sent = {row["peer"]: row for row in audit if row["kind"] == "sent"}
    assert sent["drop"]["status"] == "ok" and sent["pacs"]["status"] == "failed"
    pacs_uids = {o["sop_instance_uid"] for o in sent["pacs"]["detail"]["objects"]}
    assert pacs_uids == {
        d["sop_instance_uid"] for d in known["deliveries"] if d["destination"] == "pacs"
    }
    assert "no association" in sent["pacs"]["detail"]["objects"][0]["error"]
    assert "patient" not in json.dumps(audit).lower()


def test_retry_reprocess_purge(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    sf = site.service.session_factory
    assert sf is not None
    pacs = StoreSCP(site.pacs_port, site.folder / "pacs")
    pacs.start()
    try:
        said = retry(sf, site.study_uid)
        assert "failed -> sending" in said
        assert wait_until(lambda: site.state() == "done", timeout=120)
        to_pacs = [
            d for d in show_study(sf, site.study_uid)["deliveries"] if d["destination"] == "pacs"
        ]
        assert {d["state"] for d in to_pacs} == {"sent"}
        assert len(pacs.files()) == len(to_pacs) == 6  # SR, CAD SR, a capture per image
        assert "done, not failed" in retry(sf, site.study_uid)

        said = reprocess(sf, site.study_uid)
        assert "queued as generation 2" in said
        assert wait_until(lambda: site.state() == "done", timeout=120)
        known = show_study(sf, site.study_uid)
        assert [r["generation"] for r in known["results"]] == [1, 2]
        assert known["study"]["generation"] == 2
        actions = [a for a in known["audit"] if a["kind"] in ("retry", "reprocess")]
        assert [(a["kind"], a["peer"]) for a in reversed(actions)] == [
            ("retry", "cli"),
            ("retry", "cli"),
            ("reprocess", "cli"),
        ]
        assert "queued as generation 2" in actions[0]["detail"]["result"]
    finally:
        pacs.stop()

    spool = Spool(site.service.settings.storage.spool)
    study_files = sorted((spool.root / "studies").rglob("*.dcm"))
    assert len(study_files) == 4
    assert purge(sf, spool, 1).studies == []  # not old enough
    later = utcnow() + timedelta(days=2)
    dry = purge(sf, spool, 1, dry_run=True, now=later)
    assert dry.studies == [site.study_uid] and dry.files > 4 and dry.audit_events >= 3
    assert all(path.exists() for path in study_files)
    done = purge(sf, spool, 1, now=later)
    assert done.studies == [site.study_uid] and done.files == dry.files
    assert not any(path.exists() for path in study_files)
    assert not list((spool.root / "results").rglob("*.dcm"))
    assert list_studies(sf) == [] and audit_events(sf) == []
