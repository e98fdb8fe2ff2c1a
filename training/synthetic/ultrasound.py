"""Breast ultrasound: layered tissue, speckle and solid masses with known class.

A linear-probe B-mode image (8-bit MONOCHROME2) of one breast: skin,
subcutaneous fat with Cooper's ligaments, the fibroglandular layer,
retromammary fat and the pectoral muscle. Benign masses are oval,
circumscribed, wider than tall (parallel to the skin) with posterior acoustic
enhancement; malignant ones are irregular with angular margins, taller than
wide (non-parallel), with an echogenic halo and posterior shadowing.

Each study has two images of one breast, transverse (``TRANS``) and sagittal
(``SAG``) probe orientations; for an abnormal study both cross the lesion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy import ndimage

from training.synthetic.anatomy import power_noise
from training.synthetic.dicom import US_IMAGE, code_item, file_meta, study_level
from training.synthetic.encoding import encode, save, write_mask
from training.synthetic.mammogram import bounding_box
from training.synthetic.options import SynthImage, SynthOptions
from training.synthetic.study import StudyPlan, image_rng

__all__ = ["US_GRIDS", "US_VIEWS", "UsGrid", "render_us", "write_us_study"]

#: Probe orientations written per study.
US_VIEWS = ("TRANS", "SAG")


@dataclass(frozen=True)
class UsGrid:
    """Frame size in pixels, the scanned region inside it, and the pixel size (mm)."""

    rows: int
    cols: int
    top: int
    left: int
    height: int
    width: int
    spacing: float


US_GRIDS = {
    "small": UsGrid(rows=256, cols=320, top=16, left=16, height=232, width=288, spacing=0.17),
    "full": UsGrid(rows=768, cols=1024, top=48, left=64, height=690, width=896, spacing=0.055),
}

Float = NDArray[np.float32]


def _wavy(width: int, base: float, amp: float, rng: np.random.Generator, smooth: float) -> Float:
    line = ndimage.gaussian_filter1d(rng.standard_normal(width + 64), smooth)[32:-32]
    line = line / (np.abs(line).max() + 1e-6)
    return np.asarray(base + amp * line, np.float32)


def _tissue(grid: UsGrid, rng: np.random.Generator) -> Float:
    """Mean echogenicity (0-1) of the layers, before speckle."""
    h, w, mm = grid.height, grid.width, grid.spacing
    depth = (np.arange(h, dtype=np.float32) * mm)[:, None]
    smooth = 4.0 / mm
    skin = _wavy(w, rng.uniform(1.6, 2.4), 0.2, rng, smooth)
    fat_end = _wavy(w, rng.uniform(6.0, 11.0), 2.5, rng, smooth)
    gland_end = _wavy(w, rng.uniform(20.0, 27.0), 3.5, rng, smooth)
    muscle = _wavy(w, rng.uniform(29.0, 33.0), 1.2, rng, smooth * 2)
    echo = np.full((h, w), 0.13, np.float32)
    echo = np.where(depth < skin, 0.1, echo)
    echo = np.where(np.abs(depth - skin) < 0.35, 0.95, echo)
    texture = power_noise(h, w, mm, 2.4, rng, low_mm=6.0)
    gland = np.float32(0.6) + np.float32(0.18) * texture
    echo = np.where((depth > fat_end) & (depth < gland_end), gland, echo)
    striations = np.float32(0.25) + np.float32(0.12) * np.sin(depth * np.float32(2 * math.pi / 1.3))
    echo = np.where(depth > muscle, striations, echo)
    echo = np.where(np.abs(depth - muscle) < 0.3, 0.85, echo)
    # Cooper's ligaments: thin bright arcs through the fat
    for _ in range(int(rng.integers(3, 7))):
        arc = _wavy(w, rng.uniform(3.0, 10.0), 2.5, rng, smooth / 2)
        near = np.abs(depth - arc) < 0.18
        echo = np.where(near & (depth > skin) & (depth < fat_end), 0.8, echo)
    return np.clip(echo, 0.01, 1.5).astype(np.float32)


def _lesion(
    grid: UsGrid,
    label: str,
    view: str,
    rng: np.random.Generator,
    shape_seed: int,
    difficulty: float,
) -> tuple[Float, Float, Float, NDArray[np.bool_]]:
    """Lesion interior echogenicity, its soft outline (0-1), the posterior factor, the mask."""
    h, w, mm = grid.height, grid.width, grid.spacing
    shape_rng = np.random.default_rng(shape_seed)
    size = float(shape_rng.uniform(3.0, 7.0)) * difficulty**-0.35
    cy = float(shape_rng.uniform(11.0, 19.0)) / mm
    cx = w / 2 + float(rng.uniform(-0.15, 0.15)) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - np.float32(cy), xx - np.float32(cx)
    noise = rng.standard_normal((h, w)).astype(np.float32)
    if label == "benign":
        aspect = float(shape_rng.uniform(1.4, 2.1)) * (1.0 if view == "TRANS" else 0.85)
        half_w, half_h = size / mm * aspect**0.5, size / mm / aspect**0.5
        q = np.sqrt((dx / half_w) ** 2 + (dy / half_h) ** 2)
        interior = np.float32(0.02) + np.float32(0.04) * q + np.float32(0.01) * noise
        outline = ndimage.gaussian_filter((q <= 1.0).astype(np.float32), 0.7)
        # posterior acoustic enhancement below a fluid-like, circumscribed mass
        band = (np.abs(dx) < half_w * 0.85) & (dy > 0)
        fade = np.exp(-np.clip(dy - half_h, 0, None) / np.float32(4 * half_h))
        post = 1.0 + 0.6 * band * fade * (q > 1.0)
    else:
        aspect = float(shape_rng.uniform(0.6, 0.9))  # taller than wide: non-parallel
        size *= 0.85
        half_w, half_h = size / mm * aspect**0.5, size / mm / aspect**0.5
        phi = np.arctan2(dy, dx)
        wobble = np.ones_like(phi)
        for k in range(3, 12):
            amp = float(shape_rng.normal(0, 0.16 / k**0.4))
            # |cos| gives angular, pointed margins
            phase = float(shape_rng.uniform(0, math.pi))
            wobble += amp * (np.abs(np.cos(k * phi / 2 + phase)) - 0.64)
        q = np.sqrt((dx / half_w) ** 2 + (dy / half_h) ** 2) / np.clip(wobble, 0.5, 1.9)
        interior = np.float32(0.05) + np.float32(0.03) * noise
        # an echogenic halo around the mass
        interior = np.where(q > 1.0, 0.8, interior).astype(np.float32)
        outline = ndimage.gaussian_filter((q <= 1.3).astype(np.float32), 1.0)
        band = (np.abs(dx) < half_w * 0.8) & (dy > 0) & (q > 1.3)
        post = np.where(band, 0.3, 1.0)
    post = ndimage.gaussian_filter(np.asarray(post, np.float32), 1.5)
    return interior.astype(np.float32), outline.astype(np.float32), post, q <= 1.0


def render_us(
    plan: StudyPlan, view: str, grid: UsGrid, difficulty: float
) -> tuple[NDArray[np.uint8], NDArray[np.bool_] | None]:
    """One B-mode frame (``grid.rows`` x ``grid.cols``, 8 bits) and its lesion mask."""
    laterality = plan.lesion_side or ("L" if plan.index % 2 == 0 else "R")
    rng = image_rng(plan, laterality, view)
    echo = _tissue(grid, rng)
    post = np.ones_like(echo)
    mask = None
    if plan.lesion is not None:
        interior, outline, post, mask = _lesion(
            grid, plan.label, view, rng, plan.lesion.shape_seed, difficulty
        )
        echo = np.clip((echo * (1.0 - outline) + interior * outline) * post, 0.004, None)
    h, w = echo.shape
    field = rng.standard_normal((h, w, 2), dtype=np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0.7, 1.6, 0))
    speckle = np.hypot(field[..., 0], field[..., 1])
    speckle /= np.float32(speckle.mean())
    depth = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    gain = np.exp(-0.6 * depth) * (1.0 + 0.45 * depth)  # attenuation, partly undone by TGC
    amplitude = echo * speckle * gain + np.float32(0.003)
    decibels = 20.0 * np.log10(amplitude)
    dynamic_range = 40.0
    pixels = np.clip((decibels + dynamic_range) / dynamic_range, 0, 1) * 240.0
    frame = np.zeros((grid.rows, grid.cols), np.uint8)
    region = (slice(grid.top, grid.top + h), slice(grid.left, grid.left + w))
    frame[region] = np.rint(pixels).astype(np.uint8)
    full_mask = None
    if mask is not None and mask.any():
        full_mask = np.zeros(frame.shape, bool)
        full_mask[region] = mask
    return frame, full_mask


def _us_dataset(
    plan: StudyPlan, view: str, number: int, frame: NDArray[np.uint8], grid: UsGrid, laterality: str
) -> Dataset:
    identity = plan.identity
    ds = Dataset()
    ds.update(study_level(identity, "US", "Breast ultrasound"))
    sop_uid = identity.uid("us-image", view)
    ds.file_meta = file_meta(US_IMAGE, sop_uid)
    ds.SOPClassUID = US_IMAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = identity.date()
    ds.InstanceCreationTime = identity.time(20 * number + 1)
    ds.Modality = "US"
    ds.SeriesInstanceUID = identity.uid("us-series")
    ds.SeriesNumber = 1
    ds.SeriesDate = identity.date()
    ds.SeriesTime = identity.time()
    ds.SeriesDescription = "Breast ultrasound"
    ds.Laterality = laterality
    ds.BodyPartExamined = "BREAST"
    ds.InstanceNumber = number
    ds.PatientOrientation = ""
    ds.ContentDate = identity.date()
    ds.ContentTime = identity.time(20 * number)
    ds.AcquisitionDateTime = identity.date() + identity.time(20 * number)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = f"{'Left' if laterality == 'L' else 'Right'} breast, {view.lower()}"
    ds.AnatomicRegionSequence = Sequence([code_item("76752008", "SCT", "Breast")])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frame.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = frame.tobytes()
    ds.TransducerData = ["L12-5", "", ""]
    ds.TransducerType = "LINEAR"
    ds.ProcessingFunction = "BREAST"
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0 = grid.left
    region.RegionLocationMinY0 = grid.top
    region.RegionLocationMaxX1 = grid.left + grid.width - 1
    region.RegionLocationMaxY1 = grid.top + grid.height - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = grid.spacing / 10.0
    region.PhysicalDeltaY = grid.spacing / 10.0
    region.ReferencePixelX0 = 0
    region.ReferencePixelY0 = 0
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    return ds


def write_us_study(out: Path, plan: StudyPlan, options: SynthOptions) -> list[SynthImage]:
    """Write the two ultrasound images of ``plan`` under ``out``; return their rows."""
    grid = US_GRIDS[options.size]
    laterality = plan.lesion_side or ("L" if plan.index % 2 == 0 else "R")
    folder = f"study-{plan.index + 1:04d}"
    images = []
    for number, view in enumerate(US_VIEWS, start=1):
        frame, mask = render_us(plan, view, grid, options.difficulty)
        ds = _us_dataset(plan, view, number, frame, grid, laterality)
        relative = f"{folder}/US-{laterality}-{view}.dcm"
        save(encode(ds, options.transfer_syntax), out / relative)
        mask_path = None
        bbox = None
        if mask is not None:
            mask_path = f"masks/{folder}-US-{laterality}-{view}.png"
            write_mask(out, mask_path, mask)
            bbox = bounding_box(mask)
        images.append(
            SynthImage(
                study_uid=plan.identity.study_uid,
                sop_instance_uid=ds.SOPInstanceUID,
                path=relative,
                laterality=laterality,
                view=view,
                label=plan.label,
                lesion_type="none"
                if plan.lesion is None
                else ("circumscribed_mass" if plan.label == "benign" else "irregular_mass"),
                bbox=bbox,
                mask_path=mask_path,
                density=plan.density,
                modality="US",
            )
        )
    return images
