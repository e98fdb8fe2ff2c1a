"""Inference throughput and latency per architecture and for the ensemble.

Prints one table: for every member architecture (random weights, created
exactly as the node creates them) and for the ensemble of all of them, the
images per second at a given batch size, the latency of a four-image study,
the forward FLOPs per image, the achieved fraction of the device's peak, and
ratios against the plain CNN measured in the same run.

    python bench/inference.py                 # CPU: batch 4, 2 repeats (a few minutes on 2 cores)
    python bench/inference.py --device cuda   # GPU: fp32 and bf16, batch 1/4/16

Model forward passes only (no decoding, TTA or Grad-CAM); those stages are
timed per study in the engine's results.

A second table, measured in the same run, times optimisations one at a time on
one or two members (``--opt-arch``, default efficientnet_b0 and resnet50) at
batch 4, each against its reference: channels-last against contiguous, bf16
autocast against fp32, ``torch.compile`` against eager (only with ``--compile``:
compiling takes minutes on a CPU and needs a C++ compiler), and Grad-CAM in the
same pass as the prediction (what the engine does: ``forward_features`` without
grad, ``forward_head`` with grad) against the textbook way (a second forward
with grad through the whole network, then backward to the last feature map).

    python bench/inference.py --opt-arch efficientnet_b0 --compile
    python bench/inference.py --no-optimisations
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from node.inference.explain import grad_cam
from node.models.registry import ARCHITECTURES, create_model

# Dense peak FLOP/s (no sparsity) by device name substring: (fp32, bf16).
# fp32 on Hopper/Ampere counts TF32 tensor cores off (CUDA cores only).
PEAK_FLOPS: dict[str, tuple[float, float]] = {
    "H200": (67e12, 989e12),
    "H100 SXM": (67e12, 989e12),
    "H100 PCIe": (51e12, 756e12),
    "H100": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
    "L40S": (91.6e12, 362e12),
    "L4": (30.3e12, 121e12),
    "A10": (31.2e12, 125e12),
    "T4": (8.1e12, 65e12),
    "RTX 4090": (82.6e12, 165e12),
}

REFERENCE = "breast_cnn_small"
#: The full ensemble of docs/benchmarks.md and bench/e2e.py.
FULL_ENSEMBLE = ("efficientnet_b0", "efficientnet_b1", "resnet50", "densenet121", "convnext_tiny")


@dataclass(frozen=True)
class Row:
    name: str
    precision: str
    batch: int
    images_per_s: float
    study_latency_s: float
    gflops_per_image: float
    peak_fraction: float | None


def flops_per_image(model: torch.nn.Module, height: int, width: int, device: torch.device) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 1, height, width, device=device))
    return float(counter.get_total_flops())


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warm_up: bool) -> float:
    """Median seconds of ``repeats`` calls, after one untimed call if ``warm_up``."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_for(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (fp32, bf16) in PEAK_FLOPS.items():
        if key in name:
            return bf16 if precision == "bf16" else fp32
    return None


def measure(
    name: str,
    models: list[torch.nn.Module],
    flops: float,
    *,
    batch: int,
    precision: str,
    height: int,
    width: int,
    device: torch.device,
    repeats: int,
) -> Row:
    def run(n: int) -> Callable[[], object]:
        x = torch.rand(n, 1, height, width, device=device).contiguous(
            memory_format=torch.channels_last
        )

        def call() -> object:
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                return [m(x) for m in models]

        return call

    # the ensemble's members are warm already from their own rows
    warm_up = name != "ensemble"
    seconds = timed(run(batch), device, repeats, warm_up)
    study = timed(run(4), device, repeats, warm_up) if batch != 4 else seconds
    rate = batch / seconds
    peak = peak_for(device, precision)
    return Row(
        name, precision, batch, rate, study, flops / 1e9, (flops * rate / peak) if peak else None
    )


# --------------------------------------------------------------------------- #
# Optimisations, one at a time, each against its reference
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OptRow:
    model: str
    variant: str
    reference: str
    seconds: float
    reference_seconds: float


