"""The result objects of a study with mammograms and ultrasound images, inferred part by
part by two models: each part's objects name its model, the ultrasound part has no CAD
SR and its marks lie on the ultrasound images in their own pixels, the UIDs are
distinct and derived, and dciodvfy and PixelMed find no errors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as Path_
from pydicom.dataset import Dataset

from node.config import InferenceSettings, OutputSettings
from node.inference.engine import ImageInput, InferenceEngine, StudyInput
from node.outputs import ResultObject, build_outputs
from node.outputs.codes import PRIVATE_SCHEME
from node.results import CombinedResult, combine
from tests.helpers.images import one_study
from tests.helpers.models import bright_spot_state, write_random_model_folder
from tests.outputs.conftest import INTENDED_USE, run_dciodvfy, run_pixelmed
from tests.outputs.reading import concept, items_named, walk
from tests.outputs.test_validators import BREAST_SCORE, EVALUATION_MODIFIER, PIXELMED_TYPO

pytestmark = pytest.mark.peers

SETTINGS = OutputSettings(objects=("sr", "mgcad", "sc", "gsps"), sc_size=256)
#: ``(column, row)`` of the bright disc painted on the first ultrasound image.
SPOT = (220, 150)


@dataclass
class Mixed:
    result: CombinedResult
    sources: dict[str, Dataset]
    objects: list[ResultObject]
    files: dict[str, Path]


def _build(result: CombinedResult, sources: list[Dataset]) -> list[ResultObject]:
    objects: list[ResultObject] = []
    for part in result.parts:
        objects += build_outputs(part, sources, SETTINGS, revision=1, intended_use=INTENDED_USE)
    return objects


@pytest.fixture(scope="module")
def mixed(synthetic, tmp_path_factory: pytest.TempPathFactory) -> Mixed:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("mixed")
    files = one_study(
        sorted(synthetic(studies=1, seed=3, mix=(1.0, 0.0, 0.0)).rglob("*.dcm"))
        + sorted(synthetic(studies=1, seed=3, modality="us", mix=(1.0, 0.0, 0.0)).rglob("*.dcm")),
        root / "study",
    )
    # a bright disc on the first ultrasound image, where the ultrasound model will point
    first_us = next(p for p in files if pydicom.dcmread(p).Modality == "US")
    ds = pydicom.dcmread(first_us)
    pixels = ds.pixel_array.copy()
    rows, cols = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    pixels[(rows - SPOT[1]) ** 2 + (cols - SPOT[0]) ** 2 <= 10**2] = 255
    ds.PixelData = pixels.tobytes()
    ds.save_as(first_us, enforce_file_format=True)
    datasets = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, files)}
    parts = []
    # the ultrasound model sees the scanned area at its own size, without CLAHE: only the
    # disc is brighter than 0.95 (the generator's speckle stays below 240 / 255)
    us_input = {"height": 224, "width": 288, "ultrasound_clahe": False}
    for modality, threshold, extra in (("MG", 0.7, {}), ("US", 0.95, us_input)):
        folder = write_random_model_folder(
            root / modality,
            modalities=(modality,),
            states={"m0": bright_spot_state(threshold=threshold)},
            threshold=0.3,
            name=f"bright-{modality.lower()}",
            input={"height": 128, "width": 64, "channels": 1, "mean": [0.5], "std": [0.5]} | extra,
        )
        engine = InferenceEngine.load(folder, InferenceSettings(tta="none", device="cpu"))
        inputs = tuple(
            ImageInput(path, uid)
            for path, (uid, ds) in zip(files, datasets.items(), strict=True)
            if ds.Modality == modality
        )
        (part,) = engine.infer_studies(
            [StudyInput(str(next(iter(datasets.values())).StudyInstanceUID), inputs)]
        )
        parts.append(part)
    result = combine(parts[0].study_uid, parts)
    objects = _build(result, list(datasets.values()))
    out = root / "objects"
    out.mkdir()
    written = {}
    for obj in objects:
        path = out / obj.filename
        obj.dataset.save_as(path, enforce_file_format=True)
        written[obj.sop_instance_uid] = path
    return Mixed(result, datasets, objects, written)


def _model(obj: ResultObject) -> str:
    """The model an object names: its Manufacturer's Model Name, or the secondary
    capture's Derivation Description."""
    ds = obj.dataset
    if "ManufacturerModelName" in ds:
        return str(ds.ManufacturerModelName)
    return str(ds.DerivationDescription).split()[4]  # "Grad-CAM heat map of <name> ..."


