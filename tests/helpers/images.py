"""Small synthetic images and the DICOM files that carry them, for pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.outputs.minimal import PATIENT_AND_STUDY

__all__ = ["COMPRESSED", "breast_phantom", "mg_dataset", "one_study", "write_dataset"]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
COMPRESSED = {"j2k": JPEG2000Lossless, "jpegls": JPEGLSLossless, "rle": RLELossless}


def breast_phantom(
    rows: int = 200,
    cols: int = 120,
    side: str = "left",
    spot: tuple[int, int] | None = None,
    spot_radius: int = 0,
    tissue: float = 0.4,
) -> npt.NDArray[np.float32]:
    """A half-ellipse "breast" of brightness ``tissue`` on a black background.

    The flat side lies on the ``side`` edge (the chest wall). ``spot``
    ``(row, column)`` marks a disc of brightness 1 with ``spot_radius`` (0: one pixel).
    """
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    depth = xx if side == "left" else (cols - 1 - xx)
    inside = ((yy - rows / 2) / (rows * 0.42)) ** 2 + (depth / (cols * 0.6)) ** 2 <= 1
    image = np.where(inside, tissue, 0.0)
    if spot is not None:
        disc = (yy - spot[0]) ** 2 + (xx - spot[1]) ** 2 <= spot_radius**2
        image[disc] = 1.0
    return image.astype(np.float32)


def mg_dataset(
    image: npt.NDArray[np.floating[Any]],
    *,
    laterality: str | None = "L",
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    modality: str = "MG",
    **tags: Any,
) -> Dataset:
    """A For Presentation mammogram (or ``modality="US"``) holding ``image`` (``[0, 1]``).

    Stored values are ``round(image * (2**bits - 1))``, inverted for MONOCHROME1.
    ``tags`` are set on the dataset as given (``WindowCenter=...``).
    """
    full = 2**bits - 1
    stored = np.rint(np.clip(image, 0, 1) * full).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (full - stored).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = US_IMAGE if modality == "US" else MG_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    if laterality is not None:
        ds.ImageLaterality = laterality
    ds.ViewPosition = "CC"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def write_dataset(ds: Dataset, path: Path, transfer_syntax: str | None = None) -> Path:
    """Write ``ds`` to ``path``, compressed with ``"j2k"``, ``"jpegls"`` or ``"rle"`` if asked."""
    if transfer_syntax is not None:
        ds.compress(COMPRESSED[transfer_syntax])
    ds.save_as(path, enforce_file_format=True)
    return path


#: Patient and study attributes a study's images share.
_STUDY_ATTRIBUTES = ("StudyInstanceUID", *PATIENT_AND_STUDY)


def one_study(files: list[Path], out: Path) -> list[Path]:
    """Copies of ``files`` under ``out`` that form one study: the first file's patient and
    study attributes in every copy (mammograms and ultrasound images of one visit)."""
    out.mkdir(parents=True, exist_ok=True)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    copies = []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        for keyword in _STUDY_ATTRIBUTES:
            if keyword in first:
                setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
            elif keyword in ds:
                delattr(ds, keyword)
        copy = out / f"{index:03d}-{path.name}"
        ds.save_as(copy, enforce_file_format=True)
        copies.append(copy)
    return copies
