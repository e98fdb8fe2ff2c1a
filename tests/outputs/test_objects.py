"""What the result objects say, read back from their files with pydicom."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from node.config import OutputSettings
from node.errors import OutputError
from node.outputs import build_failure_outputs, build_outputs
from node.outputs.codes import BIRADS
from node.outputs.mgcad import MAMMOGRAPHY_CAD_SR
from node.outputs.uids import UID_PREFIX
from tests.outputs.conftest import ALL_OBJECTS, INTENDED_USE, Built

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def read(entry: Built, kind: str, failure: bool = False) -> list[Dataset]:
    objects = entry.failure if failure else entry.objects
    return [pydicom.dcmread(entry.files[o.sop_instance_uid]) for o in objects if o.kind == kind]


def walk(items: Dataset | list[Dataset]) -> Iterator[Dataset]:
    """Every content item below ``items`` (depth first)."""
    for item in items if isinstance(items, list) else [items]:
        for child in item.get("ContentSequence", []):
            yield child
            yield from walk(child)


def concept(item: Dataset) -> str:
    return (
        str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""
    )


def code_value(item: Dataset) -> str:
    return str(item.ConceptCodeSequence[0].CodeValue)


def test_objects_per_kind(built: dict[str, Built]) -> None:
    mg, us = built["mg"], built["us"]
    assert sorted(o.kind for o in mg.objects) == ["gsps"] * 4 + [
        "mgcad",
        "sc",
        "sc",
        "sc",
        "sc",
        "sr",
    ]
    # ultrasound: no Mammography CAD SR (it describes mammograms only)
    assert sorted(o.kind for o in us.objects) == ["gsps"] * 2 + ["sc", "sc", "sr"]
    assert sorted(o.kind for o in mg.failure) == ["mgcad", "sr"]
    assert [o.kind for o in us.failure] == ["sr"]
    assert any(image.regions for image in mg.result.images), "the bright-spot model marks lesions"


@pytest.mark.parametrize("kind", ["mg", "mg-monochrome1", "us"])
def test_every_object_is_in_the_source_study_in_a_new_series(
    kind: str, built: dict[str, Built]
) -> None:
    entry = built[kind]
    source = entry.sources[0]
    source_series = {str(ds.SeriesInstanceUID) for ds in entry.sources}
    for obj in entry.objects + entry.failure:
        ds = pydicom.dcmread(entry.files[obj.sop_instance_uid])
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert ds.AccessionNumber == source.AccessionNumber
        assert ds.SeriesInstanceUID not in source_series
        assert ds.SeriesInstanceUID.startswith(UID_PREFIX) and ds.SOPInstanceUID.startswith(
            UID_PREFIX
        )
        assert len(ds.SOPInstanceUID) <= 64
        assert ds.SeriesNumber == getattr(ALL_OBJECTS, f"{obj.kind}_series_number")
        assert ds.SeriesDescription == getattr(ALL_OBJECTS, f"{obj.kind}_series_description")
        # viewers group a study's series by date: the result series carry theirs
        assert len(ds.SeriesDate) == 8 and ds.SeriesDate >= source.StudyDate
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_secondary_captures(built: dict[str, Built]) -> None:
    entry = built["mg"]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in entry.sources}
    for sc in read(entry, "sc"):
        assert sc.SOPClassUID == SC_STORAGE
        assert (sc.SamplesPerPixel, sc.PhotometricInterpretation, sc.BitsAllocated) == (3, "RGB", 8)
        assert sc.BurnedInAnnotation == "YES"
        (ref,) = sc.SourceImageSequence
        source = by_uid[ref.ReferencedSOPInstanceUID]
        assert ref.ReferencedSOPClassUID == source.SOPClassUID
        assert sc.ImageLaterality == source.ImageLaterality
        assert "Laterality" not in sc  # ImageLaterality only (dciodvfy 2C rule)
        assert list(sc.PatientOrientation) == list(source.PatientOrientation)
        # the picture is scaled to sc_size; the legend band is added below it
        assert sc.Columns == round(source.Columns * 512 / source.Rows)
        assert sc.Rows > 512
        pixels = sc.pixel_array
        assert pixels.shape == (sc.Rows, sc.Columns, 3)
        assert pixels[:512].std() > 10  # an image, not a blank


def test_monochrome1_is_shown_like_monochrome2(built: dict[str, Built]) -> None:
    """The same synthetic study stored both ways gives the same picture (up to the
    window, which the generator sets differently): strongly correlated, not inverted."""
    plain = {str(ds.ImageLaterality) + str(ds.ViewPosition): ds for ds in built["mg"].sources}
    plain_sc = {
        s.SourceImageSequence[0].ReferencedSOPInstanceUID: s for s in read(built["mg"], "sc")
    }
    inverted_sc = {
        s.SourceImageSequence[0].ReferencedSOPInstanceUID: s
        for s in read(built["mg-monochrome1"], "sc")
    }
    for ds in built["mg-monochrome1"].sources:
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        twin = plain[str(ds.ImageLaterality) + str(ds.ViewPosition)]
        a = inverted_sc[ds.SOPInstanceUID].pixel_array[:512].astype(float).mean(axis=-1)
        b = plain_sc[twin.SOPInstanceUID].pixel_array[:512].astype(float).mean(axis=-1)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def _measurement_groups(sr: Dataset) -> list[Dataset]:
    return [i for i in walk(sr) if concept(i) == "125007"]


def test_tid1500_report(built: dict[str, Built]) -> None:
    entry = built["mg"]
    (sr,) = read(entry, "sr")
    assert sr.SOPClassUID == COMPREHENSIVE_SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = list(walk(sr))
    procedure = [i for i in items if concept(i) == "121058"]
    assert [code_value(i) for i in procedure] == ["363679005"]
    device_uid = [i for i in items if concept(i) == "121012"]
    assert device_uid and str(device_uid[0].UID).startswith(UID_PREFIX)
    library = [i for i in items if concept(i) == "111028"]
    library_images = [i for i in walk(library[0]) if i.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in library_images} == {
        str(ds.SOPInstanceUID) for ds in entry.sources
    }
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT" and concept(i) == "121106"]
    assert any(INTENDED_USE in t and "not for diagnostic use" in t for t in texts), texts

    groups = _measurement_groups(sr)
    result = entry.result
    regions = sum(len(i.regions) for i in result.images)
    assert len(groups) == len(result.images) + len(result.breasts) + 1 + regions
    probabilities = sorted(
        float(i.MeasuredValueSequence[0].NumericValue)
        for g in groups
        for i in walk(g)
        if concept(i) == "111047"
    )
    expected = sorted(
        [i.probability for i in result.images] + [b.score for b in result.breasts] + [result.score]
    )
    assert probabilities == pytest.approx(expected, abs=1e-6)
    lateralities = {code_value(i) for g in groups for i in walk(g) if concept(i) == "272741003"}
    assert {"7771000", "24028007"} <= lateralities  # left and right finding sites
    # an assessment category (CID 6027) for each breast and for the study
    categories = sorted(code_value(i) for g in groups for i in walk(g) if concept(i) == "111005")
    expected_categories = sorted(
        BIRADS[int(c)].value
        for c in [b.assessment_category for b in result.breasts] + [result.assessment_category]
    )
    assert categories == expected_categories


def test_tid1500_regions_are_closed_polylines_on_their_images(built: dict[str, Built]) -> None:
    entry = built["mg"]
    (sr,) = read(entry, "sr")
    scoords = [i for i in walk(sr) if i.ValueType == "SCOORD"]
    regions = [r for image in entry.result.images for r in image.regions]
    assert len(scoords) == len(regions) > 0
    uids = {str(ds.SOPInstanceUID) for ds in entry.sources}
    for scoord in scoords:
        assert scoord.GraphicType == "POLYLINE"
        points = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2)
        assert np.array_equal(points[0], points[-1]) and len(points) >= 4
        (image,) = scoord.ContentSequence
        assert image.RelationshipType == "SELECTED FROM"
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in uids


def test_mammography_cad_report(built: dict[str, Built]) -> None:
    entry = built["mg"]
    (cad,) = read(entry, "mgcad")
    assert cad.SOPClassUID == MAMMOGRAPHY_CAD_SR
    assert cad.file_meta.MediaStorageSOPClassUID == MAMMOGRAPHY_CAD_SR
    top = {concept(i): i for i in cad.ContentSequence}
    assert code_value(top["111064"]) == "111222"  # Summary of Detections: Succeeded
    assert code_value(top["111017"]) == "111242"  # all algorithms succeeded; with findings
    findings = [i for i in walk(cad) if concept(i) == "111059"]
    assert len(findings) == sum(len(i.regions) for i in entry.result.images)
    for finding in findings:
        outline = [i for i in finding.ContentSequence if concept(i) == "111041"]
        points = np.asarray(outline[0].GraphicData, dtype=float).reshape(-1, 2)
        assert np.array_equal(points[0], points[-1])
        names = {str(i.TextValue) for i in finding.ContentSequence if concept(i) == "111001"}
        assert names == {entry.result.model_name}
    performed = [i for i in walk(top["111064"]) if concept(i) == "111022"]
    images = [i for i in performed[0].ContentSequence if i.ValueType == "IMAGE"]
    assert len(images) == len(entry.sources)


def test_failure_reports_say_so(built: dict[str, Built]) -> None:
    entry = built["mg"]
    (cad,) = read(entry, "mgcad", failure=True)
    top = {concept(i): i for i in cad.ContentSequence}
    assert code_value(top["111064"]) == "111224"  # Failed
    assert code_value(top["111017"]) == "111245"  # no algorithms succeeded
    assert not [i for i in walk(cad) if concept(i) == "111059"]
    (sr,) = read(entry, "sr", failure=True)
    texts = [str(i.TextValue) for i in walk(sr) if i.ValueType == "TEXT"]
    assert any("model folder not found" in t and "not a normal" in t for t in texts), texts
    assert not _measurement_groups(sr)


def test_rebuilding_gives_the_same_uids_and_a_new_revision_new_ones(
    built: dict[str, Built],
) -> None:
    entry = built["us"]
    settings = OutputSettings(objects=("sr", "sc"))
    first = build_outputs(entry.result, entry.sources, settings, intended_use=INTENDED_USE)
    again = build_outputs(entry.result, entry.sources, settings, intended_use=INTENDED_USE)
    later = build_outputs(entry.result, entry.sources, settings, revision=1)
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in again]
    assert [o.dataset.SeriesInstanceUID for o in first] == [
        o.dataset.SeriesInstanceUID for o in again
    ]
    assert not {o.sop_instance_uid for o in first} & {o.sop_instance_uid for o in later}
    assert len({o.sop_instance_uid for o in first}) == len(first)
    failure = build_failure_outputs(entry.sources, "x", settings)
    assert failure[0].sop_instance_uid not in {o.sop_instance_uid for o in first}


def test_failure_report_can_be_switched_off(built: dict[str, Built]) -> None:
    off = OutputSettings(failure_report=False)
    assert build_failure_outputs(built["mg"].sources, "reason", off) == []


def test_inputs_are_checked(built: dict[str, Built]) -> None:
    entry = built["mg"]
    with pytest.raises(OutputError, match="no dataset for evaluated image"):
        build_outputs(entry.result, entry.sources[1:], ALL_OBJECTS)
    stripped = []
    for ds in entry.sources:
        copy = Dataset(ds)
        del copy.PixelData
        stripped.append(copy)
    with pytest.raises(OutputError, match="no pixel data"):
        build_outputs(entry.result, stripped, OutputSettings(objects=("sc",)))
    with pytest.raises(OutputError, match="needs the study's images"):
        build_failure_outputs([], "reason", ALL_OBJECTS)
