"""End to end: first C-STORE of a four-view study to the last result a real PACS acknowledged.

The real node (``breast-node serve``) runs as a subprocess on a throwaway folder; dcmtk
``storescu`` sends it detector-size synthetic studies (uncompressed and JPEG 2000) and a
dcmtk ``storescp`` is its DICOM destination for the SR, Mammography CAD SR and Grad-CAM
Secondary Captures. Each study's timeline comes from the node's database: instances
received, completion (the quiet period, reported separately and left out of the end to
end time), claim, the engine's stage timings, result stored, deliveries acknowledged.

Three sections, each a markdown table with ratios against a row measured in the same run:

* latency: one study at a time (each sent once the previous one is done), per model
  (``demo``: models/demo; ``full``: EfficientNet-B0/B1, ResNet-50, DenseNet-121 and
  ConvNeXt-Tiny at 1024 x 512 with flip TTA, seeded random weights) and transfer syntax;
  the first study after start-up is reported on its own row (cold);
* variants: the same studies sent back to back to a fresh node per variant (settings
  given as ``BREAST_NODE__SECTION__KEY`` overrides): studies per minute;
* scaling: ``serve`` (receiving, completion, sending) plus 1 and 2 inference workers on
  one PostgreSQL queue, CPU threads split between them: studies per minute, and a check
  that no study was claimed, inferred or delivered twice.

    .venv/bin/python bench/e2e.py                            # everything (CPU: ~15 minutes)
    .venv/bin/python bench/e2e.py --sections latency --model demo --size small   # quick
    .venv/bin/python bench/e2e.py --sections variants --variants \\
        'base:worker.batch_studies=1' 'batch4:worker.batch_studies=4'

Data are generated once under var/bench/e2e/ (a few minutes); so is the full ensemble.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ingest import cpu_name, free_port  # noqa: E402  (the receiving bench's helpers)
from postgres import postgres_server  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "breast-node"
#: The node's command: its console script, or ``python -m node`` where the package was
#: not installed (a GPU machine given the project's wheels on PYTHONPATH).
BREAST_NODE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "node"]
DATA = ROOT / "var" / "bench" / "e2e"
DEMO_MODEL = ROOT / "models" / "demo"
FULL_ARCHITECTURES = (
    "efficientnet_b0",
    "efficientnet_b1",
    "resnet50",
    "densenet121",
    "convnext_tiny",
)
SYNTAXES = ("explicit", "j2k")
SEEDS = {
    ("explicit", "full"): 61,
    ("j2k", "full"): 62,
    ("explicit", "small"): 63,
    ("j2k", "small"): 64,
}
FINISHED = ("done", "failed", "skipped")
DEFAULT_VARIANTS = (
    "baseline:worker.pipeline=false,worker.batch_studies=1",
    "batch4:worker.pipeline=false,worker.batch_studies=4",
    "pipelined:worker.pipeline=true,worker.batch_studies=1",
    "batch4+pipelined:worker.pipeline=true,worker.batch_studies=4",
)
STAGE_KEYS = ("preprocess_s", "inference_s", "cam_s", "outputs_s")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Processes and ports
# --------------------------------------------------------------------------- #
def wait_for(check: Any, what: str, timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def ready_log(proc: Process, event: str) -> bool:
    proc.check_alive()
    return log_has(proc.log, event)


def log_has(path: Path, event: str) -> bool:
    return path.exists() and f'"{event}"'.encode() in path.read_bytes()


@dataclass
class Process:
    """A child process logging to ``log``; stopped with SIGTERM."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    name: str, command: list[str], log_file: Path, env: dict[str, str] | None = None
) -> Process:
    with log_file.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=log_file.parent)
    return Process(name, proc, log_file)


