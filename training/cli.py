"""``breast-train``: train, evaluate and export models, and make synthetic data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from node import __version__

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def _mix(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("give three numbers: malignant,benign,normal")
    return parts[0], parts[1], parts[2]


def _cmd_synth(args: argparse.Namespace) -> int:
    from training.synthetic import SynthOptions, write_studies

    try:
        options = SynthOptions(
            size=args.size,
            modality=args.modality,
            photometric=args.photometric,
            transfer_syntax=args.transfer_syntax,
            mix=args.mix,
            difficulty=args.difficulty,
            for_processing=args.for_processing,
            tomo=args.tomo,
            split_series=args.split_series,
            drop_view=args.drop_view,
        )
        images = write_studies(args.out, args.studies, args.seed, options)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = {
        label: sum(1 for i in images if i.label == label)
        for label in ("malignant", "benign", "normal")
    }
    print(
        f"wrote {args.studies} {args.modality.upper()} studies, {len(images)} images "
        f"({counts['malignant']} malignant, {counts['benign']} benign, {counts['normal']} normal) "
        f"to {args.out}"
    )
    return 0


def _add_synth(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.synthetic import SynthOptions

    default = SynthOptions()
    parser = sub.add_parser(
        "synth",
        help="write synthetic mammography or ultrasound studies as DICOM, with labels.csv",
        description="Write synthetic screening studies as DICOM files plus DIR/labels.csv.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--studies", type=int, default=10, metavar="N", help="number of studies")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed (same seed, same bytes)"
    )
    parser.add_argument(
        "--size",
        choices=("small", "full"),
        default=default.size,
        help="small: 512x416 for tests; full: 3328x2560 detector size",
    )
    parser.add_argument("--modality", choices=("mg", "us"), default=default.modality)
    parser.add_argument(
        "--photometric", choices=("monochrome1", "monochrome2"), default=default.photometric
    )
    parser.add_argument(
        "--transfer-syntax",
        choices=("explicit", "j2k", "jpegls", "jpeg-lossless", "rle"),
        default=default.transfer_syntax,
        help="lossless encoding of the pixel data",
    )
    parser.add_argument(
        "--mix",
        type=_mix,
        default=default.mix,
        metavar="M,B,N",
        help="weights of malignant, benign and normal studies (default: %(default)s)",
    )
    parser.add_argument(
        "--difficulty",
        type=float,
        default=default.difficulty,
        help="1.0 default; higher: smaller, fainter lesions",
    )
    parser.add_argument(
        "--for-processing",
        action="store_true",
        help="also write a For Processing image per view (not in labels.csv)",
    )
    parser.add_argument(
        "--tomo",
        action="store_true",
        help="also write a multi-frame tomosynthesis-like object per study (not in labels.csv)",
    )
    parser.add_argument("--split-series", action="store_true", help="one series per view")
    parser.add_argument(
        "--drop-view",
        metavar="VIEW",
        default=None,
        help="leave this view out of every study, e.g. L-CC",
    )
    parser.set_defaults(func=_cmd_synth)


def _cmd_synth_sheet(args: argparse.Namespace) -> int:
    from training.synthetic.sheet import make_contact_sheet

    try:
        path = make_contact_sheet(args.data, args.out, args.studies)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


def _add_synth_sheet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "synth-sheet",
        help="draw a PNG contact sheet of synthetic studies with lesion outlines",
        description="Draw a few studies of each --data folder (written by synth) into one PNG.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="a folder written by 'breast-train synth' (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="PNG", help="output file")
    parser.add_argument("--studies", type=int, default=3, metavar="N", help="studies per folder")
    parser.set_defaults(func=_cmd_synth_sheet)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand has a one-line description."""
    parser = argparse.ArgumentParser(
        prog="breast-train",
        description="Train, evaluate and export the node's models; generate synthetic studies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_synth(sub)
    _add_synth_sheet(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``breast-train``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
