"""A tomosynthesis-like multi-frame object, written so that it can be skipped.

Breast Tomosynthesis Image Storage (1.2.840.10008.5.1.4.1.1.13.1.3) is an
enhanced multi-frame IOD whose functional groups, frame of reference and
acquisition geometry a generator cannot fill in truthfully, so the generator
writes the stack as a Multi-frame Grayscale Word Secondary Capture Image
(1.2.840.10008.5.1.4.1.1.7.3) instead: Modality ``MG``, ImageType
``DERIVED\\SECONDARY\\TOMOSYNTHESIS``, one frame per slice with SliceLocationVector.
Downstream it stands for "multi-frame MG": stored, never inferred.

The frames are slices through the CC view of one breast: the 2D image blurred
more the further the slice is from the lesion's (or the breast's) mid-plane.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy import ndimage

from training.synthetic.dicom import MULTIFRAME_WORD_SC, code_item, file_meta
from training.synthetic.identity import StudyIdentity

__all__ = ["SLICES", "tomo_dataset", "tomo_frames"]

#: Number of slices in the stack, and their pitch in mm.
SLICES = 9
SLICE_PITCH_MM = 5.0


def tomo_frames(
    image: NDArray[np.uint16], rng: np.random.Generator, focus: int
) -> NDArray[np.uint16]:
    """``SLICES`` frames from a 2D ``image``; frame ``focus`` is the sharpest."""
    if max(image.shape) > 1024:
        image = image[::2, ::2]  # detector-size stacks are binned 2x2
    base = image.astype(np.float32)
    frames = []
    for k in range(SLICES):
        blurred = ndimage.gaussian_filter(base, sigma=0.6 + 1.1 * abs(k - focus))
        blurred += rng.standard_normal(base.shape, dtype=np.float32) * np.float32(8.0)
        frames.append(np.clip(np.rint(blurred), 0, 4095).astype(np.uint16))
    return np.stack(frames)


def tomo_dataset(
    study: Dataset,
    identity: StudyIdentity,
    laterality: str,
    frames: NDArray[np.uint16],
    spacing_mm: float,
    orientation: list[str],
) -> Dataset:
    """A Multi-frame Grayscale Word SC dataset of ``frames`` (12 bits stored, MONOCHROME2).

    ``spacing_mm`` is the pixel size of the frames (PixelSpacing).
    """
    ds = Dataset()
    ds.update(study)
    sop_uid = identity.uid("tomo", laterality)
    ds.file_meta = file_meta(MULTIFRAME_WORD_SC, sop_uid)
    ds.SOPClassUID = MULTIFRAME_WORD_SC
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MG"
    ds.SeriesInstanceUID = identity.uid("series", "tomo")
    ds.SeriesNumber = 60
    ds.SeriesDescription = f"Tomosynthesis slices {laterality} CC"
    ds.BodyPartExamined = "BREAST"
    ds.ConversionType = "SYN"
    ds.InstanceNumber = 1
    ds.PatientOrientation = orientation
    ds.ContentDate = identity.date()
    ds.ContentTime = identity.time(200)
    ds.ImageType = ["DERIVED", "SECONDARY", "TOMOSYNTHESIS"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.AnatomicRegionSequence = Sequence([code_item("76752008", "SCT", "Breast")])
    ds.ImageLaterality = laterality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = int(frames.shape[0])
    ds.Rows, ds.Columns = (int(n) for n in frames.shape[1:])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.FrameIncrementPointer = 0x00182005  # Slice Location Vector
    ds.SliceLocationVector = [round(SLICE_PITCH_MM * k, 1) for k in range(frames.shape[0])]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelSpacing = [f"{spacing_mm:.4g}", f"{spacing_mm:.4g}"]
    ds.WindowCenter = 2000
    ds.WindowWidth = 2600
    ds.PixelData = np.ascontiguousarray(frames, dtype="<u2").tobytes()
    return ds