@contextmanager
def storescp(folder: Path) -> Iterator[int]:
    """A dcmtk ``storescp`` (AE title PACS, one child per association) storing into ``folder``."""
    folder.mkdir(parents=True)
    port = free_port()
    command = ["storescp", "--fork", "-aet", "PACS", "-od", str(folder), "+B", str(port)]
    proc = start("storescp", command, folder.parent / "storescp.log")

    def listening() -> bool:
        proc.check_alive()
        echo = ["echoscu", "-aec", "PACS", "127.0.0.1", str(port)]
        return subprocess.run(echo, capture_output=True, timeout=30).returncode == 0

    try:
        wait_for(listening, "storescp", 30)
        yield port
    finally:
        proc.stop()


def fresh_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; return its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


# --------------------------------------------------------------------------- #
# Data and models
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class StudyFiles:
    syntax: str
    folder: Path
    files: tuple[Path, ...]
    study_uid: str

    @property
    def megabytes(self) -> float:
        return sum(f.stat().st_size for f in self.files) / 1e6


def make_studies(syntax: str, size: str, count: int) -> list[StudyFiles]:
    """``count`` four-view studies in ``syntax``, generated once under var/bench/e2e/."""
    from pydicom import dcmread

    folder = DATA / f"{size}-{syntax}"
    if len(list(folder.glob("study-*"))) < count:
        from training.synthetic import SynthOptions, write_studies

        shutil.rmtree(folder, ignore_errors=True)
        log(f"generating {count} {size}-size {syntax} studies in {folder} ...")
        options = SynthOptions(size=size, transfer_syntax=syntax)  # type: ignore[arg-type]
        write_studies(folder, studies=count, seed=SEEDS[(syntax, size)], options=options)
    studies = []
    for study in sorted(folder.glob("study-*"))[:count]:
        files = tuple(sorted(study.glob("*.dcm")))
        uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        studies.append(StudyFiles(syntax, study, files, uid))
    return studies


def full_ensemble() -> Path:
    """The five-architecture ensemble (seeded random weights), written once."""
    folder = DATA / "full-ensemble"
    card = folder / "card.yaml"
    if card.exists() and all(f"architecture: {a}" in card.read_text() for a in FULL_ARCHITECTURES):
        return folder
    import torch

    from node.models.folder import write_model_folder
    from node.models.registry import create_model

    log(f"writing the full ensemble ({', '.join(FULL_ARCHITECTURES)}) to {folder} ...")
    labels = ["normal", "benign", "malignant"]
    members, weights = [], {}
    for index, architecture in enumerate(FULL_ARCHITECTURES):
        torch.manual_seed(index)
        model = create_model(architecture, num_classes=len(labels), in_chans=1)
        weights[architecture] = model.state_dict()
        members.append({"name": architecture, "architecture": architecture, "weight": 1.0})
    data = {
        "name": "bench-full-ensemble",
        "version": "0.0.1",
        "description": "Five timm architectures with seeded random weights, for bench/e2e.py.",
        "intended_use": "Benchmarks only (random weights). Not for clinical use.",
        "modalities": ["MG"],
        "input": {"height": 1024, "width": 512, "channels": 1, "mean": [0.5], "std": [0.5]},
        "labels": labels,
        "malignant_label": "malignant",
        "operating_points": [{"name": "sens90", "threshold": 0.5, "sensitivity": 0.9}],
        "ensemble": {"members": members, "tta": "flip"},
        "training_data": {"description": "none (random weights)", "datasets": [], "images": 0},
        "metrics": {"evaluated_on": "nothing", "values": {}},
    }
    write_model_folder(folder, data, weights)
    return folder


def model_folder(name: str) -> Path:
    return DEMO_MODEL if name == "demo" else full_ensemble()


# --------------------------------------------------------------------------- #
# Settings overrides and node features
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``name:section.key=value,section.key=value`` (``name`` alone: node defaults)."""
        name, _, rest = text.partition(":")
        overrides = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or "." not in key:
                raise argparse.ArgumentTypeError(f"{item!r}: expected section.key=value")
            overrides[key.strip()] = value.strip()
        return cls(name, overrides)


def unknown_settings(keys: Sequence[str]) -> list[str]:
    """The dotted keys this node's settings do not have (features not landed yet)."""
    from pydantic import BaseModel

    from node.config import Settings

    missing = []
    for key in keys:
        model: type[BaseModel] | None = Settings
        for part in key.split("."):
            if model is None or part not in model.model_fields:
                missing.append(key)
                break
            annotation = model.model_fields[part].annotation
            is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = cast("type[BaseModel]", annotation) if is_section else None
    return missing


