"""``write_studies``: plan, render, encode and write synthetic studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from training.synthetic.dicom import (
    PATIENT_ORIENTATION,
    MgInstance,
    mammography_dataset,
    study_level,
)
from training.synthetic.encoding import encode, save, write_mask
from training.synthetic.labels import LABELS_FILE, write_labels
from training.synthetic.mammogram import (
    BITS_FOR_PRESENTATION,
    BITS_FOR_PROCESSING,
    render_view,
)
from training.synthetic.options import MG_VIEWS, SynthImage, SynthOptions
from training.synthetic.study import GRIDS, StudyPlan, image_rng, plan_study
from training.synthetic.tomo import SLICES, tomo_dataset, tomo_frames
from training.synthetic.ultrasound import write_us_study

__all__ = ["DEFAULT_OPTIONS", "write_studies"]

DEFAULT_OPTIONS = SynthOptions()


def write_studies(
    out: Path, studies: int, seed: int, options: SynthOptions = DEFAULT_OPTIONS
) -> list[SynthImage]:
    """Write ``studies`` synthetic studies under ``out`` and ``out/labels.csv``.

    Files are ``out/study-NNNN/<laterality>-<view>.dcm``, lesion masks
    ``out/masks/study-NNNN-<laterality>-<view>.png`` (8-bit, 255 = lesion). The
    same ``seed`` and ``options`` give byte-identical files. Returns one
    :class:`SynthImage` per For Presentation image, as listed in ``labels.csv``.
    """
    if studies < 0:
        raise ValueError(f"studies must be >= 0, not {studies}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = GRIDS[options.size]
    images: list[SynthImage] = []
    for index in range(studies):
        plan = plan_study(seed, index, options, grid)
        if options.modality == "us":
            images.extend(write_us_study(out, plan, options))
        else:
            images.extend(_write_mg_study(out, plan, options))
    write_labels(out / LABELS_FILE, images)
    return images


def _folder(plan: StudyPlan) -> str:
    return f"study-{plan.index + 1:04d}"


def _write_mg_study(out: Path, plan: StudyPlan, options: SynthOptions) -> list[SynthImage]:
    grid = GRIDS[options.size]
    identity = plan.identity
    study = study_level(identity, "MG", "Screening mammography, bilateral")
    photometric = options.photometric.upper()
    images: list[SynthImage] = []
    tomo_side = plan.lesion_side or "L"
    views = [v for v in MG_VIEWS if v != options.dropped]
    for number, (laterality, view) in enumerate(views, start=1):
        rv = render_view(
            plan.shapes[laterality],
            laterality,
            view,
            grid,
            plan.lesion,
            image_rng(plan, laterality, view),
        )
        name = f"{laterality}-{view}"
        series_number = number if options.split_series else 1
        seconds = 30 * number
        pixels = rv.pixels
        if photometric == "MONOCHROME1":
            pixels = (2**BITS_FOR_PRESENTATION - 1 - pixels).astype(np.uint16)
        inst = MgInstance(
            laterality=laterality,
            view=view,
            series_uid=identity.uid("series", series_number),
            series_number=series_number,
            instance_number=number,
            sop_instance_uid=identity.uid("image", laterality, view),
            seconds_after_start=seconds,
            series_description=f"{laterality} {view}"
            if options.split_series
            else "Screening mammography",
            photometric=photometric,
            implant=plan.implant,
            thickness_mm=45.0 + 25.0 * plan.shapes[laterality].depth / (grid.cols * grid.spacing),
            voi=options.voi,
        )
        ds = mammography_dataset(study, inst, pixels, BITS_FOR_PRESENTATION, grid.spacing, identity)
        relative = f"{_folder(plan)}/{name}.dcm"
        save(encode(ds, options.transfer_syntax), out / relative)
        mask_path = None
        if rv.mask is not None:
            mask_path = f"masks/{_folder(plan)}-{name}.png"
            write_mask(out, mask_path, rv.mask)
        images.append(
            SynthImage(
                study_uid=identity.study_uid,
                sop_instance_uid=inst.sop_instance_uid,
                path=relative,
                laterality=laterality,
                view=view,
                label=plan.image_label(laterality),
                lesion_type=plan.lesion_type(laterality),
                bbox=rv.bbox,
                mask_path=mask_path,
                density=plan.density,
                modality="MG",
            )
        )
        if options.for_processing:
            fp = MgInstance(
                laterality=laterality,
                view=view,
                series_uid=identity.uid("series", "for-processing"),
                series_number=50,
                instance_number=number,
                sop_instance_uid=identity.uid("image", laterality, view, "for-processing"),
                seconds_after_start=seconds,
                series_description="For processing",
                for_processing=True,
                photometric="MONOCHROME1",
                implant=plan.implant,
                thickness_mm=inst.thickness_mm,
            )
            fp_ds = mammography_dataset(
                study, fp, rv.raw, BITS_FOR_PROCESSING, grid.spacing, identity
            )
            save(
                encode(fp_ds, options.transfer_syntax),
                out / f"{_folder(plan)}/{name}-for-processing.dcm",
            )
        if options.tomo and (laterality, view) == (tomo_side, "CC"):
            _write_tomo(out, plan, options, study, rv.pixels, laterality)
    return images


def _write_tomo(
    out: Path,
    plan: StudyPlan,
    options: SynthOptions,
    study: Dataset,
    pixels: NDArray[np.uint16],
    laterality: str,
) -> None:
    grid = GRIDS[options.size]
    rng = image_rng(plan, laterality, "CC", kind=1)
    frames = tomo_frames(pixels, rng, focus=int(rng.integers(2, SLICES - 2)))
    spacing = grid.spacing * pixels.shape[0] / frames.shape[1]
    orientation = PATIENT_ORIENTATION[(laterality, "CC")]
    ds = tomo_dataset(study, plan.identity, laterality, frames, spacing, orientation)
    save(encode(ds, options.transfer_syntax), out / f"{_folder(plan)}/{laterality}-CC-tomo.dcm")
