"""Soak: several concurrent storescu senders push many small studies through a real
``breast-node serve`` with a small model; nothing may be lost and memory must stay bounded.

    .venv/bin/python bench/soak.py [--studies 60] [--senders 4] [--out var/bench/soak]

Prints a table: studies and instances sent, how long until every study was done, and the
node's resident memory (from /proc) at the start, at its peak and at the end. The test
suite runs a short version (tests/reliability/test_soak.py). Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from node.config import load_settings  # noqa: E402
from node.db import Instance, Study, open_database  # noqa: E402
from tests.helpers.models import write_random_model_folder  # noqa: E402
from tests.helpers.node import Node  # noqa: E402
from tests.reliability.conftest import serve_config  # noqa: E402


@dataclass(frozen=True)
class SoakReport:
    studies: int
    instances: int
    senders: int
    acknowledged: int
    recorded: int
    done: int
    seconds: float
    rss_start_mb: float
    rss_peak_mb: float
    rss_end_mb: float

    def table(self) -> str:
        rows = [
            ("studies sent / done", f"{self.studies} / {self.done}"),
            (
                "instances sent / acknowledged / recorded",
                f"{self.instances} / {self.acknowledged} / {self.recorded}",
            ),
            ("concurrent senders", str(self.senders)),
            ("seconds until every study was done", f"{self.seconds:.1f}"),
            (
                "node RSS start / peak / end (MB)",
                f"{self.rss_start_mb:.0f} / {self.rss_peak_mb:.0f} / {self.rss_end_mb:.0f}",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_studies(folder: Path, studies: int, seed: int) -> list[Path]:
    from training.synthetic import SynthOptions, write_studies

    write_studies(folder, studies=studies, seed=seed, options=SynthOptions(size="small"))
    return sorted(folder.glob("study-*"))


def run_soak(
    work: Path, studies: int = 24, senders: int = 4, seed: int = 61, timeout: float = 600
) -> SoakReport:
    """Send ``studies`` studies from ``senders`` concurrent storescu processes to a fresh
    node under ``work`` and wait until every study is done (or ``timeout`` seconds)."""
    model = write_random_model_folder(work / "model", seed=5)
    folders = make_studies(work / "studies", studies, seed)
    config = serve_config(work, model)
    settings = load_settings(config, environ={})
    node = Node(config, work / "node.log")
    node.start()
    assert node.proc is not None
    pid = node.proc.pid
    samples = [rss_mb(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append(rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    db = open_database(settings.storage.database)
    start = time.monotonic()
    acknowledged = 0
    done = 0
    try:
        groups = [folders[i::senders] for i in range(senders)]
        procs = [
            subprocess.Popen(
                [
                    "storescu",
                    "-aet",
                    f"SOAK{i}",
                    "-aec",
                    "BREAST_AI",
                    "127.0.0.1",
                    str(settings.node.port),
                    *(str(f) for s in group for f in sorted(s.glob("*.dcm"))),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, group in enumerate(groups)
        ]
        for proc, group in zip(procs, groups, strict=True):
            _, err = proc.communicate(timeout=timeout)
            if proc.returncode == 0:
                acknowledged += sum(len(list(s.glob("*.dcm"))) for s in group)
            else:
                print(err, file=sys.stderr)
        while time.monotonic() - start < timeout:
            with db() as session:
                done = (
                    session.scalar(
                        select(func.count()).select_from(Study).where(Study.state == "done")
                    )
                    or 0
                )
            if done >= studies:
                break
            time.sleep(0.5)
        seconds = time.monotonic() - start
        time.sleep(1.0)
        samples.append(rss_mb(pid))
        with db() as session:
            recorded = session.scalar(select(func.count()).select_from(Instance)) or 0
    finally:
        stop.set()
        sampler.join()
        node.stop()
    return SoakReport(
        studies=studies,
        instances=sum(len(list(s.glob("*.dcm"))) for s in folders),
        senders=senders,
        acknowledged=acknowledged,
        recorded=int(recorded),
        done=int(done),
        seconds=seconds,
        rss_start_mb=samples[0],
        rss_peak_mb=max(samples),
        rss_end_mb=samples[-1],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=60)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seed", type=int, default=61)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: temporary)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="soak-"))
    if work.exists() and args.out is not None:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    report = run_soak(work, studies=args.studies, senders=args.senders, seed=args.seed)
    print(report.table())
    return 0 if report.recorded == report.instances and report.done == report.studies else 1


if __name__ == "__main__":
    sys.exit(main())
