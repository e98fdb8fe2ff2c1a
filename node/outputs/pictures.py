"""PNG pictures of a study's result for the node's own study page.

Made once, when the result is built, from what the worker already holds: each image's
display copy (the image as a viewer shows it, kept by preprocessing) and the heat-map
Secondary Capture just built (its pixels as the archive receives them, so the page shows
exactly what the SC shows). Nothing is decoded again when a page is viewed: the page
serves these files from the spool.

Per image, named by its SOP Instance UID (a file-name-safe form of it):

* ``<uid>.png``: the image, longest side at most :data:`IMAGE_SIZE`;
* ``<uid>-thumb.png``: the same, longest side :data:`THUMBNAIL_SIZE`;
* ``<uid>-heatmap.png``: the heat-map SC's picture (when ``sc`` is built).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset

from node.results import StudyResult

__all__ = [
    "IMAGE_SIZE",
    "THUMBNAIL_SIZE",
    "Picture",
    "picture_name",
    "study_pictures",
]

#: Longest side, pixels, of the image and heat-map pictures.
IMAGE_SIZE = 768
#: Longest side, pixels, of the thumbnails.
THUMBNAIL_SIZE = 160


@dataclass(frozen=True)
class Picture:
    """One PNG file: its name (no folder) and its bytes."""

    name: str
    png: bytes


def picture_name(sop_instance_uid: str, kind: str = "") -> str:
    """The file name of an image's picture: ``kind`` ``""``, ``"thumb"`` or ``"heatmap"``."""
    safe = "".join(c for c in sop_instance_uid if c.isdigit() or c == ".")[:64] or "image"
    return f"{safe}-{kind}.png" if kind else f"{safe}.png"


def _png(image: Image.Image, longest_side: int) -> bytes:
    picture = image.copy()
    picture.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _grey(display: npt.NDArray[np.float32]) -> Image.Image:
    levels = np.clip(np.rint(np.asarray(display, dtype=np.float64) * 255.0), 0, 255)
    return Image.fromarray(levels.astype(np.uint8), mode="L")


def _sc_picture(sc: Dataset) -> Image.Image | None:
    """The RGB picture an (uncompressed, 8-bit RGB) Secondary Capture holds."""
    rows, cols = int(sc.Rows), int(sc.Columns)
    if int(sc.get("SamplesPerPixel", 0)) != 3 or int(sc.get("BitsAllocated", 0)) != 8:
        return None
    data = np.frombuffer(bytes(sc.PixelData), dtype=np.uint8)
    if data.size < rows * cols * 3:
        return None
    if int(sc.get("PlanarConfiguration", 0)) == 1:
        rgb = data[: rows * cols * 3].reshape(3, rows, cols).transpose(1, 2, 0)
    else:
        rgb = data[: rows * cols * 3].reshape(rows, cols, 3)
    return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")


def study_pictures(result: StudyResult, captures: Sequence[Dataset]) -> list[Picture]:
    """The pictures of every image of ``result``; ``captures`` are the heat-map SCs built
    for it (matched to images by their Source Image Sequence)."""
    by_source: dict[str, Dataset] = {}
    for sc in captures:
        for item in sc.get("SourceImageSequence", []) or []:
            by_source[str(item.get("ReferencedSOPInstanceUID", ""))] = sc
    pictures: list[Picture] = []
    for image in result.images:
        uid = image.sop_instance_uid
        if image.display is not None:
            grey = _grey(image.display)
            pictures.append(Picture(picture_name(uid), _png(grey, IMAGE_SIZE)))
            pictures.append(Picture(picture_name(uid, "thumb"), _png(grey, THUMBNAIL_SIZE)))
        capture = by_source.get(uid)
        heat = _sc_picture(capture) if capture is not None else None
        if heat is not None:
            pictures.append(Picture(picture_name(uid, "heatmap"), _png(heat, IMAGE_SIZE)))
    return pictures