def has_worker_command() -> bool:
    done = subprocess.run([*BREAST_NODE, "worker", "--help"], capture_output=True)
    return done.returncode == 0


def env_for(overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BREAST_NODE__")}
    for key, value in overrides.items():
        env["BREAST_NODE__" + "__".join(p.upper() for p in key.split("."))] = value
    return env


# --------------------------------------------------------------------------- #
# The node under test
# --------------------------------------------------------------------------- #
@dataclass
class NodeRun:
    """A running node: its folder, DICOM port, database URL and processes."""

    work: Path
    port: int
    database: str
    pacs_folder: Path
    processes: list[Process] = field(default_factory=list)
    startup_s: float = float("nan")
    """Processes started to every one ready (model loaded, listener up)."""

    def check_alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def log_problems(self) -> list[str]:
        """WARNING and worse log lines of every process, as ``name: event (fields)``."""
        lines = []
        for proc in self.processes:
            for line in proc.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    if line.strip():
                        lines.append(f"{proc.name}: {line.strip()[:200]}")
                    continue
                if str(entry.get("level", "")).lower() in ("warning", "error", "critical"):
                    extra = {
                        k: v for k, v in entry.items() if k not in ("event", "level", "timestamp")
                    }
                    lines.append(f"{proc.name}: {entry.get('event')} {json.dumps(extra)[:300]}")
        return lines

    def device(self) -> str:
        for proc in self.processes:
            for line in proc.log.read_text(errors="replace").splitlines():
                if '"inference.ready"' in line:
                    entry = json.loads(line)
                    return f"{entry.get('device')} {entry.get('precision')}"
        return "?"


def write_config(
    work: Path,
    *,
    model: Path,
    device: str,
    database: str,
    pacs_port: int,
    poll: float,
    quiet: float,
) -> Path:
    config = work / "node.yaml"
    settings = {
        "node": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"database": database, "spool": "spool", "min_free_bytes": 0},
        "completion": {"quiet_seconds": quiet, "check_interval_seconds": poll},
        "worker": {"check_interval_seconds": poll},
        "sending": {"check_interval_seconds": poll},
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}
        ],
        "model": str(model),
        # mammography studies only: the ultrasound rule would want a model of its own
        "eligibility": {"rules": [{"name": "mammography", "modalities": ["MG"]}]},
        "inference": {"device": device},
        "outputs": {"objects": ["sr", "mgcad", "sc"]},
        "logging": {"level": "INFO", "format": "json"},
        "http": {"enabled": False},
        "retention": {"days": None},
    }
    config.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return config


@contextmanager
def running_node(
    label: str,
    *,
    model: Path,
    device: str,
    overrides: dict[str, str],
    poll: float,
    quiet: float,
    database: str | None = None,
    workers: int = 0,
    worker_overrides: dict[str, str] | None = None,
) -> Iterator[NodeRun]:
    """``serve`` (and ``workers`` ``breast-node worker`` processes) on a fresh folder.

    ``workers`` > 0: ``serve`` runs with ``worker.enabled: false`` and the workers infer,
    each with ``overrides`` plus ``worker_overrides``. Returns once every process is ready.
    """
    with ExitStack() as stack:
        work = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-", dir=ROOT / "var"))
        )
        pacs_folder = work / "pacs"
        pacs_port = stack.enter_context(storescp(pacs_folder))
        url = database or f"sqlite:///{work / 'node.db'}"
        config = write_config(
            work,
            model=model,
            device=device,
            database=url,
            pacs_port=pacs_port,
            poll=poll,
            quiet=quiet,
        )
        port = json.loads(config.read_text())["node"]["port"]
        run = NodeRun(work, port, url, pacs_folder)
        serve_overrides = {**overrides, "worker.enabled": "false"} if workers else overrides
        started = time.monotonic()
        run.processes.append(
            start(
                "serve",
                [*BREAST_NODE, "serve", "--config", str(config)],
                work / "serve.log",
                env_for(serve_overrides),
            )
        )
        stack.callback(run.stop)
        # workers start once serve has created the schema: processes creating it at the
        # same moment on a fresh PostgreSQL database collide (one exits with an error)
        wait_for(lambda: ready_log(run.processes[0], "node.started"), f"{label}: serve", 600)
        for index in range(workers):
            run.processes.append(
                start(
                    f"worker{index + 1}",
                    [*BREAST_NODE, "worker", "--config", str(config)],
                    work / f"worker{index + 1}.log",
                    env_for({**overrides, **(worker_overrides or {})}),
                )
            )

        def ready() -> bool:
            run.check_alive()
            return all(log_has(p.log, "inference.ready") for p in run.processes[1:])

        wait_for(ready, f"{label}: node start-up", 600, every=0.2)
        run.startup_s = time.monotonic() - started
        log(f"  {label}: node ready ({run.device()}), folder {work}")
        yield run


