"""Synthetic images as DICOM datasets, with the attributes a vendor writes.

Builds Digital Mammography X-Ray Image (For Presentation and For Processing),
Ultrasound Image and multi-frame tomosynthesis-like datasets with pydicom. The
caller passes a :class:`StudyIdentity` and per-instance details; nothing here
reads the clock or draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from training.synthetic.identity import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    StudyIdentity,
)

__all__ = [
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "MULTIFRAME_WORD_SC",
    "PATIENT_ORIENTATION",
    "US_IMAGE",
    "VIEW_CODES",
    "MgInstance",
    "code_item",
    "file_meta",
    "mammography_dataset",
    "study_level",
]

MG_FOR_PRESENTATION = DigitalMammographyXRayImageStorageForPresentation
MG_FOR_PROCESSING = DigitalMammographyXRayImageStorageForProcessing
US_IMAGE = UltrasoundImageStorage
MULTIFRAME_WORD_SC = MultiFrameGrayscaleWordSecondaryCaptureImageStorage

#: CID 4014 view codes (SNOMED CT) and their code meanings.
VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}

#: Patient Orientation (0020,0020) of each view: the direction of the rows, then of
#: the columns (PS3.3 C.7.6.1.1.1). Left breasts are shown with the chest wall on the
#: left (rows run anterior), right breasts with it on the right (rows run posterior);
#: CC puts the lateral side at the top, MLO the superolateral side (columns run
#: towards the feet and the other breast).
PATIENT_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}

_BREAST = ("76752008", "Breast")
_LATERALITY_CODE = {"L": ("80248007", "Left breast"), "R": ("73056007", "Right breast")}

MANUFACTURER = "Breast AI Node Synthetic"
MODEL_NAME = "SYNTH-MG 1"
US_MODEL_NAME = "SYNTH-US 1"
SOFTWARE_VERSION = "synth 1.0"
INSTITUTION = "Synthetic Breast Imaging Centre"


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item (PS3.3 table 8.8-1)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str = ExplicitVRLittleEndian
) -> FileMetaDataset:
    """File Meta Information with a fixed implementation class UID and version name."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def study_level(identity: StudyIdentity, modality: str, description: str) -> Dataset:
    """Patient, General Study, Patient Study and General Equipment attributes."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.IssuerOfPatientID = "SYNTH"
    ds.PatientBirthDate = identity.birth_date.strftime("%Y%m%d")
    ds.PatientSex = "F"
    ds.PatientAge = identity.patient_age
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = identity.date()
    ds.StudyTime = identity.time()
    ds.StudyID = identity.study_id
    ds.AccessionNumber = identity.accession_number
    ds.ReferringPhysicianName = "SYNTH^REFERRER"
    ds.StudyDescription = description
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.StationName = "SYNTH01"
    ds.DeviceSerialNumber = "SYN-0001"
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.ManufacturerModelName = US_MODEL_NAME if modality == "US" else MODEL_NAME
    return ds


@dataclass(frozen=True)
class MgInstance:
    """Per-image details of a mammogram."""

    laterality: str
    view: str
    series_uid: str
    series_number: int
    instance_number: int
    sop_instance_uid: str
    seconds_after_start: int
    series_description: str = "Screening mammography"
    for_processing: bool = False
    photometric: str = "MONOCHROME2"
    implant: bool = False
    thickness_mm: float = 55.0
    voi: str = "window"


def _pixel_module(ds: Dataset, pixels: NDArray[np.uint16], bits: int, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape[-2:])
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()


def mammography_dataset(
    study: Dataset,
    inst: MgInstance,
    pixels: NDArray[np.uint16],
    bits: int,
    spacing_mm: float,
    identity: StudyIdentity,
) -> Dataset:
    """A Digital Mammography X-Ray Image dataset (PS3.3 A.26).

    ``pixels`` are stored values, already in ``inst.photometric`` form, ``bits``
    of them significant; ``spacing_mm`` is ImagerPixelSpacing at the detector.
    """
    ds = Dataset()
    ds.update(study)
    sop_class = MG_FOR_PROCESSING if inst.for_processing else MG_FOR_PRESENTATION
    ds.file_meta = file_meta(sop_class, inst.sop_instance_uid)
    intent = "FOR PROCESSING" if inst.for_processing else "FOR PRESENTATION"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = inst.sop_instance_uid
    ds.InstanceCreationDate = identity.date()
    ds.InstanceCreationTime = identity.time(inst.seconds_after_start + 2)
    # General / DX / Mammography Series
    ds.Modality = "MG"
    ds.SeriesInstanceUID = inst.series_uid
    ds.SeriesNumber = inst.series_number
    ds.SeriesDate = identity.date()
    ds.SeriesTime = identity.time(inst.seconds_after_start)
    ds.SeriesDescription = inst.series_description
    ds.BodyPartExamined = "BREAST"
    ds.PresentationIntentType = intent
    # General Image
    ds.InstanceNumber = inst.instance_number
    ds.PatientOrientation = PATIENT_ORIENTATION[(inst.laterality, inst.view)]
    ds.ContentDate = identity.date()
    ds.ContentTime = identity.time(inst.seconds_after_start)
    ds.AcquisitionDate = identity.date()
    ds.AcquisitionTime = identity.time(inst.seconds_after_start)
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.AnatomicRegionSequence = Sequence([code_item(_BREAST[0], "SCT", _BREAST[1])])
    ds.ImageLaterality = inst.laterality
    # Image Pixel / DX Image
    _pixel_module(ds, pixels, bits, inst.photometric)
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower values mean less X-ray intensity (MONOCHROME1 here); -1 the opposite
    ds.PixelIntensityRelationshipSign = 1 if inst.photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if inst.photometric == "MONOCHROME1" else "IDENTITY"
    if not inst.for_processing:
        _voi(ds, pixels, bits, inst.photometric, inst.voi)
    # DX Detector
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "SYNDET1"
    ds.ImagerPixelSpacing = [f"{spacing_mm:.4g}", f"{spacing_mm:.4g}"]
    ds.PixelSpacing = [f"{spacing_mm * 0.93:.4g}", f"{spacing_mm * 0.93:.4g}"]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Magnified to the breast support"
    ds.DetectorBinning = [1, 1]
    # X-Ray Acquisition Dose / Generation / Filtration
    ds.KVP = "29"
    ds.ExposureTime = 1200
    ds.XRayTubeCurrent = 100
    ds.Exposure = 120
    ds.ExposureInuAs = 120000
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.FilterThicknessMinimum = "0.05"
    ds.FilterThicknessMaximum = "0.05"
    ds.FocalSpots = "0.3"
    ds.DistanceSourceToDetector = "700"
    ds.DistanceSourceToPatient = "650"
    ds.BodyPartThickness = f"{inst.thickness_mm:.0f}"
    ds.CompressionForce = "110"
    ds.OrganDose = "1.2"
    ds.EntranceDoseInmGy = "4.5"
    ds.OrganExposed = "BREAST"
    ds.Grid = ["RECIPROCATING", "FOCUSED"]
    # DX Positioning / Mammography Image
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = 0 if inst.view == "CC" else (45 if inst.laterality == "R" else -45)
    ds.ViewPosition = inst.view
    code, meaning = VIEW_CODES[inst.view]
    view_item = code_item(code, "SCT", meaning)
    view_item.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_item])
    ds.AcquisitionContextSequence = Sequence()
    ds.BreastImplantPresent = "YES" if inst.implant else "NO"
    ds.PartialView = "NO"
    return ds


def _voi(
    ds: Dataset, pixels: NDArray[np.uint16], bits: int, photometric: str, kind: str = "window"
) -> None:
    """The VOI a vendor sends: two linear windows, a normal one and a harder one
    (``window``); the same windows as SIGMOID functions (``sigmoid``); or one VOI LUT
    Sequence item holding a sigmoid curve over the normal window (``lut``)."""
    top = (1 << bits) - 1
    body = (
        pixels[pixels < top * 0.97] if photometric == "MONOCHROME1" else pixels[pixels > top * 0.03]
    )
    if body.size == 0:
        body = pixels.ravel()
    low, high = (float(v) for v in np.percentile(body[::5], [1.0, 99.9]))
    center = round((low + high) / 2)
    # a little wider than the breast's range, so dense tissue is not clipped to white
    width = max(round((high - low) * 1.3), 2)
    if kind == "lut":
        stored = np.arange(top + 1, dtype=np.float64)
        curve = top / (1.0 + np.exp(-4.0 * (stored - center) / width))
        item = Dataset()
        item.LUTDescriptor = [top + 1, 0, bits]
        item.LUTExplanation = "NORMAL SIGMOID"
        item.add_new(0x00283006, "OW", np.rint(curve).astype("<u2").tobytes())
        ds.VOILUTSequence = Sequence([item])
        return
    ds.WindowCenter = [center, center]
    ds.WindowWidth = [width, max(round(width * 0.7), 2)]
    ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER"]
    if kind == "sigmoid":
        ds.VOILUTFunction = "SIGMOID"
    # linear windows leave VOI LUT Function out: LINEAR is what its absence means
    # (PS3.3 C.11.2.1.3), and viewers built on cornerstone3D 5.x (OHIF 3.13) misread
    # any value of it and show the image black
