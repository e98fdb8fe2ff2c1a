"""A decompression bomb against the node's decoding step, with and without the size check.

Writes one For Presentation mammogram whose pixel data is a lossless JPEG 2000 stream of
``--side`` x ``--side`` 12-bit zeros (a few KB on disk), then, in a fresh process each
time (as a decoding process of ``inference.decode_processes`` is), runs the node's
``prepare_image`` on it and prints the process's peak resident memory before and after,
the seconds it took and what came back:

    python bench/bomb.py                 # 16384 x 16384: 512 MiB declared
    python bench/bomb.py --side 32768

``limit: none`` is the node as it was before ``inference.max_image_bytes``;
``limit: 256 MiB`` is the default.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
from pathlib import Path
def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from node.imaging.preprocess import PreprocessOptions
from node.inference.engine import prepare_image
import torch  # as a decoding process has it loaded
before = peak()
limit = None if sys.argv[2] == "none" else int(sys.argv[2])
start = time.perf_counter()
outcome, _ = prepare_image(
    Path(sys.argv[1]), options=PreprocessOptions(), display_size=1024, max_image_bytes=limit
)
print(json.dumps({"before": before, "after": peak(), "seconds": time.perf_counter() - start,
                  "refused": str(outcome) if isinstance(outcome, Exception) else ""}))
"""


def write_bomb(path: Path, side: int) -> int:
    import numpy as np
    import openjpeg
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from tests.helpers.images import breast_phantom, mg_dataset

    ds = mg_dataset(breast_phantom(64, 64))
    stream = openjpeg.encode(np.zeros((side, side), np.uint16), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.Rows = ds.Columns = side
    ds.PixelData = encapsulate([bytes(stream)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.dcm"
        size = write_bomb(path, args.side)
        print(
            f"{platform.processor() or platform.machine()}, {args.side} x {args.side}: "
            f"{size} bytes on disk, {args.side**2 * 2 / 2**20:.0f} MiB declared\n"
        )
        print("| limit | peak RSS before / after (MiB) | seconds | outcome |")
        print("|---|---|---|---|")
        for limit in ("none", str(256 * 2**20)):
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(path), limit],
                capture_output=True, text=True, cwd=ROOT, check=True,
            )  # fmt: skip
            row = json.loads(done.stdout.splitlines()[-1])
            shown = "none" if limit == "none" else f"{int(limit) // 2**20} MiB"
            print(f"| {shown} | {row['before']:.0f} / {row['after']:.0f} | "
                  f"{row['seconds']:.2f} | {row['refused'] or 'decoded'} |")  # fmt: skip


if __name__ == "__main__":
    main()
