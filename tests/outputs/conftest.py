"""Result objects built from synthetic studies with a real (tiny) inference engine.

Session fixtures, built once: synthetic studies (four-view mammography in
MONOCHROME2 with linear windows, in MONOCHROME1 with SIGMOID windows, and with a VOI
LUT Sequence; two-image breast ultrasound), two model folders whose malignant logit
measures bright spots (so Grad-CAM marks bright areas) and which differ only in the
card's operating point (one calls the studies positive, the other negative, with the
same regions), the inference results, and every output object written to a folder:
for each study its results and its failure report, and for one mammography study a
partial result (one image could not be evaluated).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from node.config import InferenceSettings, OutputSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.outputs import ResultObject, build_failure_outputs, build_outputs
from node.results import StudyResult
from tests.helpers.models import bright_spot_state, write_random_model_folder
from training.synthetic import SynthImage, SynthOptions, write_studies

ALL_OBJECTS = OutputSettings(objects=("sr", "mgcad", "sc", "gsps"), sc_size=512)
#: Also the regions below the operating point, as "Presentation Optional" CAD findings.
WITH_OPTIONAL = ALL_OBJECTS.model_copy(update={"unmarked_regions": "optional"})


@dataclass(frozen=True)
class Kind:
    """One synthetic study: how it is generated, which model calls it, which settings."""

    options: SynthOptions
    positive: bool = True
    settings: OutputSettings = ALL_OBJECTS
    partial: bool = False
    """One image is left out of inference and reported as failed."""


KINDS = {
    "mg": Kind(SynthOptions(size="small", mix=(1.0, 0.0, 0.0)), settings=WITH_OPTIONAL),
    "mg-monochrome1": Kind(
        SynthOptions(size="small", photometric="monochrome1", mix=(1.0, 0.0, 0.0), voi="sigmoid")
    ),
    # the same study as "mg", called negative: the same regions, no marks
    "mg-negative": Kind(
        SynthOptions(size="small", mix=(1.0, 0.0, 0.0)),
        positive=False,
        settings=WITH_OPTIONAL,
    ),
    "mg-negative-omit": Kind(SynthOptions(size="small", mix=(1.0, 0.0, 0.0)), positive=False),
    "mg-partial": Kind(SynthOptions(size="small", mix=(1.0, 0.0, 0.0), voi="lut"), partial=True),
    "us": Kind(SynthOptions(size="small", modality="us", mix=(1.0, 0.0, 0.0))),
    "us-negative": Kind(
        SynthOptions(size="small", modality="us", mix=(1.0, 0.0, 0.0)), positive=False
    ),
}
INTENDED_USE = "Software tests only. Not for clinical use."
#: The bright-spot model scores these studies' images at 0.33-0.36: below 0.5, above 0.3.
THRESHOLDS = {True: 0.3, False: 0.5}


@dataclass
class Built:
    """One study's inputs and outputs."""

    result: StudyResult
    sources: list[Dataset]
    objects: list[ResultObject]
    failure: list[ResultObject]
    files: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID -> written file."""
    failed_sources: list[Dataset] = field(default_factory=list)
    synth: list[SynthImage] = field(default_factory=list)


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The bright-spot model twice: ``True`` calls the studies positive, ``False`` negative."""
    root = tmp_path_factory.mktemp("model")
    return {
        positive: write_random_model_folder(
            root / f"bright-{threshold}",
            modalities=("MG", "US"),
            states={"m0": bright_spot_state()},
            threshold=threshold,
        )
        for positive, threshold in THRESHOLDS.items()
    }