def optimisation_rows(
    arch: str,
    *,
    batch: int,
    height: int,
    width: int,
    device: torch.device,
    repeats: int,
    compile_models: bool,
) -> list[OptRow]:
    """Seconds per batch of each variant of ``arch`` and of its reference, same run."""
    torch.manual_seed(0)
    base = create_model(arch, num_classes=3, in_chans=1).to(device).eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    x = torch.rand(batch, 1, height, width, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    contiguous = base
    channels_last = copy.deepcopy(base).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(model: torch.nn.Module, inputs: torch.Tensor, bf16: bool = False) -> object:
        def call() -> object:
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
            ):
                return model(inputs)

        return call

    def measure_one(fn: Callable[[], object]) -> float:
        return timed(fn, device, repeats, warm_up=True)

    rows: list[OptRow] = []
    t_contiguous = measure_one(forward(contiguous, x))
    t_cl = measure_one(forward(channels_last, x_cl))
    rows.append(OptRow(arch, "fp32, channels-last", "fp32, contiguous", t_cl, t_contiguous))
    t_bf16 = measure_one(forward(channels_last, x_cl, bf16=True))
    rows.append(OptRow(arch, "bf16 autocast, channels-last", "fp32, channels-last", t_bf16, t_cl))
    if compile_models:
        compiled = torch.compile(channels_last)
        start = time.perf_counter()
        forward(compiled, x_cl)()  # compiles
        compile_s = time.perf_counter() - start
        t_compiled = measure_one(forward(compiled, x_cl))
        rows.append(
            OptRow(
                arch,
                f"torch.compile, fp32, channels-last (compiling took {compile_s:.0f} s)",
                "eager, fp32, channels-last",
                t_compiled,
                t_cl,
            )
        )

    # Grad-CAM for one class, with the prediction
    model = channels_last

    def same_pass() -> object:
        with torch.no_grad():
            features = model.forward_features(x_cl)  # type: ignore[operator]
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(features)  # type: ignore[operator]
        return grad_cam(features, logits[:, 0])

    textbook = copy.deepcopy(model)
    for parameter in textbook.parameters():
        parameter.requires_grad_(True)  # as a model fresh from timm: the whole graph is recorded

    def separate_pass() -> object:
        with torch.inference_mode():
            textbook(x_cl)  # the prediction
        with torch.enable_grad():
            features = textbook.forward_features(x_cl)  # type: ignore[operator]
            logits = textbook.forward_head(features)  # type: ignore[operator]
            return grad_cam(features, logits[:, 0])

    t_same = measure_one(same_pass)
    t_separate = measure_one(separate_pass)
    rows.append(
        OptRow(
            arch,
            "prediction + Grad-CAM, same pass (features no grad, head with grad)",
            "prediction, then a forward with grad + backward to the feature map",
            t_same,
            t_separate,
        )
    )
    rows.append(
        OptRow(
            arch,
            "prediction only (inference forward), for scale",
            "prediction + Grad-CAM, same pass",
            t_cl,
            t_same,
        )
    )
    return rows


