"""Orthanc as the PACS beside a real ``breast-node serve``, for end-to-end tests.

:func:`orthanc_site` starts Orthanc with the routing script from ``deploy/orthanc/`` and
the node as its modality, and the node (subprocess, small model, HTTP endpoint on a
free port) with Orthanc as its only destination.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.demo.orthanc import LocalOrthanc, orthanc_config
from tests.conftest import free_port, wait_until, write_config
from tests.helpers.node import Node, node_status

__all__ = ["SC_CLASS", "SR_CLASSES", "Site", "orthanc_site"]

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.50"}
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class Site:
    orthanc: LocalOrthanc
    node: Node
    config: Path
    http_port: int

    def study_states(self) -> list[str]:
        return [row["state"] for row in node_status(self.config)["recent"]]

    def wait_done(self, studies: int = 1, timeout: float = 180) -> None:
        """Until the node finished ``studies`` studies (done or failed)."""
        assert wait_until(
            lambda: sum(s in ("done", "failed") for s in self.study_states()) >= studies,
            timeout=timeout,
            every=0.5,
        ), self.study_states()

    def results_in(self, study_id: str) -> list[dict[str, Any]]:
        """The instances of an Orthanc study that the node sent."""
        return [i for i in self.orthanc.instances(study_id) if i["remote_aet"] == "BREAST_AI"]


@contextmanager
def orthanc_site(folder: Path, model: Path | None) -> Iterator[Site]:
    """Orthanc (StableAge 1 s) forwarding to a node that sends its results back."""
    node_port, dicom_port, http_port = free_port(), free_port(), free_port()
    orthanc = LocalOrthanc(
        folder / "orthanc",
        orthanc_config(
            folder / "orthanc",
            dicom_port=dicom_port,
            http_port=free_port(),
            node_port=node_port,
            stable_age=1,
        ),
    )
    config = write_config(
        folder,
        node={"ae_title": "BREAST_AI", "host": "127.0.0.1", "port": node_port},
        completion={"quiet_seconds": 1, "check_interval_seconds": 0.2},
        worker={"check_interval_seconds": 0.2},
        sending={"check_interval_seconds": 0.2, "backoff_initial_seconds": 0.5},
        inference={"device": "cpu", "tta": "none", "threads": 1},
        outputs={"sc_size": 256},
        http={"port": http_port},
    )
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["model"] = str(model) if model is not None else None
    data["destinations"] = [
        {"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": dicom_port}
    ]
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    node = Node(config, folder / "node.log")
    orthanc.start()
    try:
        node.start()
        try:
            yield Site(orthanc, node, config, http_port)
        finally:
            node.stop()
    finally:
        orthanc.stop()
