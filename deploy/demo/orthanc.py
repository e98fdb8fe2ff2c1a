"""A local Orthanc configured from ``deploy/orthanc/``: for the demo and the end-to-end tests.

:func:`orthanc_config` turns the example configuration into one for a local instance
(ports, folders, where the node listens) and points it at the routing script as it is
in the repository; :class:`LocalOrthanc` runs it and talks to its REST API with the
standard library only.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "LUA_SCRIPT",
    "ORTHANC",
    "ORTHANC_CONFIG",
    "LocalOrthanc",
    "orthanc_config",
    "storescu",
]

DEPLOY = Path(__file__).resolve().parents[1]
LUA_SCRIPT = DEPLOY / "orthanc" / "forward-to-breast-ai.lua"
ORTHANC_CONFIG = DEPLOY / "orthanc" / "orthanc.json"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def orthanc_config(
    folder: Path,
    *,
    dicom_port: int,
    http_port: int,
    node_port: int,
    node_host: str = "127.0.0.1",
    node_aet: str = "BREAST_AI",
    stable_age: int = 2,
    aet: str = "ORTHANC",
) -> dict[str, Any]:
    """The example configuration with local ports, storage in ``folder`` and no login.

    The HTTP server listens on 127.0.0.1 only (``RemoteAccessAllowed: false``), which is
    why authentication can be off.
    """
    config: dict[str, Any] = json.loads(ORTHANC_CONFIG.read_text(encoding="utf-8"))
    modality = config["BreastAI"]["Modality"]
    config.update(
        {
            "Name": "Breast AI demo PACS",
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "DicomAet": aet,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "RegisteredUsers": {},
            "DicomModalities": {modality: [node_aet, node_host, node_port]},
            "StableAge": stable_age,
            "LuaScripts": [str(LUA_SCRIPT)],
            "Plugins": [],
        }
    )
    config["BreastAI"]["NodeAet"] = node_aet
    return config


class LocalOrthanc:
    """An Orthanc process on 127.0.0.1 with its configuration and data in ``folder``."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "orthanc.log"

    @property
    def aet(self) -> str:
        return str(self.config["DicomAet"])

    @property
    def dicom_port(self) -> int:
        return int(self.config["DicomPort"])

    @property
    def url(self) -> str:
        """Base URL of the REST API and of Orthanc Explorer (``/app/explorer.html``)."""
        return f"http://127.0.0.1:{self.config['HttpPort']}"

    def start(self, timeout: float = 60.0) -> None:
        """Start Orthanc; returns once its REST API answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {self.log}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    # ------------------------------------------------------------------ REST
    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """Raw REST call; raises :class:`urllib.error.URLError` (an ``OSError``)."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        user = self.config.get("RegisteredUsers") or {}
        if self.config.get("AuthenticationEnabled") and user:
            name, password = next(iter(user.items()))
            token = base64.b64encode(f"{name}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            data: bytes = response.read()
            return data

    def get(self, path: str) -> Any:
        """GET ``path`` and parse the JSON answer."""
        return json.loads(self.request("GET", path))

    def post(self, path: str, payload: Any) -> Any:
        return json.loads(self.request("POST", path, json.dumps(payload).encode()))

    def find_study(self, study_uid: str) -> str | None:
        """Orthanc's identifier of the study with ``study_uid``, if it has it."""
        found = json.loads(self.request("POST", "/tools/lookup", study_uid.encode()))
        ids = [item["ID"] for item in found if item.get("Type") == "Study"]
        return ids[0] if ids else None

    def instances(self, study_id: str) -> list[dict[str, Any]]:
        """Each instance of a study: its ID, SOP class and SOP Instance UID, series facts."""
        rows = []
        for series in self.get(f"/studies/{study_id}/series?expand"):
            tags = series["MainDicomTags"]
            for instance_id in series["Instances"]:
                meta = self.get(f"/instances/{instance_id}/metadata?expand")
                rows.append(
                    {
                        "id": instance_id,
                        "sop_class_uid": meta.get("SopClassUid"),
                        "remote_aet": meta.get("RemoteAET"),
                        "modality": tags.get("Modality"),
                        "series_description": tags.get("SeriesDescription"),
                        "sop_instance_uid": self.get(
                            f"/instances/{instance_id}/simplified-tags"
                        ).get("SOPInstanceUID"),
                    }
                )
        return rows


def storescu(orthanc: LocalOrthanc, files: list[Path], calling_aet: str = "MODALITY") -> None:
    """Push ``files`` into Orthanc with dcmtk ``storescu`` (as an acquisition modality would)."""
    subprocess.run(
        [
            shutil.which("storescu") or "storescu",
            "-aet",
            calling_aet,
            "-aec",
            orthanc.aet,
            "127.0.0.1",
            str(orthanc.dicom_port),
            *map(str, files),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
