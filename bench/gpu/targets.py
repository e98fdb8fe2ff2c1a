"""The GPU targets as ratios, from the JSON that bench/inference.py and bench/e2e.py wrote.

    python bench/gpu/targets.py var/gpu/inference.json var/gpu/e2e.json

Targets (H100/H200-class GPU):

* the five-member ensemble's forward pass at 1024 x 512 in bf16: at least 400 images/s
  (the ``ensemble`` row of bench/inference.py, its best batch);
* the five-member ensemble with flip TTA and Grad-CAM: under 1 s of GPU compute per
  four-view study (the engine's ``inference_s`` + ``cam_s`` of each warm study of the
  ``full`` model in bench/e2e.py's latency section).

A ratio above 1 meets the target. A missing input prints "unmeasured", never a number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

FORWARD_IMAGES_PER_S = 400.0
STUDY_COMPUTE_S = 1.0


def forward_row(inference: dict[str, Any]) -> tuple[str, str]:
    rows = [
        r for r in inference.get("rows", []) if r["name"] == "ensemble" and r["precision"] == "bf16"
    ]
    if not rows or list(inference.get("input", [])) != [1024, 512]:
        return "unmeasured", "-"
    best = max(rows, key=lambda r: r["images_per_s"])
    measured = f"{best['images_per_s']:.0f} images/s (batch {best['batch']})"
    return measured, f"{best['images_per_s'] / FORWARD_IMAGES_PER_S:.2f}x"


def study_row(e2e: dict[str, Any]) -> tuple[str, str]:
    runs = [r for r in e2e.get("latency", []) if r.get("model") == "full"]
    seconds = [
        float(t["timings"].get("inference_s", 0.0)) + float(t["timings"].get("cam_s", 0.0))
        for run in runs
        for t in run.get("timelines", [])
        if "cold" not in str(t.get("syntax", "")) and t.get("state") == "done"
    ]
    if not seconds or not all(r.get("device", "").startswith("cuda") for r in runs):
        return "unmeasured", "-"
    mean = statistics.fmean(seconds)
    measured = f"{mean:.3f} s per study ({len(seconds)} warm studies)"
    return measured, f"{STUDY_COMPUTE_S / mean:.2f}x"


def _load(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inference", type=Path, nargs="?")
    parser.add_argument("e2e", type=Path, nargs="?")
    args = parser.parse_args(argv)
    inference, e2e = _load(args.inference), _load(args.e2e)
    device = inference.get("device") or (e2e.get("machine") or {}).get("gpu") or "unknown"
    print(f"# GPU targets on {device}")
    print("| target | measured | ratio (> 1 meets it) |")
    print("|---|---|---:|")
    measured, ratio = forward_row(inference)
    print(f"| five-member forward, 1024 x 512, bf16: >= 400 images/s | {measured} | {ratio} |")
    measured, ratio = study_row(e2e)
    print(f"| five members + flip TTA + Grad-CAM: < 1 s GPU per study | {measured} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