def send(port: int, study: StudyFiles) -> float:
    """Send one study with ``storescu`` (one association); returns time.time() at its start."""
    start_time = time.time()
    propose = ["-xv"] if study.syntax == "j2k" else []  # JPEG 2000 lossless as stored
    command = [
        "storescu",
        "-R",
        *propose,
        "--max-pdu",
        "131072",
        "-aec",
        "BREAST_AI",
        "127.0.0.1",
        str(port),
        *map(str, study.files),
    ]
    done = subprocess.run(command, capture_output=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr.decode(errors='replace')[-500:]}")
    return start_time


class Database:
    """Read-only look at the node's queue through its own ORM models."""

    def __init__(self, url: str) -> None:
        from node.db import open_database

        self.session_factory = open_database(url)

    def finished(self, study_uids: Sequence[str]) -> int:
        from sqlalchemy import func, select

        from node.db.models import Study

        with self.session_factory() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Study)
                    .where(Study.study_uid.in_(study_uids), Study.state.in_(FINISHED))
                )
                or 0
            )

    def close(self) -> None:
        bind = self.session_factory.kw.get("bind")
        if bind is not None:
            bind.dispose()


def wait_finished(run: NodeRun, db: Database, study_uids: Sequence[str], timeout: float) -> None:
    def finished() -> bool:
        run.check_alive()
        return db.finished(study_uids) == len(study_uids)

    wait_for(finished, f"{len(study_uids)} studies to finish", timeout, every=0.2)


# --------------------------------------------------------------------------- #
# Timelines
# --------------------------------------------------------------------------- #
@dataclass
class Timeline:
    """One study, seconds from its first C-STORE (``sent``: the bench's time.time())."""

    study_uid: str
    syntax: str
    state: str
    sent: float
    receive_s: float
    """First C-STORE to the last instance recorded."""
    quiet_s: float
    """Last instance to the study being queued (the quiet period plus the check interval)."""
    wait_s: float
    """Queued to claimed by a worker."""
    worker_s: float
    """Claimed to result stored (everything the worker did)."""
    send_s: float
    """Result stored to the last delivery acknowledged by the destination."""
    end_s: float
    """First C-STORE to the last acknowledgement."""
    timings: dict[str, float]
    results: int
    claims: int
    worker: str
    """The process (host:pid) whose claim produced the result."""
    deliveries: int
    delivery_attempts: int
    queued_at: float
    acked_at: float

    @property
    def end_excl_quiet_s(self) -> float:
        return self.end_s - self.quiet_s

    def stage(self, key: str) -> float:
        return float(self.timings.get(key, 0.0))

    @property
    def other_s(self) -> float:
        """Worker time outside the timed stages (reading, database, waiting for the batch)."""
        return self.worker_s - sum(self.stage(k) for k in STAGE_KEYS)


