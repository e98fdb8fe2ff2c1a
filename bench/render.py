"""Building a study's result objects: pictures from the display copy against decoding again.

The worker builds the TID 1500 SR, the Mammography CAD SR and one Grad-CAM Secondary
Capture per image after inference. The pictures need the image as a viewer shows it.
The node keeps a copy of it, scaled to ``outputs.sc_size``, from the decoding done for
inference (``display_size``), and reads the sources' headers only; the reference road,
what the node did before, reads every source with its pixels and decodes it again, then
resamples the heat map onto the full original grid. Prints milliseconds per four-view
study for both roads and their ratio, per transfer syntax, measured in the same run.

    python bench/render.py [--repeats 3] [--model models/demo]

Studies: the detector-size synthetic studies of ``bench/e2e.py`` (var/bench/e2e/, written
there on first use).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import torch

from node.config import Settings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.log import configure_logging
from node.outputs import build_outputs
from node.results import StudyResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from e2e import make_studies  # noqa: E402  (the same studies as the end-to-end bench)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: highdicom loads its tables on first use
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def infer(engine: InferenceEngine, files: list[Path]) -> StudyResult:
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    study = StudyInput(
        str(headers[0].StudyInstanceUID),
        tuple(ImageInput(f, str(h.SOPInstanceUID)) for f, h in zip(files, headers, strict=True)),
    )
    return engine.infer_studies([study])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    args = parser.parse_args(argv)

    settings = Settings.model_validate({"inference": {"device": "cpu"}})
    configure_logging(settings.logging)  # the node's log lines to stderr, the table to stdout
    outputs = settings.outputs
    plain = InferenceEngine.load(args.model, settings.inference)
    keeping = InferenceEngine.load(args.model, settings.inference, display_size=outputs.sc_size)
    print(
        f"# bench/render: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; objects "
        f"{', '.join(outputs.objects)}, sc_size {outputs.sc_size}; median of {args.repeats}"
    )
    print()
    print("| syntax | decode again ms | display copy ms | speed-up |")
    print("|---|---:|---:|---:|")
    for syntax in ("explicit", "j2k"):
        files = list(make_studies(syntax, "full", 1)[0].files)
        before, after = infer(plain, files), infer(keeping, files)

        def decode_again(result: StudyResult = before, paths: list[Path] = files) -> object:
            sources = [pydicom.dcmread(f) for f in paths]
            return build_outputs(result, sources, outputs, revision=1)

        def from_display(result: StudyResult = after, paths: list[Path] = files) -> object:
            sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in paths]
            return build_outputs(result, sources, outputs, revision=1)

        old = median_ms(decode_again, args.repeats)
        new = median_ms(from_display, args.repeats)
        print(f"| {syntax} | {old:,.0f} | {new:,.0f} | {old / new:.2f}x |".replace(",", " "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
