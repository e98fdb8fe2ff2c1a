"""Receiving while inferring: does a PACS see the node slow down when a model is running?

For each variant, two fresh nodes (``breast-node serve`` subprocesses, demo ensemble,
flip TTA, on the CPU unless ``--device cuda``):

* **idle**: the node receives only (no worker): ``--probe`` detector-size four-view
  studies sent by ``--senders`` concurrent pynetdicom SCUs (one association each, the
  studies split between them);
* **busy**: first a backlog of ``--backlog`` studies is received and queued, and once the
  worker is inferring them the same probe is sent; the bench checks the worker was busy
  from the probe's first C-STORE to its last.

Each sender times every C-STORE (request sent to response received). The table gives,
per variant and phase: probe megabytes per second (first C-STORE to last response), the
C-STORE latency median and 99th percentile, and ratios against the idle phase measured
in the same run. Variants: ``inprocess`` (``serve`` with its worker inside, as ``make
run`` starts it) and ``separate`` (``serve`` with ``worker.enabled: false`` plus one
``breast-node worker`` process: inference in its own process, scheduled by the OS apart
from the listener).

``--soak-minutes N`` then keeps studies arriving from the senders for N minutes while the
worker infers (in the last variant given), reports throughput and latency per minute,
and checks that every study ends ``done``.

    .venv/bin/python bench/busy.py                      # about 10 minutes on 2 cores
    .venv/bin/python bench/busy.py --variants separate --soak-minutes 10

Data: full-size synthetic studies generated once under var/bench/e2e/ (shared with
bench/e2e.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from e2e import (  # noqa: E402  (the end-to-end bench's node runner and data)
    DEMO_MODEL,
    Database,
    NodeRun,
    StudyFiles,
    log,
    machine,
    make_studies,
    running_node,
    wait_for,
)

VARIANTS = {
    "inprocess": 0,  # the worker inside serve
    "separate": 1,  # one breast-node worker process
}


# --------------------------------------------------------------------------- #
# The sender: one association, every C-STORE timed
# --------------------------------------------------------------------------- #
def sender_main(argv: list[str]) -> int:
    """``busy.py --sender PORT OUT ROUND FILE...``: C-STORE FILEs, write their latencies to
    OUT. ROUND > 0 gives every study, series and instance new UIDs (derived from the old
    ones and ROUND), so that a re-sent study is a new study."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    port, out, round_, *files = argv
    datasets = [dcmread(path) for path in files]
    if int(round_) > 0:
        for ds in datasets:
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                new = generate_uid(entropy_srcs=[str(ds.get(keyword)), round_])
                setattr(ds, keyword, new)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = AE(ae_title="BUSY_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for pair in sorted(
        {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
    ):
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", int(port), ae_title="BREAST_AI", max_pdu=131072)
    if not assoc.is_established:
        return 1
    rows = []
    for ds in datasets:
        start = time.time()
        result = assoc.send_c_store(ds)
        end = time.time()
        rows.append({"start": start, "end": end, "status": int(result.get("Status", -1))})
    assoc.release()
    Path(out).write_text(json.dumps(rows), encoding="utf-8")
    return 0 if all(r["status"] == 0 for r in rows) else 1


def send_probe(
    port: int, studies: Sequence[StudyFiles], senders: int, work: Path, round_: int = 0
) -> dict[str, Any]:
    """Send ``studies`` from ``senders`` processes at once; every C-STORE's timing.

    ``round_`` > 0: as new studies (new UIDs; see :func:`sender_main`)."""
    files = [f for study in studies for f in study.files]
    shares = [files[i::senders] for i in range(senders)]
    procs = []
    outs = []
    for index, share in enumerate(shares):
        out = work / f"sender{index}.json"
        outs.append(out)
        command = [sys.executable, __file__, "--sender", str(port), str(out), str(round_)]
        command += map(str, share)
        procs.append(subprocess.Popen(command))
    failed = [p.wait(timeout=1800) for p in procs]
    if any(failed):
        raise RuntimeError("a sender failed (see the node's log)")
    rows = [row for out in outs for row in json.loads(out.read_text(encoding="utf-8"))]
    first = min(r["start"] for r in rows)
    last = max(r["end"] for r in rows)
    latencies = sorted(r["end"] - r["start"] for r in rows)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    return {
        "instances": len(rows),
        "megabytes": megabytes,
        "first": first,
        "last": last,
        "seconds": last - first,
        "mb_per_s": megabytes / (last - first),
        "median_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


# --------------------------------------------------------------------------- #
# Phases
# --------------------------------------------------------------------------- #
def _states(db: Database) -> dict[str, int]:
    from sqlalchemy import func, select

    from node.db.models import Study

    with db.session_factory() as session:
        rows = session.execute(select(Study.state, func.count()).group_by(Study.state)).all()
    return {str(state): int(count) for state, count in rows}


def _processing_spans(db: Database) -> list[tuple[float, float]]:
    """Each claim's (claimed, result stored) times, from the event log."""
    from sqlalchemy import select

    from node.db.models import StudyEvent

    spans: list[tuple[float, float]] = []
    claimed: dict[int, float] = {}
    with db.session_factory() as session:
        for study_id, at, kind in session.execute(
            select(StudyEvent.study_id, StudyEvent.at, StudyEvent.kind).order_by(StudyEvent.id)
        ):
            if kind == "claimed":
                claimed[study_id] = at.timestamp()
            elif kind == "result" and study_id in claimed:
                spans.append((claimed.pop(study_id), at.timestamp()))
    return spans


def busy_fraction(spans: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """The share of ``[start, end]`` during which some study was being inferred."""
    covered = 0.0
    cursor = start
    for begin, finish in sorted(spans):
        begin, finish = max(begin, cursor), min(finish, end)
        if finish > begin:
            covered += finish - begin
            cursor = finish
    return covered / (end - start) if end > start else 0.0


def phase(
    variant: str,
    busy: bool,
    backlog: Sequence[StudyFiles],
    probe: Sequence[StudyFiles],
    args: argparse.Namespace,
) -> dict[str, Any]:
    workers = VARIANTS[variant] if busy else 0
    overrides = {"inference.tta": "flip"}
    if not busy:
        overrides["worker.enabled"] = "false"
    label = f"{variant} {'busy' if busy else 'idle'}"
    with running_node(
        label,
        model=DEMO_MODEL,
        device=args.device,
        overrides=overrides,
        poll=0.2,
        quiet=args.quiet_seconds,
        workers=workers,
    ) as run:
        db = Database(run.database)
        if busy:
            _preload(run, db, backlog, args)
        with tempfile.TemporaryDirectory(dir=run.work) as folder:
            result = send_probe(run.port, probe, args.senders, Path(folder))
        result["busy_fraction"] = 0.0
        if busy:
            wanted = len(backlog) + len(probe)
            wait_for(
                lambda: _states(db).get("done", 0) >= wanted, f"{label}: all done", args.timeout
            )
            # once every claim has its result: how much of the probe the worker spent busy
            spans = _processing_spans(db)
            result["busy_fraction"] = busy_fraction(spans, result["first"], result["last"])
        result["states"] = _states(db)
        result["problems"] = run.log_problems()
        db.close()
    return result


def _preload(
    run: NodeRun, db: Database, backlog: Sequence[StudyFiles], args: argparse.Namespace
) -> None:
    """Send the backlog and return once the worker has started on it."""
    with tempfile.TemporaryDirectory(dir=run.work) as folder:
        send_probe(run.port, backlog, args.senders, Path(folder))

    def started() -> bool:
        states = _states(db)
        return states.get("processing", 0) + states.get("sending", 0) + states.get("done", 0) > 0

    wait_for(started, "backlog: the worker starts", args.timeout, every=0.05)


def soak(
    variant: str, studies: Sequence[StudyFiles], minutes: float, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Studies keep arriving (in probe-sized rounds) for ``minutes`` while the worker infers."""
    rows: list[dict[str, Any]] = []
    with running_node(
        f"{variant} soak",
        model=DEMO_MODEL,
        device=args.device,
        overrides={"inference.tta": "flip"},
        poll=0.2,
        quiet=args.quiet_seconds,
        workers=VARIANTS[variant],
    ) as run:
        db = Database(run.database)
        end = time.monotonic() + 60 * minutes
        rounds = 0
        while time.monotonic() < end:
            with tempfile.TemporaryDirectory(dir=run.work) as folder:
                result = send_probe(run.port, studies, args.senders, Path(folder), rounds + 1)
            result["round"] = rounds = rounds + 1
            rows.append(result)
            log(f"  soak round {rounds}: {result['mb_per_s']:.0f} MB/s")
        # every study of every round ends done: none lost, none left behind
        wait_for(
            lambda: _states(db).get("done", 0) == rounds * len(studies),
            "soak: every study done",
            args.timeout,
        )
        spans = _processing_spans(db)
        for row in rows:
            row["busy_fraction"] = busy_fraction(spans, row["first"], row["last"])
        rows.append({"states": _states(db), "problems": run.log_problems()})
        db.close()
    return rows


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--sender"]:
        return sender_main(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--backlog", type=int, default=12, help="studies queued before the probe")
    parser.add_argument("--probe", type=int, default=8, help="studies sent while inferring")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--quiet-seconds", type=float, default=1.0)
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"# bench/busy: {info['cpu']}, {info['cores']} cores, {info['os']}, torch "
        f"{info['torch']}; demo ensemble, flip TTA, device {args.device}; "
        f"{args.senders} senders; backlog {args.backlog}, probe {args.probe} full-size "
        f"four-view studies; node at {info['node']}"
    )
    studies = make_studies("explicit", "full", args.backlog + args.probe)
    backlog, probe = studies[: args.backlog], studies[args.backlog :]
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        results[f"{variant} idle"] = phase(variant, False, backlog, probe, args)
        results[f"{variant} busy"] = phase(variant, True, backlog, probe, args)
    print()
    print(
        "| variant | phase | MB | seconds | MB/s | C-STORE median ms | p99 ms | worker busy "
        "| MB/s vs idle | median vs idle | p99 vs idle |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        variant, name = key.split()
        idle = results[f"{variant} idle"]
        print(
            f"| {variant} | {name} | {r['megabytes']:.0f} | {r['seconds']:.2f} | "
            f"{r['mb_per_s']:.0f} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{100 * r['busy_fraction']:.0f} % | {r['mb_per_s'] / idle['mb_per_s']:.2f}x | "
            f"{r['median_ms'] / idle['median_ms']:.2f}x | {r['p99_ms'] / idle['p99_ms']:.2f}x |"
        )
    for key, r in results.items():
        if r["problems"]:
            print(f"{key}: {len(r['problems'])} warning/error log lines, e.g. {r['problems'][0]}")
    dump: dict[str, Any] = {"machine": info, "phases": results}
    if args.soak_minutes > 0:
        rows = soak(args.variants[-1], studies, args.soak_minutes, args)
        print()
        print(
            f"Soak, {args.variants[-1]}: studies re-sent round after round "
            f"for {args.soak_minutes:g} min"
        )
        print("| round | MB/s | C-STORE median ms | p99 ms | worker busy |")
        print("|---:|---:|---:|---:|---:|")
        for r in rows[:-1]:
            print(
                f"| {r['round']} | {r['mb_per_s']:.0f} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {100 * r['busy_fraction']:.0f} % |"
            )
        print(f"end: states {rows[-1]['states']}, {len(rows[-1]['problems'])} warning/error lines")
        dump["soak"] = rows
    if args.json is not None:
        args.json.write_text(json.dumps(dump, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