def _seconds(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("nan")


def timelines(db: Database, sent: dict[str, tuple[str, float]]) -> list[Timeline]:
    """``sent``: study UID -> (syntax, time.time() at its first C-STORE)."""
    from sqlalchemy import func, select

    from node.db.models import Delivery, Instance, Result, Study, StudyEvent

    out = []
    with db.session_factory() as session:
        for uid, (syntax, t0) in sent.items():
            study = session.scalars(select(Study).where(Study.study_uid == uid)).one()
            last = session.scalar(
                select(func.max(Instance.received_at)).where(Instance.study_id == study.id)
            )
            events = session.execute(
                select(StudyEvent.kind, StudyEvent.at, StudyEvent.detail)
                .where(StudyEvent.study_id == study.id)
                .order_by(StudyEvent.id)
            ).all()
            queued = next((at for kind, at, _ in events if kind == "completed"), None)
            # claims for inference (the sender's claims say "from": "sending")
            claim_events = [
                (at, json.loads(detail))
                for kind, at, detail in events
                if kind == "claimed" and json.loads(detail).get("from") != "sending"
            ]
            claims = [at for at, _ in claim_events]
            results = session.scalars(select(Result).where(Result.study_id == study.id)).all()
            deliveries = session.scalars(
                select(Delivery).where(Delivery.study_id == study.id)
            ).all()
            acked = max((d.sent_at for d in deliveries if d.sent_at is not None), default=None)
            result = results[-1] if results else None
            created = _seconds(result.created_at) if result else float("nan")
            out.append(
                Timeline(
                    study_uid=uid,
                    syntax=syntax,
                    state=study.state,
                    sent=t0,
                    receive_s=_seconds(last) - t0,
                    quiet_s=_seconds(queued) - _seconds(last),
                    wait_s=_seconds(claims[0] if claims else None) - _seconds(queued),
                    worker_s=created - _seconds(claims[-1] if claims else None),
                    send_s=_seconds(acked) - created,
                    end_s=_seconds(acked) - t0,
                    timings=json.loads(result.timings) if result else {},
                    results=len(results),
                    claims=len(claims),
                    worker=str(claim_events[-1][1].get("worker", "?")) if claim_events else "-",
                    deliveries=sum(d.state == "sent" for d in deliveries),
                    delivery_attempts=sum(d.attempts for d in deliveries),
                    queued_at=_seconds(queued),
                    acked_at=_seconds(acked),
                )
            )
    return out


def pacs_files(run: NodeRun) -> int:
    return sum(1 for p in run.pacs_folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #
@dataclass
class Options:
    device: str
    poll: float
    quiet: float
    timeout: float


def latency(model: str, studies: dict[str, list[StudyFiles]], opts: Options) -> dict[str, Any]:
    """One node; studies sent one at a time, each once the previous one is done.

    The first study (an extra uncompressed one) is the cold start; then the studies of
    each transfer syntax in turn.
    """
    cold, *rest = studies["explicit"]
    order = [cold, *rest, *[s for syntax in SYNTAXES[1:] for s in studies[syntax]]]
    with running_node(
        f"latency {model}",
        model=model_folder(model),
        device=opts.device,
        overrides={},
        poll=opts.poll,
        quiet=opts.quiet,
    ) as run:
        db = Database(run.database)
        sent: dict[str, tuple[str, float]] = {}
        for index, study in enumerate(order):
            syntax = "explicit (cold)" if index == 0 else study.syntax
            sent[study.study_uid] = (syntax, send(run.port, study))
            wait_finished(run, db, [study.study_uid], opts.timeout)
            log(f"  {model}: study {index + 1}/{len(order)} ({syntax}) done")
        rows = timelines(db, sent)
        db.close()
        problems = run.log_problems()
        files = pacs_files(run)
        device = run.device()
        startup = run.startup_s
    return {
        "model": model,
        "device": device,
        "timelines": rows,
        "pacs_files": files,
        "startup_s": startup,
        "log_problems": problems,
    }


def throughput(
    label: str,
    model: str,
    studies: list[StudyFiles],
    opts: Options,
    overrides: dict[str, str],
    *,
    database: str | None = None,
    workers: int = 0,
    worker_overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One fresh node; ``studies`` sent back to back, then wait until all are finished."""
    with running_node(
        label,
        model=model_folder(model),
        device=opts.device,
        overrides=overrides,
        poll=opts.poll,
        quiet=opts.quiet,
        database=database,
        workers=workers,
        worker_overrides=worker_overrides,
    ) as run:
        db = Database(run.database)
        sent = {s.study_uid: (s.syntax, send(run.port, s)) for s in studies}
        log(f"  {label}: {len(studies)} studies sent")
        wait_finished(run, db, list(sent), opts.timeout)
        rows = timelines(db, sent)
        db.close()
        problems = run.log_problems()
        files = pacs_files(run)
        device = run.device()
        startup = run.startup_s
    first_sent = min(t.sent for t in rows)
    first_queued = min(t.queued_at for t in rows)
    last_ack = max(t.acked_at for t in rows)
    return {
        "label": label,
        "overrides": overrides,
        "workers": workers,
        "device": device,
        "studies": len(rows),
        "wall_s": last_ack - first_sent,
        "window_s": last_ack - first_queued,
        "studies_per_min": 60 * len(rows) / (last_ack - first_queued),
        "timelines": rows,
        "pacs_files": files,
        "startup_s": startup,
        "log_problems": problems,
    }


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #
def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


LATENCY_HEADERS = (
    "model",
    "syntax",
    "studies",
    "MB",
    "receive",
    "quiet (excl.)",
    "wait",
    "decode+preprocess",
    "inference",
    "Grad-CAM",
    "render",
    "other",
    "send",
    "end to end excl. quiet",
    "vs explicit",
)


def latency_rows(result: dict[str, Any], sizes: dict[str, float]) -> list[list[str]]:
    groups: dict[str, list[Timeline]] = {}
    for t in result["timelines"]:
        groups.setdefault(t.syntax, []).append(t)
    reference = mean([t.end_excl_quiet_s for t in groups.get("explicit", [])])
    rows = []
    for syntax, items in groups.items():
        end = mean([t.end_excl_quiet_s for t in items])
        cells = [
            mean([t.receive_s for t in items]),
            mean([t.quiet_s for t in items]),
            mean([t.wait_s for t in items]),
            *(mean([t.stage(k) for t in items]) for k in STAGE_KEYS),
            mean([t.other_s for t in items]),
            mean([t.send_s for t in items]),
            end,
        ]
        rows.append(
            [
                result["model"],
                syntax,
                str(len(items)),
                f"{sizes[syntax.split()[0]]:.0f}",
                *(f"{c:.2f}" for c in cells),
                "-" if math.isnan(reference) else f"{end / reference:.2f}x",
            ]
        )
    return rows


def throughput_rows(results: Sequence[dict[str, Any]], first: str) -> list[list[str]]:
    reference = results[0]["studies_per_min"]
    rows = []
    for r in results:
        items: list[Timeline] = r["timelines"]
        duplicates = sum(t.results != 1 or t.claims != 1 for t in items)
        rows.append(
            [
                str(r[first]),
                str(r["studies"]),
                f"{r['wall_s']:.1f}",
                f"{r['window_s']:.1f}",
                f"{r['studies_per_min']:.2f}",
                f"{r['window_s'] / r['studies']:.2f}",
                f"{mean([t.end_excl_quiet_s for t in items]):.1f}",
                f"{mean([t.stage('preprocess_s') for t in items]):.2f}",
                f"{mean([t.stage('inference_s') + t.stage('cam_s') for t in items]):.2f}",
                f"{r['studies_per_min'] / reference:.2f}x",
                " + ".join(str(n) for n in per_worker(items)),
                "ok" if duplicates == 0 else f"{duplicates} studies claimed or inferred twice",
            ]
        )
    return rows


THROUGHPUT_HEADERS = (
    "studies",
    "wall s",
    "queued→last ack s",
    "studies/min",
    "s per study",
    "mean end to end excl. quiet s",
    "decode+preprocess s",
    "inference+CAM s",
    "vs first",
    "studies per process",
    "claims/results",
)


def per_worker(rows: Sequence[Timeline]) -> list[int]:
    """How many studies each inferring process did, most first."""
    counts: dict[str, int] = {}
    for t in rows:
        counts[t.worker] = counts.get(t.worker, 0) + 1
    return sorted(counts.values(), reverse=True)


def extra_timing_keys(rows: Sequence[Timeline]) -> dict[str, float]:
    keys = sorted({k for t in rows for k in t.timings} - set(STAGE_KEYS))
    return {k: mean([t.stage(k) for t in rows]) for k in keys}


def machine() -> dict[str, str]:
    import torch

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": gpu,
        "node": node_source(),
    }


def node_source() -> str:
    """The commit the node runs from, and any uncommitted change under node/.

    Set ``PYTHONPATH`` to a snapshot (``git archive HEAD node training``) to measure a
    commit while the checkout is being edited; a ``COMMIT`` file there names it.
    """
    import node

    source = Path(node.__file__).resolve().parents[1]
    if source != ROOT:
        stamp = source / "COMMIT"
        commit = stamp.read_text().strip()[:7] if stamp.exists() else "unknown commit"
        return f"{commit} (snapshot in {source})"
    git = ["git", "-C", str(ROOT)]
    done = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = done.stdout.strip() or "unknown"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "node"], capture_output=True, text=True
    ).stdout.split("\n")
    dirty = [line[3:] for line in changed if line.strip()]
    return commit + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def report_problems(name: str, result: dict[str, Any]) -> None:
    problems = result["log_problems"]
    expected = sum(t.deliveries for t in result["timelines"])
    attempts = sum(t.delivery_attempts for t in result["timelines"])
    print(
        f"{name}: start-up {result['startup_s']:.1f} s; "
        f"{expected} deliveries acknowledged in {attempts} attempts, "
        f"{result['pacs_files']} files in storescp's folder; "
        f"{len(problems)} warning/error log lines"
    )
    for line in problems[:8]:
        print(f"    {line}")
    states = {t.state for t in result["timelines"]}
    if states != {"done"}:
        print(f"    study states: {sorted(states)}")


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["latency", "variants", "scaling"],
        choices=["latency", "variants", "scaling"],
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["demo", "full"],
        choices=["demo", "full"],
        help="models for the latency section",
    )
    parser.add_argument(
        "--studies",
        type=int,
        default=2,
        help="latency: studies per transfer syntax (plus one cold start)",
    )
    parser.add_argument("--throughput-model", default="demo", choices=["demo", "full"])
    parser.add_argument(
        "--throughput-syntax",
        default="explicit",
        choices=list(SYNTAXES),
        help="variants and scaling: transfer syntax of the studies",
    )
    parser.add_argument(
        "--throughput-studies",
        type=int,
        default=8,
        help="variants and scaling: studies sent back to back",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=Variant.parse,
        default=[Variant.parse(v) for v in DEFAULT_VARIANTS],
        help="name:section.key=value,... (the first is the reference)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--size",
        choices=["full", "small"],
        default="full",
        help="image size (small: 512 x 416, for trying the script)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quiet-seconds", type=float, default=3.0)
    parser.add_argument(
        "--poll",
        type=float,
        default=0.5,
        help="completion, worker and sending check intervals, seconds",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per wait, seconds")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)

    opts = Options(args.device, args.poll, args.quiet_seconds, args.timeout)
    info = machine()
    cores = int(info["cores"])
    dump: dict[str, Any] = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    print(
        f"# bench/e2e: {info['cpu']}, {info['cores']} cores, {info['os']}, "
        f"Python {info['python']}, "
        f"torch {info['torch']}, GPU: {info['gpu']}; device setting {args.device}; "
        f"quiet period {args.quiet_seconds:g} s, check intervals {args.poll:g} s; "
        f"{args.size}-size synthetic studies, dcmtk storescu -> node -> storescp; "
        f"node at {info['node']}"
    )
    if info["gpu"] == "none":
        print("GPU rows: not measured (no CUDA device on this machine)")

    throughput_sections = {"variants", "scaling"} & set(args.sections)
    explicit = max(args.studies + 1, args.throughput_studies if throughput_sections else 0)
    if "latency" in args.sections:
        studies = {
            "explicit": make_studies("explicit", args.size, explicit)[: args.studies + 1],
            "j2k": make_studies("j2k", args.size, args.studies),
        }
        sizes = {syntax: mean([s.megabytes for s in items]) for syntax, items in studies.items()}
        results = [latency(model, studies, opts) for model in args.model]
        print()
        print("## Latency: one study at a time (seconds; means over the studies of each row)")
        print()
        print(table(LATENCY_HEADERS, [row for r in results for row in latency_rows(r, sizes)], 2))
        print()
        for r in results:
            extra = extra_timing_keys(r["timelines"])
            print(
                f"{r['model']}: device {r['device']}; other timing keys (mean s): "
                + (", ".join(f"{k} {v:.2f}" for k, v in extra.items()) or "none")
            )
            report_problems(f"{r['model']}", r)
        dump["latency"] = results
        write_json(args.json, dump)

    if throughput_sections:
        syntax = args.throughput_syntax
        count = explicit if syntax == "explicit" else args.throughput_studies
        batch = make_studies(syntax, args.size, count)[: args.throughput_studies]
        described = "uncompressed" if syntax == "explicit" else "JPEG 2000"

    if "variants" in args.sections:
        results = []
        for variant in args.variants:
            missing = unknown_settings(list(variant.overrides))
            if missing:
                print(
                    f"variant {variant.name}: skipped, "
                    f"this node has no setting {', '.join(missing)}"
                )
                continue
            results.append(
                throughput(variant.name, args.throughput_model, batch, opts, variant.overrides)
            )
            results[-1]["variant"] = variant.name + (
                " (" + ", ".join(f"{k}={v}" for k, v in variant.overrides.items()) + ")"
                if variant.overrides
                else ""
            )
        if results:
            print()
            print(
                f"## Variants: {args.throughput_studies} {described} studies back to back, "
                f"model {args.throughput_model}, one node per row"
            )
            print()
            print(table(("variant", *THROUGHPUT_HEADERS), throughput_rows(results, "variant")))
            print()
            for r in results:
                report_problems(r["label"], r)
        dump["variants"] = results
        write_json(args.json, dump)

    if "scaling" in args.sections:
        missing = unknown_settings(["worker.enabled"])
        if missing or not has_worker_command():
            print(
                "\nscaling: skipped, this node has no `breast-node worker` command or "
                "worker.enabled setting"
            )
        else:
            results = []
            with postgres_server("-c max_connections=200") as server:
                for n in args.workers:
                    threads = str(max(1, cores // n))
                    url = fresh_database(server, f"e2e_workers_{n}")
                    results.append(
                        throughput(
                            f"{n} worker(s)",
                            args.throughput_model,
                            batch,
                            opts,
                            {},
                            database=url,
                            workers=n,
                            worker_overrides={"inference.threads": threads},
                        )
                    )
                    results[-1]["workers_label"] = f"{n} x {threads} thread(s)"
            print()
            print(
                f"## Scaling: serve + N `breast-node worker` processes on one PostgreSQL queue, "
                f"{args.throughput_studies} {described} studies back to back, "
                f"model {args.throughput_model}"
            )
            print()
            print(
                table(("workers", *THROUGHPUT_HEADERS), throughput_rows(results, "workers_label"))
            )
            print()
            for r in results:
                report_problems(r["label"], r)
            dump["scaling"] = results
            write_json(args.json, dump)

    return 0


def write_json(path: Path | None, dump: dict[str, Any]) -> None:
    """Every measurement so far (written after each section)."""
    if path is not None:
        path.write_text(json.dumps(dump, indent=2, default=_jsonable), encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Timeline):
        return {**asdict(value), "end_excl_quiet_s": value.end_excl_quiet_s}
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