def test_each_part_has_its_own_objects_naming_its_model(mixed: Mixed) -> None:
    kinds = {
        name: sorted(o.kind for o in mixed.objects if _model(o) == name)
        for name in ("bright-mg", "bright-us")
    }
    for obj in mixed.objects:
        if obj.source_sop_instance_uid:  # per image: the model of that image's modality
            modality = mixed.sources[obj.source_sop_instance_uid].Modality
            assert _model(obj) == f"bright-{str(modality).lower()}"
    assert kinds["bright-mg"] == ["gsps"] * 4 + ["mgcad"] + ["sc"] * 4 + ["sr"]
    assert kinds["bright-us"] == ["gsps"] * 2 + ["sc"] * 2 + ["sr"]  # no CAD SR for US
    uids = [o.sop_instance_uid for o in mixed.objects]
    assert len(set(uids)) == len(uids)
    series = {(o.kind, str(o.dataset.SeriesInstanceUID)) for o in mixed.objects}
    assert len(series) == 7  # sr, sc, gsps per model, and the CAD SR's
    again = _build(mixed.result, list(mixed.sources.values()))
    assert [o.sop_instance_uid for o in again] == uids  # derived, not drawn


def test_the_ultrasound_report_marks_its_images_in_their_own_pixels(mixed: Mixed) -> None:
    us_part = next(p for p in mixed.result.parts if p.model_name == "bright-us")
    assert us_part.has_marks
    (sr,) = [
        o.dataset
        for o in mixed.objects
        if o.kind == "sr" and o.dataset.ManufacturerModelName == "bright-us"
    ]
    (region,) = items_named(sr, "111030")  # Image Region: the disc, and nothing else
    (ref,) = region.ContentSequence
    source = mixed.sources[str(ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)]
    assert source.Modality == "US"
    # in the ultrasound frame's own pixels (the model saw it cropped to the scanned area):
    # the outline encloses the disc, within the cells of the model's stride-32 map
    polygon = Path_(list(zip(region.GraphicData[0::2], region.GraphicData[1::2], strict=True)))
    assert polygon.contains_point(SPOT)
    xs, ys = region.GraphicData[0::2], region.GraphicData[1::2]
    assert max(xs) - min(xs) < 100 and max(ys) - min(ys) < 100
    sites = [
        item
        for item in walk(sr)
        if item.ConceptNameCodeSequence[0].CodeValue == "363698007"  # Finding Site
    ]
    assert sites and all(s.ConceptCodeSequence[0].CodeValue == "76752008" for s in sites)
    lateralities = {
        str(m.ConceptCodeSequence[0].CodeValue) for s in sites for m in s.ContentSequence
    }
    us_sides = {str(ds.Laterality) for ds in mixed.sources.values() if ds.Modality == "US"}
    assert lateralities == {{"L": "7771000", "R": "24028007"}[side] for side in us_sides}
    # the mark's group holds its image's probability of every label and the disagreement
    (group,) = [g for g in items_named(sr, "125007") if "111030" in map(concept, walk(g))]
    (image,) = [i for i in us_part.images if i.sop_instance_uid == source.SOPInstanceUID]
    numbers = {
        str(i.ConceptNameCodeSequence[0].CodeMeaning): float(
            i.MeasuredValueSequence[0].NumericValue
        )
        for i in group.ContentSequence
        if i.ValueType == "NUM"
        and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    }
    expected = {f"Image probability: {k}": v * 100 for k, v in image.class_probabilities.items()}
    expected["Ensemble disagreement (SD)"] = image.uncertainty * 100
    assert set(image.class_probabilities) == {"normal", "benign", "malignant"}
    assert numbers == pytest.approx(expected, abs=1e-3)
    texts = [str(i.TextValue) for i in walk(sr) if i.ValueType == "TEXT"]
    assert any("by model bright-mg" in t for t in texts)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed")
def test_dciodvfy_finds_no_errors(mixed: Mixed) -> None:
    for path in mixed.files.values():
        report = run_dciodvfy(path)
        assert not [line for line in report if line.startswith("Error")], (path.name, report)


@pytest.mark.skipif(
    shutil.which("java") is None or not Path("/usr/share/java/pixelmed.jar").exists(),
    reason="PixelMed is not installed",
)
def test_pixelmed_finds_no_errors(mixed: Mixed) -> None:
    srs = [mixed.files[o.sop_instance_uid] for o in mixed.objects if o.kind in ("sr", "mgcad")]
    reports = run_pixelmed(srs)
    assert len(reports) == 3
    for path, report in reports.items():
        assert "IOD validation complete" in report, (path.name, report)
        assert not [line for line in report if line.startswith("Error")], (path.name, report)
        warnings = [line for line in report if line.startswith("Warning")]
        allowed = (BREAST_SCORE, EVALUATION_MODIFIER)
        assert all(PIXELMED_TYPO in w or any(p.search(w) for p in allowed) for w in warnings), (
            path.name,
            warnings,
        )
