"""The pictures of docs/outputs.md: what the node's results look like, made by the node.

Writes synthetic four-view studies, infers them with the shipped demo ensemble, builds
every result object with the node's own builders (``deploy/ohif/showcase.py``: a
positive study with a mark on its lesion and a negative one), and writes to
``docs/images/``:

* ``sc-positive.png``, ``sc-negative.png``: the heat-map secondary capture of the marked
  image of the positive study and of the most salient image of the negative one;
* ``mgcad-positive.txt``, ``mgcad-negative.txt``: ``dsrdump +Pl`` of both studies'
  Mammography CAD SR (dcmtk);
* ``ohif-positive-report.png``, ``ohif-negative-report.png``: the stock OHIF viewer
  (``make ohif``) with each study's TID 1500 / TID 2000 report opened, in headless
  Debian chromium (``deploy/ohif/viewer.py``).

    python bench/output_pictures.py [--out docs/images] [--work var/pictures]

About a minute on two cores. Needs dcmtk, orthanc, orthanc-dicomweb and chromium
(``make system-deps``) and the viewer (``make ohif``).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.ohif.showcase import Case, showcase  # noqa: E402
from deploy.ohif.viewer import missing, ohif_viewer  # noqa: E402


def _sc_png(case: Case, sop_uid: str, path: Path) -> None:
    (sc,) = [
        o.dataset for o in case.objects if o.kind == "sc" and o.source_sop_instance_uid == sop_uid
    ]
    Image.fromarray(np.asarray(sc.pixel_array, dtype=np.uint8)).save(path, optimize=True)


def _dsrdump(case: Case, path: Path) -> None:
    (cad,) = [f for o, f in zip(case.objects, case.object_files, strict=True) if o.kind == "mgcad"]
    done = subprocess.run(["dsrdump", "+Pl", str(cad)], capture_output=True, text=True, check=True)
    # the tree, without the header lines that name the synthetic patient and the UIDs
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<CONTAINER"))
    path.write_text("\n".join(lines[start:]) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "pictures")
    args = parser.parse_args()
    why = missing()
    if why is not None or shutil.which("dsrdump") is None:
        print(f"cannot run: {why or 'dcmtk (dsrdump) is not installed'}", file=sys.stderr)
        return 2
    shutil.rmtree(args.work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = showcase(args.work)
    image, mark, box = cases.lesion
    _sc_png(cases.positive, image.sop_instance_uid, args.out / "sc-positive.png")
    salient = max(
        cases.negative.result.images, key=lambda i: (len(i.regions), i.probability)
    ).sop_instance_uid
    _sc_png(cases.negative, salient, args.out / "sc-negative.png")
    _dsrdump(cases.positive, args.out / "mgcad-positive.txt")
    _dsrdump(cases.negative, args.out / "mgcad-negative.txt")
    with ohif_viewer([*cases.positive.files(), *cases.negative.files()]) as viewer:
        for name, case in (("positive", cases.positive), ("negative", cases.negative)):
            viewer.open_study(case.result.study_uid)
            report = viewer.open_sr(cases.settings.sr_series_description)
            shot = Image.open(io.BytesIO(viewer.screenshot())).convert("RGB")
            shot.save(args.out / f"ohif-{name}-report.png", optimize=True)
            print(
                f"OHIF, {name} study: report opened, errors {report.errors}, "
                f"outlines {len(report.outlines)}"
            )
    result = cases.positive.result
    print(
        f"positive study: score {result.score:.3f} (threshold {result.threshold:.3f}); "
        f"mark on {image.laterality} {image.view}: {mark.score:.3f} (image "
        f"{image.probability:.3f}), lesion box {box}"
    )
    result = cases.negative.result
    print(
        f"negative study: score {result.score:.3f}, regions "
        f"{[len(i.regions) for i in result.images]}"
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
