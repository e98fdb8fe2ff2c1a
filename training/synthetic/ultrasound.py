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

__all__ = [
    "US_DESCRIPTOR_RATES",
    "US_GRIDS",
    "US_VIEWS",
    "UsGrid",
    "UsMass",
    "draw_us_mass",
    "render_us",
    "write_us_study",
]

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


def _tissue(grid: UsGrid, rng: np.random.Generator) -> tuple[Float, Float]:
    """Mean echogenicity (0-1) of the layers, before speckle, and the brightness factor
    of the edge shadows that Cooper's ligaments cast (thin, posterior, in any breast)."""
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
    # refraction at a ligament's edge: a narrow shadow down to the chest wall
    shadow = np.ones((h, w), np.float32)
    columns = np.arange(w, dtype=np.float32)[None, :]
    for _ in range(int(rng.poisson(0.8))):
        x = float(rng.uniform(0.1, 0.9)) * w
        half = float(rng.uniform(0.4, 1.6)) / mm
        start = float(rng.uniform(4.0, 12.0))
        dim = np.float32(rng.uniform(0.3, 0.65))
        column = (np.abs(columns - np.float32(x)) < half) & (depth > start)
        shadow = np.where(column, shadow * (1 - dim), shadow)
    shadow = ndimage.gaussian_filter(shadow, 1.5)
    return np.clip(echo, 0.01, 1.5).astype(np.float32), shadow.astype(np.float32)


@dataclass(frozen=True)
class UsMass:
    """The ACR BI-RADS ultrasound descriptors of one mass (both probe orientations show
    the same mass, so they are drawn once per lesion).

    ``aspect``: width over height (above 1: parallel to the skin); ``angular``:
    amplitude of the angular, pointed margin irregularity (0: circumscribed);
    ``lobulation``: amplitude of gentle macrolobulation; ``halo``: echogenicity of an
    echogenic rim (0: none); ``posterior``: brightness factor below the mass (above 1:
    enhancement, below 1: shadowing); ``echo``: mean interior echogenicity;
    ``heterogeneity``: its spread.
    """

    size_mm: float
    aspect: float
    angular: float
    lobulation: float
    halo: float
    posterior: float
    echo: float
    heterogeneity: float


#: At difficulty 1: how often each descriptor is seen in a malignant and in a benign mass
#: (malignant, benign). No descriptor belongs to one class alone, as in real breast
#: ultrasound: some cancers are oval and parallel, some fibroadenomas shadow.
US_DESCRIPTOR_RATES: dict[str, tuple[float, float]] = {
    "not_parallel": (0.65, 0.03),
    "angular_margin": (0.75, 0.06),
    "echogenic_halo": (0.45, 0.01),
    "shadowing": (0.5, 0.04),
    "enhancement": (0.08, 0.55),
    "heterogeneous": (0.65, 0.15),
}


def _rate(name: str, label: str, difficulty: float) -> float:
    """How often ``name`` is seen at ``difficulty``: the rates of both classes move
    towards their mean as ``difficulty ** -0.7`` (further apart below 1)."""
    malignant, benign = US_DESCRIPTOR_RATES[name]
    mid = (malignant + benign) / 2
    own = malignant if label == "malignant" else benign
    return float(np.clip(mid + (own - mid) * difficulty**-0.7, 0.0, 1.0))


def draw_us_mass(label: str, shape_seed: int, difficulty: float) -> UsMass:
    """The descriptors of a ``label`` (``benign`` or ``malignant``) mass."""
    rng = np.random.default_rng(shape_seed)

    def has(name: str) -> bool:
        return bool(rng.random() < _rate(name, label, difficulty))

    size = float(rng.uniform(3.3, 7.7)) * difficulty**-0.35
    aspect = float(rng.uniform(0.6, 0.95)) if has("not_parallel") else float(rng.uniform(1.2, 2.0))
    angular = float(rng.uniform(0.6, 1.2)) if has("angular_margin") else 0.0
    lobulation = float(rng.uniform(0.0, 0.12))
    strength = min(1.25 * difficulty**-0.8, 1.4)
    halo = float(rng.uniform(0.35, 0.8)) if has("echogenic_halo") else 0.0
    shadow, enhance = has("shadowing"), has("enhancement")
    posterior = 1.0
    if shadow:
        posterior = 1.0 - float(rng.uniform(0.3, 0.65)) * strength
    elif enhance:
        posterior = 1.0 + float(rng.uniform(0.3, 0.6)) * strength
    # a share of masses is nearly isoechoic to the tissue around them (subtle)
    subtle = rng.random() < min(0.15 * difficulty, 0.6)
    echo = float(rng.uniform(0.25, 0.4)) if subtle else float(rng.uniform(0.02, 0.12))
    heterogeneity = float(rng.uniform(0.03, 0.06)) if has("heterogeneous") else 0.01
    return UsMass(size, aspect, angular, lobulation, halo, posterior, echo, heterogeneity)


