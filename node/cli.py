"""``breast-node``: the node's command line.

Each subcommand is a small function that loads settings, does one thing and
returns an exit status: 0 success, 1 a reported error (one line on stderr),
2 a usage error (from argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from node import __version__
from node.config import Settings, load_settings
from node.errors import NodeError

if TYPE_CHECKING:
    from node.app import NodeService
    from node.db import SessionFactory
    from node.dicom.scu import Peer

__all__ = ["main"]

CONFIG_ENV = "BREAST_NODE_CONFIG"

Command = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    where = args.config or "built-in defaults"
    routes = _model_lines(settings)  # a bad card or an unserved rule raises here
    print(f"OK: {where}")
    print(f"  listener: {settings.node.ae_title} on {settings.node.host}:{settings.node.port}")
    print(f"  database: {settings.redacted()['storage']['database']}")
    print(f"  spool:    {settings.storage.spool}")
    for line in routes:
        print(f"  {line}")
    print(f"  destinations: {', '.join(d.name for d in settings.destinations) or 'none'}")
    return 0


def _model_lines(settings: Settings) -> list[str]:
    """What ``check-config`` says about the models: each folder, and which model infers
    the images of each eligibility rule (the start-up check, from the cards alone)."""
    from node.models.card import read_card
    from node.models.routes import Routes
    from node.pipeline.eligibility import check_models, rule_modalities

    if not settings.available_models:
        folders = ", ".join(map(str, settings.models))
        missing = f"{folders} (missing)" if folders else "none"
        return [f"models:   {missing}: the node will receive and queue but not infer"]
    cards = [read_card(folder) for folder in settings.available_models]
    routes = Routes(cards, settings.eligibility.rules)
    unserved = check_models(settings, routes)
    lines = []
    for folder in settings.models:
        if not folder.is_dir():
            lines.append(f"model:    {folder} (missing: left out)")
            continue
        card = cards[settings.available_models.index(folder)]
        lines.append(
            f"model:    {folder}: {card.name} {card.version} ({', '.join(card.modalities)})"
        )
    for rule in settings.eligibility.rules:
        served = []
        for modality in rule_modalities(rule):
            route = routes.card_for(modality, rule.name)
            served.append(f"{modality} -> {route.name if route is not None else 'skipped'}")
        lines.append(f"rule {rule.name}: {', '.join(served)}")
    return lines + [f"warning: {problem}; skipped" for problem in unserved]


def _cmd_serve(args: argparse.Namespace) -> int:
    from node.app import NodeService, serve_forever
    from node.log import configure_logging

    settings = _settings(args)
    configure_logging(settings.logging)
    # The listener receives data sets into temporary files: keep them in the spool's tmp/
    # folder (same file system for the final rename; emptied at every start).
    tempfile.tempdir = str(settings.storage.spool / "tmp")
    serve_forever(NodeService(settings), on_started=_say_where)
    return 0


def _say_where(service: NodeService) -> None:
    """On a terminal, one plain line: where DICOM goes and where the status page is."""
    if not sys.stdout.isatty() or service.scp is None:
        return
    node = service.settings.node
    page = service.status_page_url() or "off (http.enabled: false)"
    print(
        f"Breast AI Node is up: DICOM {node.ae_title} on port {service.scp.port}; "
        f"status page {page}",
        flush=True,
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    from node.app import NodeService, serve_forever
    from node.log import configure_logging

    settings = _settings(args)
    configure_logging(settings.logging)
    if settings.worker.nice and hasattr(os, "nice"):
        os.nice(settings.worker.nice)  # the listener's process gets the CPU first
    serve_forever(NodeService(settings, role="worker"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from node.db import open_database
    from node.db.reads import count_by_state, delivery_counts, recent_studies

    settings = _settings(args)
    session_factory = open_database(
        settings.storage.database, busy_timeout=settings.storage.database_busy_timeout_seconds
    )
    counts = count_by_state(session_factory)
    studies = recent_studies(session_factory, limit=args.limit)
    sent = delivery_counts(session_factory, studies)
    # studies are identified by Study Instance UID and accession number, never by patient
    recent = [
        {
            "study_uid": study.study_uid,
            "accession_number": study.accession_number,
            "state": study.state.value,
            "reason": study.reason,
            "generation": study.generation,
            "instances": study.instance_count,
            "last_received_at": study.last_received_at.isoformat(),
            "state_changed_at": study.state_changed_at.isoformat(),
            "deliveries": sent[study.id],
        }
        for study in studies
    ]
    if args.json:
        print(json.dumps({"studies": counts, "recent": recent}, indent=2))
        return 0
    print("  ".join(f"{state}: {count}" for state, count in counts.items()))
    if recent:
        print()
        header = f"{'state':<10} {'gen':>3} {'inst':>5}  {'changed (UTC)':<19}  {'accession':<16}"
        print(f"{header} study UID / reason")
        for row in recent:
            changed = str(row["state_changed_at"])[:19].replace("T", " ")
            print(
                f"{row['state']:<10} {row['generation']:>3} {row['instances']:>5}  {changed:<19}  "
                f"{row['accession_number'] or '-':<16} {row['study_uid']}"
                + (f"  ({row['reason']})" if row["reason"] else "")
            )
    return 0


def _database(settings: Settings) -> SessionFactory:
    from node.db import open_database

    return open_database(
        settings.storage.database, busy_timeout=settings.storage.database_busy_timeout_seconds
    )


def _since(value: str) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or ``12h``/``7d``."""
    from node.db import utcnow

    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return utcnow() - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, time or age (12h, 7d): {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _cmd_studies(args: argparse.Namespace) -> int:
    from node.db.reads import list_studies

    rows = list_studies(
        _database(_settings(args)), state=args.state, since=args.since, limit=args.limit
    )
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return 0
    print(
        f"{'state':<10} {'gen':>3} {'inst':>4} {'score':>6}  {'changed (UTC)':<19}  "
        f"{'accession':<16} study UID"
    )
    for row in rows:
        score = "-" if row.score is None else f"{row.score:.3f}"
        changed = row.state_changed_at[:19].replace("T", " ")
        print(
            f"{row.state:<10} {row.generation:>3} {row.instances:>4} {score:>6}  {changed:<19}  "
            f"{row.accession_number or '-':<16} {row.study_uid}"
            + (f"  ({row.reason})" if row.reason else "")
        )
    print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from node.db.reads import show_study
    from node.summary import study_summary

    known = show_study(_database(_settings(args)), args.study_uid)
    print(json.dumps(known, indent=2) if args.json else study_summary(known))
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    from node.db.queue import retry, retry_failed

    session_factory = _database(_settings(args))
    if args.failed:
        done = retry_failed(session_factory)
        print("\n".join(done) if done else "no failed studies")
    elif args.study_uid:
        print(retry(session_factory, args.study_uid))
    else:
        raise NodeError("name a STUDY_UID or use --failed")
    return 0


def _cmd_reprocess(args: argparse.Namespace) -> int:
    from node.db.queue import reprocess

    print(reprocess(_database(_settings(args)), args.study_uid))
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    from node.pipeline.retention import purge
    from node.spool import Spool

    settings = _settings(args)
    days = args.days if args.days is not None else settings.retention.days
    if days is None:
        print("retention.days is null: nothing is purged (use --days to purge anyway)")
        return 0
    report = purge(_database(settings), Spool(settings.storage.spool), days, dry_run=args.dry_run)
    verb = "would delete" if report.dry_run else "deleted"
    for study_uid in report.studies:
        print(f"{verb}: {study_uid}")
    print(
        f"{verb} {len(report.studies)} finished studies unchanged since {report.cutoff[:19]} UTC "
        f"({report.files} files, {report.bytes / 1e6:.1f} MB) and "
        f"{report.audit_events} audit events"
    )
    if report.kept:
        print(f"kept {report.kept} files: the same instances arrived again meanwhile")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from node.db.reads import audit_events

    rows = audit_events(
        _database(_settings(args)), study_uid=args.study, since=args.since, limit=args.limit
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        who = row["ae_title"] or "-"
        print(
            f"{row['at'][:19].replace('T', ' ')}  {row['kind']:<8} {row['status']:<7} "
            f"{row['instances']:>4}  {who:<16} {row['peer'] or '-':<22} {row['study_uid'] or '-'}"
        )
    return 0


def _peer(args: argparse.Namespace, settings: Settings) -> Peer:
    from node.dicom.scu import Peer

    host = args.host or settings.node.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return Peer(
        host=host,
        port=args.port or settings.node.port,
        ae_title=args.ae_title or settings.node.ae_title,
        calling_ae_title=args.calling_ae_title or settings.node.ae_title,
        timeout=args.timeout,
    )


def _cmd_echo(args: argparse.Namespace) -> int:
    from node.dicom import status
    from node.dicom.scu import echo

    peer = _peer(args, _settings(args))
    code = echo(peer)
    print(f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: {status.describe(code)}")
    return 0 if code == status.SUCCESS else 1


def _cmd_send(args: argparse.Namespace) -> int:
    from node.dicom.scu import expand_paths, send_files
    from node.progress import SendProgress

    peer = _peer(args, _settings(args))
    files = expand_paths(args.paths)
    progress = SendProgress(sys.stderr) if len(files) > 1 and not args.quiet else None
    report = send_files(peer, files, progress=progress)
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(
        f"{report.sent} sent ({report.bytes / 1e6:.1f} MB), {len(report.failed)} failed, "
        f"{len(report.skipped)} skipped (not DICOM) to {peer.ae_title}@{peer.host}:{peer.port}"
    )
    return 0 if not report.failed else 1


def _add_peer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="peer host (default: this node's listener)")
    parser.add_argument("--port", type=int, help="peer port (default: node.port)")
    parser.add_argument("--ae-title", help="called AE title (default: node.ae_title)")
    parser.add_argument("--calling-ae-title", help="our AE title (default: node.ae_title)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV) or None,
        metavar="FILE",
        help=f"YAML settings file (default: ${CONFIG_ENV}, else the built-in defaults)",
    )


def _add_admin_options(name: str, parser: argparse.ArgumentParser) -> None:
    from node.db.models import StudyState

    since = {"type": _since, "metavar": "WHEN", "help": "ISO date/time (UTC) or age: 12h, 7d"}
    if name in ("studies", "audit"):
        parser.add_argument("--since", **since)  # type: ignore[arg-type]
        parser.add_argument("--limit", type=int, default=50, help="rows shown (default: 50)")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if name == "studies":
        parser.add_argument(
            "--state", choices=[s.value for s in StudyState], help="only this state"
        )
    elif name == "audit":
        parser.add_argument("--study", metavar="STUDY_UID", help="only this study")
    elif name in ("show", "reprocess"):
        parser.add_argument("study_uid", metavar="STUDY_UID", help="Study Instance UID")
    if name == "show":
        parser.add_argument("--json", action="store_true", help="everything known, as JSON")
    elif name == "retry":
        parser.add_argument("study_uid", nargs="?", metavar="STUDY_UID", help="Study Instance UID")
        parser.add_argument("--failed", action="store_true", help="retry every failed study")
    elif name == "purge":
        parser.add_argument("--dry-run", action="store_true", help="only say what would go")
        parser.add_argument("--days", type=float, help="override retention.days")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand has a one-line description."""
    parser = argparse.ArgumentParser(
        prog="breast-node",
        description="DICOM AI node for breast cancer detection (not for clinical use).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands: list[tuple[str, str, Command]] = [
        ("check-config", "validate a settings file and summarise it", _cmd_check_config),
        ("serve", "run the node: receive, queue, infer and send until stopped", _cmd_serve),
        (
            "worker",
            "infer and send only, sharing a serve node's database and spool",
            _cmd_worker,
        ),
        ("status", "count studies by state and list the latest ones", _cmd_status),
        ("echo", "C-ECHO a DICOM peer (this node by default)", _cmd_echo),
        ("send", "C-STORE files or folders to a DICOM peer", _cmd_send),
        ("studies", "list studies with state, score and timings", _cmd_studies),
        ("show", "one study: scores, labels, regions, deliveries (--json: all)", _cmd_show),
        ("retry", "retry a failed study: re-send, else re-infer", _cmd_retry),
        ("reprocess", "infer a study again; new results supersede", _cmd_reprocess),
        ("purge", "delete finished studies past retention.days", _cmd_purge),
        ("audit", "audit trail: what came from whom, went where", _cmd_audit),
    ]
    for name, summary, func in commands:
        p = sub.add_parser(name, help=summary, description=summary)
        _add_config(p)
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
            p.add_argument(
                "--limit", type=int, default=20, help="recent studies shown (default: 20)"
            )
        elif name in ("echo", "send"):
            _add_peer(p)
        if name == "send":
            p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
            p.add_argument("--quiet", action="store_true", help="no progress line")
        _add_admin_options(name, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``breast-node``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
