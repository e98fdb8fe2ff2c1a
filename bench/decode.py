"""Decoding and preprocessing of detector-size mammograms, per transfer syntax.

Prints tables measured in one run:

1. per transfer syntax and photometric interpretation, milliseconds per image
   for the reference road (a copy, below, of the straightforward implementation
   the node used before: ``pydicom.dcmread`` + ``ds.pixel_array`` + Modality/VOI
   in ``float64`` on the whole image + the node's crop and resize) and for the
   node's ``preprocess_dataset(read_dataset(path))``, their ratio, the peak
   extra memory of each (``tracemalloc``: NumPy and pydicom allocations; torch's
   resize buffers are not traced) and the largest difference between their
   model inputs;
2. where the time goes, stage by stage, on both roads;
3. dcmtk decoding the same files (subprocess wall time, process start included),
   as an outside reference, and JPEG 2000 reduced-resolution decoding (Pillow,
   ``reduce=1``) for information only: the node never uses it, since serving
   would then differ from training.

    python bench/decode.py                    # 5 timed runs per row, a few minutes
    python bench/decode.py --repeats 9 --syntaxes j2k rle

Images: 3328 x 2560, 12 bits stored in 16, with two VOI windows, written once by
the synthetic generator under var/bench/decode/ (about 3 minutes the first time).
"""

from __future__ import annotations

import argparse
import gc
import io
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from node.imaging import breast
from node.imaging import pixels as px
from node.imaging import preprocess as pp
from node.imaging.breast import breast_box, chest_wall_side
from node.imaging.dataset import laterality_from_tags, modality_of, read_dataset, view_of
from node.imaging.geometry import Geometry
from node.imaging.preprocess import Preprocessed, PreprocessOptions, preprocess_dataset
from node.imaging.transforms import resize_and_pad

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "var" / "bench" / "decode"
SYNTAXES = ["explicit", "j2k", "jpegls", "jpeg-lossless", "rle"]
PHOTOMETRICS = ["monochrome2", "monochrome1"]
# one image per data set: a left CC (no flip) and a right MLO (flipped)
IMAGE = {"monochrome2": "L-CC.dcm", "monochrome1": "R-MLO.dcm"}
SEED = 7
# dcmtk's decompressors per syntax (none for JPEG 2000 in the free toolkit)
DCMTK = {"jpegls": "dcmdjpls", "jpeg-lossless": "dcmdjpeg", "rle": "dcmdrle"}


