"""Result objects built from synthetic studies with a real (tiny) inference engine.

Session fixtures, built once: three synthetic studies (four-view mammography in
MONOCHROME2 and in MONOCHROME1, two-image breast ultrasound), one model folder
whose malignant logit measures bright spots (so Grad-CAM marks the lesions),
the inference results, and every output object written to a folder.
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
from training.synthetic import SynthOptions, write_studies

ALL_OBJECTS = OutputSettings(objects=("sr", "mgcad", "sc", "gsps"), sc_size=512)
KINDS = {
    "mg": SynthOptions(size="small", mix=(1.0, 0.0, 0.0)),
    "mg-monochrome1": SynthOptions(size="small", photometric="monochrome1", mix=(1.0, 0.0, 0.0)),
    "us": SynthOptions(size="small", modality="us", mix=(1.0, 0.0, 0.0)),
}
INTENDED_USE = "Software tests only. Not for clinical use."


@dataclass
class Built:
    """One study's inputs and outputs."""

    result: StudyResult
    sources: list[Dataset]
    objects: list[ResultObject]
    failure: list[ResultObject]
    files: dict[str, Path] = field(default_factory=dict)
    """SOP Instance UID -> written file."""


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model_folder(
        tmp_path_factory.mktemp("model") / "bright",
        modalities=("MG", "US"),
        states={"m0": bright_spot_state()},
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, model_folder: Path) -> dict[str, Built]:
    engine = InferenceEngine.load(model_folder, InferenceSettings(tta="none", device="cpu"))
    out = tmp_path_factory.mktemp("outputs")
    studies: dict[str, Built] = {}
    for kind, options in KINDS.items():
        folder = tmp_path_factory.mktemp(kind)
        images = write_studies(folder, studies=1, seed=3, options=options)
        grouped: dict[str, list[ImageInput]] = defaultdict(list)
        for image in images:
            grouped[image.study_uid].append(ImageInput(folder / image.path, image.sop_instance_uid))
        ((study_uid, inputs),) = grouped.items()
        result = engine.infer_studies([StudyInput(study_uid, tuple(inputs))])[0]
        sources = [pydicom.dcmread(i.path) for i in inputs]
        headers = [pydicom.dcmread(i.path, stop_before_pixels=True) for i in inputs]
        objects = build_outputs(result, sources, ALL_OBJECTS, intended_use=INTENDED_USE)
        failure = build_failure_outputs(
            headers,
            "model folder not found",
            ALL_OBJECTS,
            model_name="tiny-test",
            model_version="0.0.1",
        )
        entry = Built(result, sources, objects, failure)
        named = [(f"{kind}-", o) for o in objects] + [(f"{kind}-failure-", o) for o in failure]
        for prefix, obj in named:
            path = out / f"{prefix}{obj.filename}"
            obj.dataset.save_as(path, enforce_file_format=True)
            entry.files[obj.sop_instance_uid] = path
        studies[kind] = entry
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
