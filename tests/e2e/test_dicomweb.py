"""DICOMweb destinations against Orthanc's DICOMweb plugin: results stored with STOW-RS,
HTTP Basic authentication, retries, idempotence, and one broken destination that holds
back no other."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import yaml

from deploy.demo.orthanc import LocalOrthanc, orthanc_config
from node.config import DicomwebDestination, Settings
from node.dicom.dicomweb import store_over_dicomweb
from tests.conftest import free_port
from tests.e2e.conftest import deliveries, e2e_config, storescu, wait_for_state

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "node", "stow-secret-1"


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalOrthanc]:
    """Orthanc with its DICOMweb plugin and HTTP Basic authentication, on 127.0.0.1."""
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: install Debian's orthanc-dicomweb (make test does)")
    folder = tmp_path / "orthanc"
    config = orthanc_config(
        folder, dicom_port=free_port(), http_port=free_port(), node_port=free_port()
    )
    config.update(
        {
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "LuaScripts": [],
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
    )
    orthanc = LocalOrthanc(folder, config)
    orthanc.start()
    yield orthanc
    orthanc.stop()


def _web(url: str, **extra: object) -> dict[str, object]:
    return {"dicomweb": url, "objects": ["sr", "mgcad", "sc"], **extra}


def test_results_reach_a_dicomweb_archive_and_a_broken_one_holds_back_nothing(
    tmp_path: Path,
    model_dir: Path,
    mg_study: list[Path],
    archive: LocalOrthanc,
    running_node: Callable[[Path], Settings],
) -> None:
    root = f"{archive.url}/dicom-web"
    config = e2e_config(
        tmp_path, model_dir, free_port(), sending={"max_attempts": 3}, worker={"batch_studies": 1}
    )
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["destinations"] = [
        {"name": "web", **_web(root, auth={"username": USER, "password": PASSWORD})},
        {"name": "wrong-password", **_web(root, auth={"username": USER, "password": "nope"})},
        {"name": "nobody-home", **_web(f"http://127.0.0.1:{free_port()}/dicom-web")},
    ]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = running_node(config)

    storescu(settings.node.port, mg_study)
    study = wait_for_state(settings, "done", "failed", timeout=180)

    rows = deliveries(settings)
    by_destination: dict[str, list[str]] = {}
    for row in rows:
        by_destination.setdefault(row.destination, []).append(row.state.value)
    assert set(by_destination["web"]) == {"sent"}
    assert set(by_destination["wrong-password"]) == {"failed"}
    assert set(by_destination["nobody-home"]) == {"failed"}
    wrong = [r for r in rows if r.destination == "wrong-password"]
    assert all("HTTP 401" in (r.last_error or "") and r.attempts == 3 for r in wrong)
    unreachable = [r for r in rows if r.destination == "nobody-home"]
    assert all("STOW-RS request failed" in (r.last_error or "") for r in unreachable)
    # the study says which destinations failed, and why
    assert study.state == "failed" and study.reason is not None
    assert "wrong-password" in study.reason and "nobody-home" in study.reason

    # the archive holds exactly the objects sent to it, beside the (absent) source images
    sent = {r.sop_instance_uid for r in rows if r.destination == "web"}
    study_id = archive.find_study(str(pydicom.dcmread(mg_study[0]).StudyInstanceUID))
    assert study_id is not None
    stored = {i["sop_instance_uid"] for i in archive.instances(study_id)}
    assert stored == sent

    # storing the same objects again (a retry after a lost answer) duplicates nothing
    destination = DicomwebDestination.model_validate(
        {"name": "web", **_web(root, auth={"username": USER, "password": PASSWORD})}
    )
    spool = settings.storage.spool
    again = [pydicom.dcmread(spool / r.path) for r in rows if r.destination == "web"]
    outcomes = store_over_dicomweb(destination, again)
    assert [o.ok for o in outcomes] == [True] * len(again)
    assert {i["sop_instance_uid"] for i in archive.instances(study_id)} == sent
