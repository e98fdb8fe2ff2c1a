"""``breast-node``: the node's command line.

Each subcommand is a small function that loads settings, does one thing and
returns an exit status: 0 success, 1 a reported error (one line on stderr),
2 a usage error (from argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from node import __version__
from node.config import Settings, load_settings
from node.errors import NodeError

__all__ = ["main"]

CONFIG_ENV = "BREAST_NODE_CONFIG"

Command = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    where = args.config or "built-in defaults"
    model = (
        f"{settings.model} (present)"
        if settings.model_available
        else f"{settings.model} (missing: the node will receive and queue but not infer)"
        if settings.model
        else "none (the node will receive and queue but not infer)"
    )
    print(f"OK: {where}")
    print(f"  listener: {settings.node.ae_title} on {settings.node.host}:{settings.node.port}")
    print(f"  database: {settings.redacted()['storage']['database']}")
    print(f"  spool:    {settings.storage.spool}")
    print(f"  model:    {model}")
    print(f"  destinations: {', '.join(d.name for d in settings.destinations) or 'none'}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from node.app import NodeService, serve_forever
    from node.log import configure_logging

    settings = _settings(args)
    configure_logging(settings.logging)
    serve_forever(NodeService(settings))
    return 0


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV) or None,
        metavar="FILE",
        help=f"YAML settings file (default: ${CONFIG_ENV}, else the built-in defaults)",
    )


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
    ]
    for name, summary, func in commands:
        p = sub.add_parser(name, help=summary, description=summary)
        _add_config(p)
        p.set_defaults(func=func)
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