@pytest.fixture(scope="session")
def built(
    tmp_path_factory: pytest.TempPathFactory, model_folders: dict[bool, Path]
) -> dict[str, Built]:
    engines = {
        positive: InferenceEngine.load(folder, InferenceSettings(tta="none", device="cpu"))
        for positive, folder in model_folders.items()
    }
    out = tmp_path_factory.mktemp("outputs")
    studies: dict[str, Built] = {}
    for name, kind in KINDS.items():
        folder = tmp_path_factory.mktemp(name)
        images = write_studies(folder, studies=1, seed=3, options=kind.options)
        grouped: dict[str, list[ImageInput]] = defaultdict(list)
        for image in images:
            grouped[image.study_uid].append(ImageInput(folder / image.path, image.sop_instance_uid))
        ((study_uid, inputs),) = grouped.items()
        failed = inputs[-1:] if kind.partial else []
        inferred = inputs[:-1] if kind.partial else inputs
        engine = engines[kind.positive]
        result = engine.infer_studies([StudyInput(study_uid, tuple(inferred))])[0]
        assert result.positive is kind.positive
        sources = [pydicom.dcmread(i.path) for i in inferred]
        failed_sources = [pydicom.dcmread(i.path, stop_before_pixels=True) for i in failed]
        headers = [pydicom.dcmread(i.path, stop_before_pixels=True) for i in inputs]
        objects = build_outputs(
            result,
            sources,
            kind.settings,
            intended_use=INTENDED_USE,
            failed_sources=failed_sources,
            operating_points=engine.card.operating_points,
        )
        failure = build_failure_outputs(
            headers,
            "model folder not found",
            kind.settings,
            model_name="tiny-test",
            model_version="0.0.1",
        )
        entry = Built(result, sources, objects, failure, {}, failed_sources, images)
        named = [(f"{name}-", o) for o in objects] + [(f"{name}-failure-", o) for o in failure]
        for prefix, obj in named:
            path = out / f"{prefix}{obj.filename}"
            obj.dataset.save_as(path, enforce_file_format=True)
            entry.files[obj.sop_instance_uid] = path
        studies[name] = entry
    return studies


# --------------------------------------------------------------------------- #
# Validators (Debian packages dicom3tools and libpixelmed-java)
# --------------------------------------------------------------------------- #
PIXELMED_OPTIONS = [
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
]
BATCH_SOURCE = Path(__file__).with_name("PixelMedBatch.java")


def _classpath() -> str:
    return ":".join(str(p) for p in sorted(Path("/usr/share/java").glob("*.jar")))


def run_dciodvfy(path: Path) -> list[str]:
    """dciodvfy's messages for one file (it writes them to stderr)."""
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]


def run_pixelmed(paths: list[Path]) -> dict[Path, list[str]]:
    """PixelMed DicomSRValidator messages per file, one JVM for all files when the
    JDK can launch the batch source file, else one JVM per file."""
    base = ["java", *PIXELMED_OPTIONS, "-cp", _classpath()]
    done = subprocess.run(
        [*base, str(BATCH_SOURCE), *map(str, paths)], capture_output=True, text=True, timeout=900
    )
    reports: dict[Path, list[str]] = {}
    if done.returncode == 0 and "=== " in done.stdout:
        current: Path | None = None
        for line in done.stdout.splitlines():
            if line.startswith("=== "):
                current = Path(line[4:])
                reports[current] = []
            elif current is not None:
                reports[current].append(line)
        return reports
    for path in paths:  # a JRE without the compiler: the validator's own main, per file
        single = subprocess.run(
            [*base, "com.pixelmed.validate.DicomSRValidator", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        reports[path] = single.stdout.splitlines()
    return reports


@pytest.fixture(scope="session")
def dciodvfy_reports(built: dict[str, Built]) -> dict[Path, list[str]]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    return {path: run_dciodvfy(path) for entry in built.values() for path in entry.files.values()}


@pytest.fixture(scope="session")
def pixelmed_reports(built: dict[str, Built]) -> dict[Path, list[str]]:
    if shutil.which("java") is None or not Path("/usr/share/java/pixelmed.jar").exists():
        pytest.skip("PixelMed (libpixelmed-java) or java is not installed")
    paths = [
        entry.files[obj.sop_instance_uid]
        for entry in built.values()
        for obj in entry.objects + entry.failure
        if obj.kind in ("sr", "mgcad")
    ]
    return run_pixelmed(paths)