def print_optimisations(rows: list[OptRow], batch: int) -> None:
    print()
    print(f"Optimisations (batch {batch}; speed = reference time / variant time, > 1 is faster):")
    print("| model | variant | reference | batch ms | reference ms | speed vs reference |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.model} | {r.variant} | {r.reference} | {1000 * r.seconds:,.0f} "
            f"| {1000 * r.reference_seconds:,.0f} | {r.reference_seconds / r.seconds:.2f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per row (default: CPU 2, CUDA 10)"
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="default: CPU 4, CUDA 1 4 16"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch default)"
    )
    parser.add_argument(
        "--arch",
        nargs="+",
        default=[REFERENCE, *FULL_ENSEMBLE],
        choices=ARCHITECTURES,
        help="architectures measured; the ensemble row is all of them but the reference "
        "(default: the five-member full ensemble)",
    )
    parser.add_argument(
        "--opt-arch",
        nargs="+",
        default=["efficientnet_b0", "resnet50"],
        choices=ARCHITECTURES,
        help="members for the optimisations table",
    )
    parser.add_argument("--opt-batch", type=int, default=4, help="batch of the optimisations table")
    parser.add_argument(
        "--no-optimisations", action="store_true", help="skip the optimisations table"
    )
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile rows (slow to compile on a CPU)"
    )
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 1
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (10 if use_cuda else 2)
    batches = args.batches or ([1, 4, 16] if use_cuda else [4])
    precisions = ["fp32", "bf16"] if use_cuda else ["fp32"]
    torch.manual_seed(0)
    if use_cuda:
        torch.backends.cudnn.benchmark = True

    names = [REFERENCE, *[a for a in args.arch if a != REFERENCE]]
    models = {
        n: create_model(n, num_classes=3, in_chans=1)
        .to(device)
        .to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for n in names
    }
    flops = {n: flops_per_image(m, args.height, args.width, device) for n, m in models.items()}
    members = [n for n in names if n != REFERENCE] or names

    where = (
        torch.cuda.get_device_name(device)
        if use_cuda
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"# inference benchmark: {where}, torch {torch.__version__}, "
        f"input {args.height}x{args.width}, "
        f"{repeats} timed repeats; ensemble = {' + '.join(members)}"
    )
    rows: list[Row] = []
    size = {"height": args.height, "width": args.width, "device": device, "repeats": repeats}
    for precision in precisions:
        for batch in batches:
            for n in names:
                rows.append(
                    measure(n, [models[n]], flops[n], batch=batch, precision=precision, **size)
                )
                print(f"  measured {n} {precision} batch {batch}", file=sys.stderr, flush=True)
            together = [models[n] for n in members]
            total = sum(flops[n] for n in members)
            row = measure("ensemble", together, total, batch=batch, precision=precision, **size)
            rows.append(row)

    reference = {(r.precision, r.batch): r for r in rows if r.name == REFERENCE}
    fp32_rows = {(r.name, r.batch): r for r in rows if r.precision == "fp32"}
    header = (
        f"| {'model':<16} | prec | batch | images/s | study (4) ms | GFLOP/img | % peak "
        f"| time vs {REFERENCE} | speed vs fp32 |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        ref = reference[(r.precision, r.batch)]
        base = fp32_rows.get((r.name, r.batch))
        peak = f"{100 * r.peak_fraction:5.1f}" if r.peak_fraction is not None else "  n/a"
        vs_fp32 = f"{r.images_per_s / base.images_per_s:.2f}x" if base else "-"
        print(
            f"| {r.name:<16} | {r.precision} | {r.batch:>5} | {r.images_per_s:8.2f} "
            f"| {1000 * r.study_latency_s:12.1f} | {r.gflops_per_image:9.2f} | {peak:>6} "
            f"| {ref.images_per_s / r.images_per_s:23.1f}x | {vs_fp32:>13} |"
        )
    if not use_cuda:
        print("% peak: n/a on CPU (no reliable peak figure); GPU rows need a CUDA device.")
    opt_rows: list[OptRow] = []
    if not args.no_optimisations:
        if args.compile and device.type == "cpu" and shutil.which("gcc") is None:
            print("torch.compile rows skipped: no C++ compiler (gcc) for the CPU backend")
            args.compile = False
        for arch in args.opt_arch:
            opt_rows.extend(
                optimisation_rows(
                    arch,
                    batch=args.opt_batch,
                    height=args.height,
                    width=args.width,
                    device=device,
                    repeats=repeats,
                    compile_models=args.compile,
                )
            )
            print(f"  measured optimisations of {arch}", file=sys.stderr, flush=True)
        print_optimisations(opt_rows, args.opt_batch)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        dump = {
            "device": where,
            "torch": torch.__version__,
            "input": [args.height, args.width],
            "members": members,
            "rows": [asdict(r) for r in rows],
            "optimisations": [asdict(r) for r in opt_rows],
        }
        args.json.write_text(json.dumps(dump, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
