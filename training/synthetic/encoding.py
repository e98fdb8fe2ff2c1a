"""Writing datasets in the transfer syntax asked for, losslessly and reproducibly, and
lesion masks as PNG.

RLE, JPEG-LS and JPEG 2000 are encoded in-process by pydicom's encoders (RLE
natively, JPEG-LS with pyjpegls, JPEG 2000 with pylibjpeg-openjpeg). JPEG
Lossless, Non-Hierarchical, First-Order Prediction (Process 14, Selection Value
1) has no Python encoder, so dcmtk's ``dcmcjpeg`` compresses the pixel data and
the fragments are copied back into our dataset: the output keeps our File Meta
Information and never depends on the tool's UIDs or clock.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from training.synthetic.options import TransferSyntaxName

__all__ = ["TRANSFER_SYNTAXES", "EncodingError", "encode", "save", "write_mask"]

#: Option name -> transfer syntax UID.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
    "jpeg-lossless": JPEGLosslessSV1,
}


class EncodingError(RuntimeError):
    """A transfer syntax could not be produced (a missing codec or tool)."""


def encode(ds: Dataset, name: TransferSyntaxName) -> Dataset:
    """Compress ``ds`` in place into transfer syntax ``name`` (lossless) and return it.

    The SOP Instance UID is kept: lossless compression does not make a new image.
    """
    uid = TRANSFER_SYNTAXES[name]
    if uid == ExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = uid
        return ds
    if uid == JPEGLosslessSV1:
        return _dcmtk_jpeg_lossless(ds)
    try:
        ds.compress(uid, generate_instance_uid=False)
    except (RuntimeError, ValueError) as exc:
        raise EncodingError(f"cannot encode {uid.name}: {exc}") from exc
    return ds


def _dcmtk_jpeg_lossless(ds: Dataset) -> Dataset:
    tool = shutil.which("dcmcjpeg")
    if tool is None:
        raise EncodingError("JPEG Lossless needs dcmtk's dcmcjpeg (Debian package dcmtk)")
    with tempfile.TemporaryDirectory(prefix="synth-jpeg-") as tmp:
        plain, packed = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(plain, enforce_file_format=True)
        done = subprocess.run(
            [tool, "--encode-lossless-sv1", "--true-lossless", str(plain), str(packed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise EncodingError(f"dcmcjpeg failed: {done.stderr.strip()[:300]}")
        compressed = pydicom.dcmread(packed)
    ds.PixelData = compressed.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    return ds


def save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_mask(out: Path, relative: str, mask: NDArray[np.bool_]) -> None:
    """Write a lesion mask as an 8-bit PNG (0 background, 255 lesion)."""
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path, format="PNG", optimize=False)
