"""``breast-train``: train, evaluate and export models, and make synthetic data."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from node import __version__
from node.errors import ModelError

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def _error(exc: Exception) -> int:
    """Print ``error: <reason>`` on stderr; the exit status of a failed command."""
    print(f"error: {exc}", file=sys.stderr)
    return 1


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
            voi=args.voi,
        )
        images = write_studies(args.out, args.studies, args.seed, options)
    except (ValueError, RuntimeError) as exc:
        return _error(exc)
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
    parser.add_argument(
        "--voi",
        choices=("window", "sigmoid", "lut"),
        default=default.voi,
        help="VOI of the mammograms: linear windows, SIGMOID windows or a VOI LUT Sequence",
    )
    parser.set_defaults(func=_cmd_synth)


def _cmd_synth_sheet(args: argparse.Namespace) -> int:
    from training.synthetic.sheet import make_contact_sheet

    try:
        path = make_contact_sheet(args.data, args.out, args.studies)
    except (OSError, ValueError) as exc:
        return _error(exc)
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


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from training.config import ConfigError, load_config
    from training.train import train

    try:
        config = load_config(args.config, args.set)
        if args.dry_run:
            from training.plan import dry_run, plan_lines

            plan = dry_run(config)
            print(json.dumps(plan, indent=2) if args.json else "\n".join(plan_lines(plan)))
            return 0
        result = train(config, resume=args.resume, progress=not args.quiet)
    except (ConfigError, ModelError, ValueError, OSError) as exc:
        return _error(exc)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    print(
        f"trained {config.model.architecture} for {result.epochs_run} epochs; best validation "
        f"AUC {result.best_auc:.4f} at epoch {result.best_epoch}; run folder {result.output} "
        "(metrics.csv, training.png, best.pt, run.json)"
    )
    return 0


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="YAML", help="config file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. model.architecture=lcnet_050 (repeatable)",
    )


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "train",
        help="train one model from a YAML config (torchrun for several GPUs)",
        description="Train one model from a YAML config; see training/configs/.",
    )
    _config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read the data, split it, build the model and run one step; train nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    parser.set_defaults(func=_cmd_train)


def _cmd_cache(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_config
    from training.plan import fill_cache

    try:
        folder = fill_cache(load_config(args.config, args.set), progress=not args.quiet)
    except (ConfigError, ValueError, OSError) as exc:
        return _error(exc)
    print(f"preprocessed the training and validation images into {folder}")
    return 0


def _add_cache(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cache",
        help="preprocess a config's training and validation images once",
        description=(
            "Fill data.cache_dir before runs that share it start side by side (ensemble "
            "members, folds, torchrun processes)."
        ),
    )
    _config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_cmd_cache)


def _export_options(args: argparse.Namespace, runs: tuple[Path, ...]) -> Any:
    from training.export import ExportOptions

    return ExportOptions(
        runs=runs,
        val_data=getattr(args, "val_data", None),
        split=getattr(args, "split", "all"),
        dataset=getattr(args, "dataset", "auto"),
        out=args.out,
        name=args.name,
        version=args.version,
        card_fields=args.card,
        tta=args.tta,
        weights=args.weights,
        half=args.half,
        progress=not getattr(args, "quiet", False),
        output_stride=args.output_stride,
    )


def _members_line(card: Any) -> str:
    return ", ".join(
        f"{m.name} ({m.architecture}, w={m.weight:.3f}, T={m.temperature:.2f})"
        for m in card.ensemble.members
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_model

    try:
        card = export_model(_export_options(args, tuple(args.run)), say=_say)
    except (ModelError, ValueError, OSError) as exc:
        return _error(exc)
    print(f"wrote {args.out}: {_members_line(card)}")
    print(f"weights: {card.ensemble.weighting}")
    return 0


def _model_folder_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--out", type=Path, required=required, metavar="DIR", help="model folder")
    parser.add_argument("--name", required=required, help="model name in the card")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument(
        "--card",
        type=Path,
        default=None,
        metavar="YAML",
        help="card fields to set (description, intended_use, training_data, ...)",
    )
    parser.add_argument("--tta", choices=("none", "flip", "multi"), default="flip")
    parser.add_argument(
        "--weights",
        choices=("nll", "auc", "equal", "auto"),
        default="nll",
        help="ensemble weights on validation (auto: fitted only if they beat equal weights)",
    )
    parser.add_argument("--half", action="store_true", help="store weights as float16")
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),  # node.models.registry.OUTPUT_STRIDES (imports torch)
        default=None,
        help="serve the members at this output stride (finer Grad-CAM maps) instead of the "
        "trained one; calibration and thresholds are fitted at it",
    )


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="calibrate trained runs on validation data and write a node model folder",
        description=(
            "Fit each run's temperature and the ensemble weights on validation data, choose "
            "thresholds for 90 %% and 95 %% sensitivity, and write models/<name>/. Without "
            "--val-data the runs' own validation images are used."
        ),
    )
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="a training run folder (repeatable: one ensemble member each)",
    )
    parser.add_argument(
        "--val-data", type=Path, default=None, metavar="DIR", help="a folder to calibrate on"
    )
    parser.add_argument(
        "--split",
        choices=("all", "train", "test"),
        default="all",
        help="with --val-data: all of it, or its official train or test images",
    )
    parser.add_argument("--dataset", default="auto", help="dataset kind of --val-data")
    _model_folder_arguments(parser)
    parser.set_defaults(func=_cmd_export)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from training.config import ConfigError
    from training.ensemble import load_recipe, run_recipe

    try:
        recipe = load_recipe(args.config, args.set)
        result = run_recipe(recipe, progress=not args.quiet)
    except (ConfigError, ModelError, ValueError, OSError) as exc:
        return _error(exc)
    print(f"wrote {recipe.export.out}: {_members_line(result.card)}")
    print(f"weights: {result.card.ensemble.weighting}")
    return 0


def _add_ensemble(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "ensemble",
        help="train several architectures from one recipe and export them as one model folder",
        description=(
            "Train each member of a recipe (see training/configs/busi-ensemble.yaml), fit "
            "temperatures, ensemble weights and thresholds on the validation split, and "
            "write the model folder."
        ),
    )
    parser.add_argument("--config", type=Path, required=True, metavar="YAML", help="recipe file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. train.optim.epochs=1 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_cmd_ensemble)


def _cmd_cv(args: argparse.Namespace) -> int:
    from training.config import ConfigError, load_config
    from training.cv import run_cv, train_folds

    try:
        config = load_config(args.config, args.set)
        archs = [a for a in (args.architectures or "").split(",") if a]
        if args.fold is not None:
            if not 0 <= args.fold < config.data.folds:
                raise ValueError(f"--fold {args.fold} is not below data.folds")
            train_folds(
                config,
                architectures=archs,
                folds=[args.fold],
                resume=args.resume,
                progress=not args.quiet,
                say=_say,
            )
            print(f"trained fold {args.fold}; collect the folds with cv --resume")
            return 0
        if args.out is None or args.name is None:
            raise ValueError("cv needs --out and --name (unless --fold trains one fold)")
        result = run_cv(
            config,
            _export_options(args, ()),
            architectures=archs,
            resume=args.resume,
            progress=not args.quiet,
            say=_say,
        )
    except (ConfigError, ModelError, ValueError, OSError) as exc:
        return _error(exc)
    print(
        f"cross-validated {len(result.fold_aucs)} members; out-of-fold image AUC "
        f"{result.oof_auc:.4f}; cv folder {result.folder} (oof.csv, cv.json, oof-roc.png); "
        f"wrote {args.out}: {_members_line(result.card)}"
    )
    print(f"weights: {result.card.ensemble.weighting}")
    return 0


def _add_cv(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cv",
        help="k patient-grouped folds: train k members, calibrate out of fold, export",
        description=(
            "Train one member per fold (data.folds) and architecture, fit temperatures, "
            "weights and thresholds on the out-of-fold predictions, write the ensemble."
        ),
    )
    _config_arguments(parser)
    parser.add_argument(
        "--architectures",
        default="",
        metavar="A,B",
        help="architectures to cross-validate (default: the config's)",
    )
    parser.add_argument("--resume", action="store_true", help="keep finished folds")
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        metavar="K",
        help="train fold K only (folds side by side; then cv --resume collects them)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _model_folder_arguments(parser, required=False)
    parser.set_defaults(func=_cmd_cv)


def _quiet_node_logs() -> None:
    """The node's structured logs to stderr, warnings only: stdout carries the results."""
    from node.config import LoggingSettings
    from node.log import configure_logging

    configure_logging(LoggingSettings(level="WARNING", format="console"), stream=sys.stderr)


