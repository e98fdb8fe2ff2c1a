"""A contact sheet: a few generated studies on one PNG, lesions outlined.

Mammography studies are laid out as a reader hangs them (R-CC, L-CC, R-MLO,
L-MLO), ultrasound studies as their two probe orientations. Malignant lesions
are outlined in red, benign ones in green.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.pixels.processing import apply_voi_lut

from training.synthetic.labels import LABELS_FILE, read_labels
from training.synthetic.options import SynthImage

__all__ = ["display_pixels", "make_contact_sheet"]

_HANGING = {
    ("R", "CC"): 0,
    ("L", "CC"): 1,
    ("R", "MLO"): 2,
    ("L", "MLO"): 3,
    ("R", "TRANS"): 0,
    ("R", "SAG"): 1,
    ("L", "TRANS"): 0,
    ("L", "SAG"): 1,
}
_COLOURS = {"malignant": "#ff3030", "benign": "#30e030"}


def display_pixels(path: Path) -> NDArray[np.float32]:
    """The image at ``path`` as a viewer shows it: first VOI window, 0 black to 1 white."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if "NumberOfFrames" in ds and int(ds.NumberOfFrames) > 1:
        pixels = pixels[len(pixels) // 2]
    shown = apply_voi_lut(pixels, ds, index=0).astype(np.float32)
    low, high = float(shown.min()), float(shown.max())
    shown = (shown - low) / max(high - low, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        shown = 1.0 - shown
    return shown


def _pick(images: list[SynthImage], studies: int) -> list[list[SynthImage]]:
    """Up to ``studies`` studies, cycling malignant, benign, normal."""
    by_study: dict[str, list[SynthImage]] = defaultdict(list)
    for img in images:
        by_study[img.study_uid].append(img)
    queues: dict[str, list[list[SynthImage]]] = defaultdict(list)
    for rows in by_study.values():
        label = next((r.label for r in rows if r.label != "normal"), "normal")
        queues[label].append(rows)
    chosen: list[list[SynthImage]] = []
    while len(chosen) < studies and any(queues.values()):
        for label in ("malignant", "benign", "normal"):
            if queues[label] and len(chosen) < studies:
                chosen.append(queues[label].pop(0))
    return chosen


def make_contact_sheet(data: Sequence[Path], out: Path, studies: int = 3) -> Path:
    """Draw up to ``studies`` studies from each folder in ``data`` into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[Path, list[SynthImage]]] = []
    for folder in data:
        for study in _pick(read_labels(folder / LABELS_FILE), studies):
            rows.append((folder, sorted(study, key=lambda i: _HANGING[(i.laterality, i.view)])))
    if not rows:
        raise ValueError("no studies found in the given folders")
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.0, 2.55 * len(rows)), squeeze=False)
    for r, (folder, study) in enumerate(rows):
        for c in range(4):
            axes[r][c].axis("off")
        for c, img in enumerate(study):
            ax = axes[r][c]
            ax.imshow(display_pixels(folder / img.path), cmap="gray", vmin=0, vmax=1)
            if img.mask_path is not None:
                mask = np.asarray(Image.open(folder / img.mask_path)) > 0
                ax.contour(
                    mask, levels=[0.5], colors=_COLOURS.get(img.label, "#ffff00"), linewidths=1.4
                )
            title = f"{img.laterality}-{img.view} {img.label}"
            if img.lesion_type != "none":
                title += f"\n{img.lesion_type.replace('_', ' ')}"
            elif c == 0:
                title += f"\nACR density {img.density}" if img.modality == "MG" else ""
            ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    buffer.seek(0)
    # a 256-colour palette keeps the file small enough to commit
    sheet = Image.open(buffer).convert("RGB").quantize(colors=192, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG", optimize=True)
    return out
