"""BUSI (breast ultrasound images, Al-Dhabyani et al. 2020).

``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (k).png`` with masks
``<class> (k)_mask.png`` and for some images ``_mask_1.png``, ``_mask_2.png``:
all of an image's masks are merged. BUSI has no patient ids and contains
duplicate images: images whose 32 x 32 thumbnails are identical are kept once;
duplicates filed under different classes are dropped altogether. Each kept
image is its own group for splitting.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from training.datasets.sample import Label, Sample

__all__ = ["image_fingerprint", "read_busi"]

_CLASSES: tuple[Label, ...] = ("benign", "malignant", "normal")
_IMAGE = re.compile(r"^(?P<stem>.+ \(\d+\))\.png$", re.IGNORECASE)


def image_fingerprint(path: Path) -> str:
    """A hash of the image's 32 x 32 grey thumbnail (coarsely quantised): equal for copies."""
    from PIL import Image

    with Image.open(path) as img:
        thumb = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
    return hashlib.sha1((thumb // 16).astype(np.uint8).tobytes()).hexdigest()


def read_busi(root: Path) -> list[Sample]:
    """Deduplicated BUSI samples with merged masks."""
    base = root / "Dataset_BUSI_with_GT" if (root / "Dataset_BUSI_with_GT").is_dir() else root
    found: list[Sample] = []
    for label in _CLASSES:
        folder = base / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _IMAGE.match(path.name)
            if match is None:
                continue
            stem = match["stem"]
            masks = tuple(sorted(folder.glob(f"{glob_escape(stem)}_mask*.png")))
            found.append(
                Sample(
                    path=path,
                    patient_id=f"{label}/{stem}",
                    study_id=f"{label}/{stem}",
                    image_id=f"{label}/{stem}",
                    laterality="U",
                    view="",
                    label=label,
                    modality="US",
                    mask_paths=masks,
                )
            )
    groups: dict[str, list[Sample]] = {}
    for sample in found:
        groups.setdefault(image_fingerprint(sample.path), []).append(sample)
    kept = []
    for copies in groups.values():
        if len({s.label for s in copies}) == 1:
            kept.append(copies[0])
    order = {s.image_id: i for i, s in enumerate(found)}
    return sorted(kept, key=lambda s: order[s.image_id])


def glob_escape(text: str) -> str:
    """``text`` with glob special characters escaped (BUSI names contain parentheses only,
    but ``[`` would be special)."""
    return re.sub(r"([*?\[])", r"[\1]", text)