def _evaluation_samples(args: argparse.Namespace) -> tuple[list[Any], str]:
    from training.export import load_run, official_part, run_part

    if args.run is not None:
        if args.split not in ("val", "test"):
            raise ValueError("with --run, --split is val or test")
        run = load_run(args.run)
        root = run.data_config().root
        return run_part(run, args.split), f"the {args.split} part of {root} ({run.name}'s split)"
    if args.data is None:
        raise ValueError("give --data DIR or --run RUN")
    if args.split == "val":
        raise ValueError("--split val needs --run (the validation part is the run's)")
    samples = official_part(args.data, args.dataset, args.split)
    where = f"{args.data}" + (f" ({args.split} part)" if args.split != "all" else "")
    return samples, where


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from training.evaluate import evaluate_model

    _quiet_node_logs()

    try:
        samples, where = _evaluation_samples(args)
        report = evaluate_model(
            args.model,
            samples,
            data=where,
            plots=args.plots,
            out=args.out,
            record=args.record,
            resamples=args.bootstrap,
            seed=args.seed,
            progress=not args.json,
        )
    except (ModelError, ValueError, OSError) as exc:
        return _error(exc)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from training.evaluate import summary

        print(summary(report))
        if args.out is not None:
            print(f"report.json, summary.txt and plots in {args.out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="evaluate a model folder on labelled images, as the node would run it",
        description=(
            "AUC with bootstrap CI, sensitivity/specificity with Wilson intervals, members, "
            "disagreement, calibration, Grad-CAM localisation per lesion type."
        ),
    )
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help="model folder")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR", help="dataset folder")
    parser.add_argument(
        "--run",
        type=Path,
        default=None,
        metavar="RUN",
        help="a training run: evaluate on its own val or test part (--split)",
    )
    parser.add_argument(
        "--split",
        choices=("all", "train", "val", "test"),
        default="all",
        help="all of --data or its official train/test part; with --run: val or test",
    )
    parser.add_argument("--dataset", default="auto", help="dataset kind (default: detect)")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write report.json, summary, plots"
    )
    parser.add_argument("--plots", type=Path, default=None, metavar="DIR", help="write PNG plots")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument(
        "--record", action="store_true", help="write the metrics into the model card"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="CI resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.set_defaults(func=_cmd_evaluate)


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
    _add_train(sub)
    _add_cache(sub)
    _add_cv(sub)
    _add_export(sub)
    _add_ensemble(sub)
    _add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``breast-train``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
