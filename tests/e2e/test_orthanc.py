"""Orthanc as the PACS: modality -> Orthanc -> (Lua routing) -> node -> results -> Orthanc.

Synthetic mammograms are pushed into Orthanc with dcmtk storescu; the routing script
shipped in deploy/orthanc/ forwards the stable study to a real ``breast-node serve``,
which infers it and sends its results back. Checked through Orthanc's REST API: the
results sit in the originals' study, the secondary captures render, and nothing the
node sent is forwarded back to it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from deploy.demo.orthanc import storescu
from tests.conftest import wait_until
from tests.helpers.orthanc import SC_CLASS, SR_CLASSES, orthanc_site

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_orthanc_forwards_and_receives_results(
    tmp_path: Path, model_dir: Path, synthetic: Callable[..., Path]
) -> None:
    files = sorted(synthetic(studies=1, seed=7, size="small").rglob("*.dcm"))
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    with orthanc_site(tmp_path, model_dir) as site:
        storescu(site.orthanc, files)
        site.wait_done()
        orthanc = site.orthanc
        study_id = orthanc.find_study(str(source.StudyInstanceUID))
        assert study_id is not None
        expected = len(files) + 2  # SR, Mammography CAD SR, one secondary capture per image
        assert wait_until(lambda: len(site.results_in(study_id)) == expected, timeout=60)
        # every result arrived in the originals' study, next to the originals
        assert len(orthanc.get("/studies")) == 1
        instances = orthanc.instances(study_id)
        originals = [i for i in instances if i["remote_aet"] != "BREAST_AI"]
        results = site.results_in(study_id)
        assert {i["sop_instance_uid"] for i in originals} == {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
        }
        assert {i["sop_class_uid"] for i in results} == SR_CLASSES | {SC_CLASS}
        captures = [i for i in results if i["sop_class_uid"] == SC_CLASS]
        assert len(captures) == len(files)
        assert all(i["modality"] in ("SR", "OT") for i in results)

        # Orthanc renders a secondary capture; it is a real picture, not a blank one
        png = orthanc.request("GET", f"/instances/{captures[0]['id']}/preview")
        assert png.startswith(b"\x89PNG")
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.width > 100 and image.height > 100
        extrema = image.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 50

        # the results made the study stable again, yet nothing went back to the node
        assert wait_until(lambda: orthanc.get(f"/studies/{study_id}")["IsStable"], timeout=60)
        status = site.study_states()
        assert status == ["done"]
        log = orthanc.log.read_text(encoding="utf-8", errors="replace")
        assert log.count("BreastAI: forwarding") == 1
        forwarded = orthanc.get(f"/instances/{originals[0]['id']}/metadata?expand")
        assert forwarded.get("BreastAIForwarded") == "yes"
