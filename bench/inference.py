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
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

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
    parser.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