def _lesion(
    grid: UsGrid,
    mass: UsMass,
    view: str,
    rng: np.random.Generator,
    shape_seed: int,
) -> tuple[Float, Float, Float, NDArray[np.bool_]]:
    """Lesion interior echogenicity, its soft outline (0-1), the posterior factor, the mask."""
    h, w, mm = grid.height, grid.width, grid.spacing
    shape_rng = np.random.default_rng([shape_seed, 1])
    cy = float(shape_rng.uniform(11.0, 19.0)) / mm
    cx = w / 2 + float(rng.uniform(-0.15, 0.15)) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - np.float32(cy), xx - np.float32(cx)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.0)
    noise /= np.float32(noise.std() + 1e-6)
    # the sagittal plane cuts the mass a little differently
    aspect = mass.aspect * (1.0 if view == "TRANS" else 0.9)
    half_w, half_h = mass.size_mm / mm * aspect**0.5, mass.size_mm / mm / aspect**0.5
    phi = np.arctan2(dy, dx)
    wobble = np.ones_like(phi)
    for k in range(2, 5):  # gentle macrolobulation
        phase = float(shape_rng.uniform(0, 2 * math.pi))
        wobble += mass.lobulation * float(shape_rng.uniform(0.3, 1.0)) * np.cos(k * phi + phase)
    for k in range(3, 12):  # |cos| gives angular, pointed margins
        amp = float(shape_rng.normal(0, 0.16 / k**0.4)) * mass.angular
        phase = float(shape_rng.uniform(0, math.pi))
        wobble += amp * (np.abs(np.cos(k * phi / 2 + phase)) - 0.64)
    q = np.sqrt((dx / half_w) ** 2 + (dy / half_h) ** 2) / np.clip(wobble, 0.5, 1.9)
    interior = np.float32(mass.echo) * (1.0 + np.float32(0.3) * q)
    interior += np.float32(mass.heterogeneity) * noise
    edge = 1.0 + (0.3 if mass.halo > 0 else 0.0)
    if mass.halo > 0:  # an echogenic rim around the mass
        interior = np.where(q > 1.0, np.float32(mass.halo), interior)
    interior = np.clip(interior, 0.005, None).astype(np.float32)
    outline = ndimage.gaussian_filter((q <= edge).astype(np.float32), 0.7 + 0.5 * mass.angular)
    band = (np.abs(dx) < half_w * 0.85) & (dy > 0) & (q > edge)
    fade = np.exp(-np.clip(dy - half_h, 0, None) / np.float32(6 * half_h))
    post = 1.0 + (mass.posterior - 1.0) * band * fade
    post = ndimage.gaussian_filter(np.asarray(post, np.float32), 1.5)
    return interior, outline.astype(np.float32), post, q <= 1.0


def render_us(
    plan: StudyPlan, view: str, grid: UsGrid, difficulty: float
) -> tuple[NDArray[np.uint8], NDArray[np.bool_] | None]:
    """One B-mode frame (``grid.rows`` x ``grid.cols``, 8 bits) and its lesion mask."""
    laterality = plan.lesion_side or ("L" if plan.index % 2 == 0 else "R")
    rng = image_rng(plan, laterality, view)
    echo, shadows = _tissue(grid, rng)
    mask = None
    if plan.lesion is not None:
        mass = draw_us_mass(plan.label, plan.lesion.shape_seed, difficulty)
        interior, outline, post, mask = _lesion(grid, mass, view, rng, plan.lesion.shape_seed)
        echo = echo * (1.0 - outline) + interior * outline
        shadows = shadows * post
    echo = np.clip(echo * shadows, 0.004, None)
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
