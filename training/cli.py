"""``breast-train``: train, evaluate and export models, and make synthetic data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from node import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand has a one-line description."""
    parser = argparse.ArgumentParser(
        prog="breast-train",
        description="Train, evaluate and export the node's models; generate synthetic studies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``breast-train``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
