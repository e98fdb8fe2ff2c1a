"""``make demo``: a local Orthanc and the node, wired together, with a few synthetic studies.

Starts Orthanc (the routing script from ``deploy/orthanc/``, data under
``var/demo/pacs``) and ``breast-node serve`` (the default settings, except Orthanc as
the destination and a shorter quiet period, data under ``var/demo/node``), pushes
synthetic mammography studies and a breast ultrasound study into Orthanc with dcmtk
``storescu`` the way a modality would, waits until the node's results are in Orthanc,
prints where to look, and keeps both running until Ctrl-C (or ``make demo-stop``).

Run from the repository root: ``.venv/bin/python -m deploy.demo.run [--studies N]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from deploy.demo.orthanc import LocalOrthanc, orthanc_config, storescu
from node.models.card import CARD_FILE

ROOT = Path(__file__).resolve().parents[2]
NODE_AET = "BREAST_AI"


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else the next free port above it."""
    for port in range(preferred, preferred + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port from {preferred} to {preferred + 199}")


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def write_node_config(
    folder: Path, node_port: int, http_port: int, orthanc: LocalOrthanc, model: Path | None
) -> Path:
    """The default settings with Orthanc as the destination; data under ``folder``."""
    config = {
        "node": {"ae_title": NODE_AET, "host": "127.0.0.1", "port": node_port},
        "storage": {"database": "sqlite:///node.db", "spool": "spool"},
        "completion": {"quiet_seconds": 5, "check_interval_seconds": 1},
        "destinations": [
            {
                "name": "orthanc",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
            }
        ],
        "http": {"host": "127.0.0.1", "port": http_port},
        "logging": {"format": "json"},
    }
    if model is not None:
        # one model given: the images it does not accept are left out, not refused
        config["models"] = [str(model)]
        config["eligibility"] = {"without_model": "skip"}
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_studies(folder: Path, studies: int, seed: int, us_studies: int = 0) -> list[Path]:
    """``studies`` mammography and ``us_studies`` breast ultrasound synthetic studies (once)."""
    from training.synthetic import SynthOptions, write_studies

    if not any(folder.rglob("*.dcm")):
        say(f"writing {studies} + {us_studies} synthetic MG + US studies to {shown(folder)}")
        write_studies(folder / "mg", studies=studies, seed=seed, options=SynthOptions())
        if us_studies:
            us = SynthOptions(modality="us")
            write_studies(folder / "us", studies=us_studies, seed=seed, options=us)
    return sorted(folder.rglob("*.dcm"))


def wait_for_results(orthanc: LocalOrthanc, expected: int, timeout: float) -> int:
    """Poll Orthanc until ``expected`` studies hold results from the node; returns how many."""
    deadline = time.monotonic() + timeout
    with_results = 0
    while time.monotonic() < deadline:
        with_results = 0
        for study_id in orthanc.get("/studies"):
            modalities = {
                series["MainDicomTags"].get("Modality")
                for series in orthanc.get(f"/studies/{study_id}/series?expand")
            }
            with_results += "SR" in modalities
        if with_results >= expected:
            break
        time.sleep(2)
    return with_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--studies", type=int, default=3, help="synthetic mammography studies (default: 3)"
    )
    parser.add_argument(
        "--us-studies", type=int, default=1, help="synthetic ultrasound studies (default: 1)"
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the synthetic studies")
    parser.add_argument("--folder", type=Path, default=ROOT / "var" / "demo", help="data folder")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for results")
    parser.add_argument("--model", type=Path, help="model folder (default: the config's)")
    parser.add_argument("--no-wait", action="store_true", help="exit once the results are in")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    (folder / "node").mkdir(parents=True, exist_ok=True)

    node_port, http_port = free_port(11112), free_port(8112)
    dicom_port, orthanc_http = free_port(4242), free_port(8042)
    orthanc = LocalOrthanc(
        folder / "pacs",
        orthanc_config(
            folder / "pacs",
            dicom_port=dicom_port,
            http_port=orthanc_http,
            node_port=node_port,
            stable_age=5,
        ),
    )
    model = args.model.resolve() if args.model else None
    config = write_node_config(folder / "node", node_port, http_port, orthanc, model)
    models = [model] if model else [ROOT / "models" / "demo", ROOT / "models" / "demo-us"]
    missing = [m for m in models if not (m / CARD_FILE).is_file()]
    has_model = not missing
    if missing:
        say(
            f"{', '.join(shown(m) for m in missing)} is missing, so the node cannot infer "
            "and no results will come back. Build the demo models with "
            "`make demo-model` and `make demo-model-us`, or set `models:` in "
            f"{shown(config)}."
        )
    breast_node = Path(sys.executable).parent / "breast-node"
    node_log = folder / "node" / "node.log"
    pids = folder / "pids"
    orthanc.start()
    say(f"Orthanc {orthanc.aet} on DICOM port {dicom_port}, {orthanc.url}")
    with node_log.open("ab") as log:
        node = subprocess.Popen(
            [str(breast_node), "serve", "--config", str(config)], stdout=log, stderr=log, cwd=ROOT
        )
    assert orthanc.proc is not None
    pids.write_text(f"{orthanc.proc.pid}\n{node.pid}\n{os.getpid()}\n", encoding="utf-8")
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        status_url = f"http://127.0.0.1:{http_port}/"
        while not stop["now"]:
            try:
                with socket.create_connection(("127.0.0.1", node_port), timeout=1):
                    break
            except OSError:
                if node.poll() is not None:
                    say(f"the node exited; see {node_log}")
                    return 1
                time.sleep(0.5)
        say(f"node {NODE_AET} on DICOM port {node_port}, status page {status_url}")
        files = make_studies(folder / "studies", args.studies, args.seed, args.us_studies)
        say(f"pushing {len(files)} images into Orthanc with storescu")
        storescu(orthanc, files)
        studies = len({f.parent for f in files})
        if has_model:
            say("waiting for the results to arrive in Orthanc...")
            done = wait_for_results(orthanc, studies, args.timeout)
            say(f"{done} of {studies} studies have the node's results in Orthanc")
        print(
            f"""
  Orthanc Explorer:  {orthanc.url}/app/explorer.html
  node status page:  {status_url}   (health: {status_url}healthz, metrics: {status_url}metrics)
  node from a shell: .venv/bin/breast-node studies --config {shown(config)}
                     .venv/bin/breast-node status --config {shown(config)}
  logs:              {shown(node_log)}, {shown(orthanc.log)}
  stop:              Ctrl-C here, or `make demo-stop`
""",
            flush=True,
        )
        while not stop["now"] and not args.no_wait:
            if node.poll() is not None:
                say(f"the node exited; see {node_log}")
                return 1
            time.sleep(1)
    finally:
        say("stopping the node and Orthanc")
        if node.poll() is None:
            node.terminate()
            node.wait(timeout=60)
        orthanc.stop()
        pids.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