# --------------------------------------------------------------------------- #
# The reference: the straightforward implementation, as it was
# --------------------------------------------------------------------------- #
def reference_unit_range(ds: Dataset, arr: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """``to_unit_range`` before the table: Modality and VOI in float64 on the whole image."""
    values: npt.NDArray[Any] = arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds or slope != 1.0 or intercept != 0.0:
        values = apply_modality_lut(values, ds)
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        windowed = apply_voi_lut(values, ds, index=0)
        probe = np.array([-(2**31), 2**31 - 1], dtype=np.int64)
        with np.errstate(over="ignore"):
            ends = apply_voi_lut(probe, ds, index=0).astype(np.float64)
        low, high = float(ends.min()), float(ends.max())
        result = windowed.astype(np.float64)
    else:
        result = values.astype(np.float64)
        low, high = float(result.min()), float(result.max())
    if high <= low:
        scaled = np.zeros(result.shape, dtype=np.float32)
    else:
        scaled = np.clip((result - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def reference_crop_resize(
    img: npt.NDArray[np.float32], laterality: Any, source: str, opts: PreprocessOptions
) -> Preprocessed:
    """``preprocess_array`` before the change (mammography): box and side each find the mask."""
    if not np.isfinite(img).all():
        raise ValueError("non-finite")
    box = breast_box(img) if opts.crop else (0, 0, img.shape[0], img.shape[1])
    side = chest_wall_side(img)
    if laterality is None and side is not None:
        laterality, source = ("L" if side == "left" else "R"), "image"
    flipped = (side == "right" if side is not None else laterality == "R") and opts.canonical_flip
    top, left, bottom, right = box
    region = img[top:bottom, left:right]
    if flipped:
        region = region[:, ::-1]
    out, resized, pad = resize_and_pad(region, opts.height, opts.width)
    geometry = Geometry(img.shape, box, flipped, resized, pad, (opts.height, opts.width))  # type: ignore[arg-type]
    return Preprocessed(out, geometry, "MG", laterality or "U", source, "")


def reference(path: Path, opts: PreprocessOptions) -> Preprocessed:
    """The whole reference road for one file."""
    ds = pydicom.dcmread(path)
    unit = reference_unit_range(ds, ds.pixel_array)
    laterality, source = laterality_from_tags(ds)
    result = reference_crop_resize(unit, laterality, source, opts)
    return replace(result, modality=modality_of(ds), view=view_of(ds))


def node(path: Path, opts: PreprocessOptions) -> Preprocessed:
    return preprocess_dataset(read_dataset(path), opts)


# --------------------------------------------------------------------------- #
# Stages
# --------------------------------------------------------------------------- #
def reference_stages(path: Path, opts: PreprocessOptions) -> dict[str, float]:
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    ds = pydicom.dcmread(path)
    lap("read")
    arr = ds.pixel_array
    lap("decode")
    unit = reference_unit_range(ds, arr)
    lap("to [0, 1]")
    box, side = breast_box(unit), chest_wall_side(unit)
    lap("breast box + side")
    region = unit[box[0] : box[2], box[1] : box[3]]
    if side == "right":
        region = region[:, ::-1]
    resize_and_pad(region, opts.height, opts.width)
    lap("crop + resize")
    return times


def node_stages(path: Path, opts: PreprocessOptions) -> dict[str, float]:
    """The steps of ``preprocess_dataset`` one by one (the same private helpers it calls)."""
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    ds = read_dataset(path)
    lap("read")
    stored = px.decode_stored(ds, stored_bits_only=False)
    lap("decode")
    table = px.unit_table(ds, stored)
    assert table is not None
    pixels = pp._TablePixels(stored, table)
    lap("to [0, 1]")
    stride = breast.mask_stride(pixels.shape)
    mask = breast.otsu_mask(pixels.strided(stride))
    box = breast.box_from_mask(mask, stride, pixels.shape)
    side = breast.side_from_mask(mask)
    lap("breast box + side")
    resize_and_pad(pixels.region(box, side == "right"), opts.height, opts.width)
    lap("crop + resize")
    return times


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #
def fmt(ms: float) -> str:
    """Milliseconds with a space between thousands; ``-`` for none."""
    return "-" if ms != ms else f"{ms:,.0f}".replace(",", " ")


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


# Rounds run before timing. The first calls in a fresh process are slow (the first
# explicit-VR image: 32, 22, 15, then 13 ms); with a single warm-up round, the first row
# of the table read 12 or 21 ms from one run to the next.
WARM_UP_ROUNDS = 3


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, the functions taking turns (so drift hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(WARM_UP_ROUNDS):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def peak_mb(fn: Callable[[], object]) -> float:
    """Peak traced allocation during ``fn`` beyond what was allocated before, MB."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def ensure_data(syntaxes: list[str]) -> dict[tuple[str, str], Path]:
    from training.synthetic import SynthOptions, write_studies

    paths = {}
    for syntax in syntaxes:
        for photometric in PHOTOMETRICS:
            folder = DATA / f"{syntax}-{photometric}"
            path = folder / "study-0001" / IMAGE[photometric]
            if not path.exists():
                print(f"  writing {folder.relative_to(ROOT)} ...", file=sys.stderr, flush=True)
                options = SynthOptions(
                    size="full",
                    transfer_syntax=syntax,
                    photometric=photometric,  # type: ignore[arg-type]
                )
                write_studies(folder, studies=1, seed=SEED, options=options)
            paths[(syntax, photometric)] = path
    return paths


def tool_ms(args: list[str], repeats: int) -> float:
    def call() -> None:
        subprocess.run(args, check=True, capture_output=True)

    return median_ms(call, repeats)


def pillow_reduced_ms(path: Path, repeats: int) -> float:
    from PIL import Image
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))

    def call() -> None:
        with Image.open(io.BytesIO(frame)) as im:
            im.reduce = 1  # type: ignore[attr-defined]
            im.load()

    return median_ms(call, repeats)


def measure_file(path: Path, opts: PreprocessOptions, repeats: int) -> str:
    """The cells of one row of the main table, after checking both roads agree."""
    size = path.stat().st_size / 1e6
    want, got = reference(path, opts), node(path, opts)
    if want.geometry != got.geometry:
        raise SystemExit(f"{path}: geometry differs: {want.geometry} != {got.geometry}")
    diff = float(np.abs(want.image - got.image).max())
    ms = interleaved(
        {"reference": lambda: reference(path, opts), "node": lambda: node(path, opts)}, repeats
    )
    ref_peak = peak_mb(lambda: reference(path, opts))
    node_peak = peak_mb(lambda: node(path, opts))
    return (
        f"{size:.1f} | {fmt(ms['reference'])} | {fmt(ms['node'])} "
        f"| {ms['reference'] / ms['node']:.2f}x | {ref_peak:.0f} | {node_peak:.0f} | {diff:.1e} |"
    )


def measure_stages(
    path: Path, opts: PreprocessOptions, repeats: int
) -> dict[str, dict[str, float]]:
    per: dict[str, dict[str, float]] = {}
    for road, fn in (("reference", reference_stages), ("node", node_stages)):
        runs = [fn(path, opts) for _ in range(repeats)]
        per[road] = {k: 1000 * statistics.median(r[k] for r in runs) for k in runs[0]}
    return per


def measure_tools(
    syntax: str, path: Path, opts: PreprocessOptions, repeats: int
) -> list[tuple[str, float, float]]:
    """``(tool, ms, ms / node ms)`` rows for one file, the node's own row last."""
    ours = median_ms(lambda: node(path, opts), repeats)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        tools: list[tuple[str, list[str]]] = []
        if syntax in DCMTK and shutil.which(DCMTK[syntax]):
            command = [DCMTK[syntax], str(path), f"{tmp}/out.dcm"]
            tools.append((f"dcmtk {DCMTK[syntax]} (decode to a file)", command))
        if shutil.which("dcm2pnm") and syntax != "j2k":
            command = ["dcm2pnm", "+Wi", "1", str(path), f"{tmp}/out.pgm"]
            tools.append(("dcmtk dcm2pnm +Wi 1 (decode, window, 8-bit PGM)", command))
        for name, command in tools:
            try:
                ms = tool_ms(command, repeats)
            except subprocess.CalledProcessError as exc:
                print(f"  {name} failed on {syntax}: {exc.stderr!r:.200}", file=sys.stderr)
                rows.append((f"{name}: cannot decode this syntax", float("nan"), float("nan")))
                continue
            rows.append((name, ms, ms / ours))
    if syntax == "j2k":
        ms = pillow_reduced_ms(path, repeats)
        rows.append(("Pillow J2K decode at half resolution (reduce=1), not used", ms, ms / ours))
    rows.append(("node preprocess_dataset (whole step)", ours, 1.0))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument("--syntaxes", nargs="+", default=SYNTAXES, choices=SYNTAXES)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--no-tools", action="store_true", help="skip the dcmtk and Pillow rows")
    args = parser.parse_args(argv)
    opts = PreprocessOptions(height=args.height, width=args.width)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    paths = ensure_data(args.syntaxes)
    print(
        f"# decode + preprocess benchmark: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, pydicom {pydicom.__version__}, "
        f"numpy {np.__version__}, torch {torch.__version__}; 3328x2560 12-bit -> "
        f"{args.height}x{args.width}; median of {args.repeats} runs"
    )

    header = (
        "| syntax | photometric | MB | reference ms | node ms | speed-up "
        "| reference peak MB | node peak MB | max abs diff |"
    )
    rows = []
    stages: dict[str, dict[str, dict[str, float]]] = {}
    for (syntax, photometric), path in paths.items():
        rows.append(f"| {syntax} | {photometric} | " + measure_file(path, opts, args.repeats))
        if photometric == "monochrome1":  # the flipped image: every stage runs
            stages[syntax] = measure_stages(path, opts, args.repeats)
        print(f"  measured {syntax} {photometric}", file=sys.stderr, flush=True)

    print()
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)

    print()
    print("Stages, ms (right MLO, MONOCHROME1; reference -> node):")
    names = ["read", "decode", "to [0, 1]", "breast box + side", "crop + resize"]
    print("| syntax | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for syntax, per in stages.items():
        cells = [f"{fmt(per['reference'][n])} -> {fmt(per['node'][n])}" for n in names]
        print(f"| {syntax} | " + " | ".join(cells) + " |")

    if not args.no_tools:
        print()
        print("Outside reference and information (monochrome2 files):")
        print("| syntax | tool | ms | time vs node |")
        print("|---|---|---:|---:|")
        for syntax in args.syntaxes:
            for name, ms, ratio in measure_tools(
                syntax, paths[(syntax, "monochrome2")], opts, args.repeats
            ):
                shown = "-" if ratio != ratio else f"{ratio:.2f}x"
                print(f"| {syntax} | {name} | {fmt(ms)} | {shown} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
