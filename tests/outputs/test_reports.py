"""What the two SRs say, read back: TID 1500 / TID 2000 and the Mammography CAD SR.

Each test names the gap it closes: per-image numbers and a finding code consistent
with the operating point, Image Library laterality and view, reports without marks
that viewers can open, the case and breast scores, the CAD operating points, links
into the Image Library, view codes as the source codes them, "not for clinical use"
and the equipment on every SR.
"""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from node import __version__
from node.outputs import build_outputs
from node.outputs.codes import BIRADS, PRIVATE_SCHEME
from node.outputs.mgcad import MAMMOGRAPHY_CAD_SR
from tests.outputs.conftest import INTENDED_USE, WITH_OPTIONAL, Built
from tests.outputs.reading import (
    COMPREHENSIVE_SR,
    code_value,
    concept,
    items_named,
    numbers,
    read,
    walk,
)

MALIGNANT, BENIGN, NORMAL = "21594007", "30807003", "17621005"


def _root(sr: Dataset) -> str:
    return str(sr.ConceptNameCodeSequence[0].CodeValue)


# --------------------------------------------------------------------------- #
# TID 1500 (with marks) and TID 2000 (without)
# --------------------------------------------------------------------------- #
def test_tid1500_report_of_a_positive_study(built: dict[str, Built]) -> None:
    entry = built["mg"]
    result = entry.result
    (sr,) = read(entry, "sr")
    assert sr.SOPClassUID == COMPREHENSIVE_SR
    assert _root(sr) == "126000" and sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    # every measurement group is geometric: one per mark, a closed polygon on its image
    (measurements,) = items_named(sr, "126010")
    groups = [g for g in measurements.ContentSequence if concept(g) == "125007"]
    marks = [(i, r) for i in result.images for r in result.marks(i)]
    assert len(groups) == len(marks) > 0
    for group, (image, region) in zip(groups, marks, strict=True):
        (scoord,) = [i for i in group.ContentSequence if i.get("ValueType") == "SCOORD"]
        points = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2)
        assert scoord.GraphicType == "POLYLINE" and np.array_equal(points[0], points[-1])
        (source,) = scoord.ContentSequence
        assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.sop_instance_uid
        # the region's probability first (viewers show the first few), then its image's
        assert (
            concept(
                group.ContentSequence[
                    [i.get("ValueType") for i in group.ContentSequence].index("NUM")
                ]
            )
            == "111047"
        )
        assert numbers(group, "111047") == pytest.approx([region.score * 100], abs=1e-3)
        per_label = {
            str(i.ConceptNameCodeSequence[0].CodeMeaning): float(
                i.MeasuredValueSequence[0].NumericValue
            )
            for i in group.ContentSequence
            if i.get("ValueType") == "NUM"
            and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
        }
        expected = {
            f"Image probability: {label}": value * 100
            for label, value in image.class_probabilities.items()
        }
        expected["Ensemble disagreement (SD)"] = image.uncertainty * 100
        assert per_label == pytest.approx(expected, abs=1e-3)
        units = {
            i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
            for i in walk(group)
            if i.get("ValueType") == "NUM"
        }
        assert units == {"%"}


def test_reports_call_each_image_as_the_operating_point_does(built: dict[str, Built]) -> None:
    for name in ("mg", "mg-monochrome1", "mg-negative", "us", "us-negative"):
        entry = built[name]
        (sr,) = read(entry, "sr")
        if not entry.result.has_marks:  # TID 2000: the calls are the Findings
            (findings,) = items_named(sr, "121070")
            calls = [i for i in findings.ContentSequence if i.ValueType == "CODE"]
        else:
            (evaluations,) = items_named(sr, "C0034375")
            calls = [i for i in evaluations.ContentSequence if concept(i) == "121071"]
        assert len(calls) == len(entry.result.images)
        for call, image in zip(calls, entry.result.images, strict=True):
            positive = entry.result.image_positive(image)
            assert (code_value(call) == MALIGNANT) is positive, name
            if not positive:
                assert code_value(call) in (NORMAL, BENIGN)
        if not entry.result.has_marks:
            continue
        categories = [code_value(i) for i in evaluations.ContentSequence if concept(i) == "111005"]
        result = entry.result
        expected = [b.assessment_category for b in result.breasts] + [result.assessment_category]
        assert categories == [BIRADS[int(c)].value for c in expected]
        texts = " ".join(
            str(i.TextValue) for i in evaluations.ContentSequence if i.ValueType == "TEXT"
        )
        assert INTENDED_USE in texts and "not for diagnostic use" in texts
        assert f"{result.score * 100:.1f}%" in texts


def test_image_library_entries_carry_laterality_and_view(built: dict[str, Built]) -> None:
    entry = built["mg"]
    (sr,) = read(entry, "sr")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in entry.sources}
    (library,) = items_named(sr, "111028")
    images = [i for i in walk(library) if i.get("ValueType") == "IMAGE"]
    assert len(images) == len(entry.sources)
    side = {"L": "7771000", "R": "24028007"}
    for image in images:
        ds = by_uid[str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)]
        descriptors = {
            concept(i): code_value(i) for i in image.ContentSequence if i.ValueType == "CODE"
        }
        assert descriptors["111027"] == side[str(ds.ImageLaterality)]
        assert descriptors["111031"] == ds.ViewCodeSequence[0].CodeValue


def test_reports_without_marks_are_diagnostic_imaging_reports(built: dict[str, Built]) -> None:
    """A 126000 report without measurement groups (an empty or missing Imaging
    Measurements container) makes OHIF 3.13 fail when it opens it; a report that
    measures nothing is a TID 2000 report, which viewers show as text."""
    for name in ("mg-negative", "mg-negative-omit", "us-negative"):
        entry = built[name]
        (sr,) = read(entry, "sr")
        assert _root(sr) == "18748-4" and sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
        assert not items_named(sr, "126010") and not items_named(sr, "125007")
        (findings,) = items_named(sr, "121070")
        calls = [i for i in findings.ContentSequence if i.ValueType == "CODE"]
        assert [code_value(c) for c in calls] != [] and MALIGNANT not in [
            code_value(c) for c in calls
        ]
        texts = [str(i.TextValue) for i in walk(sr) if i.get("ValueType") == "TEXT"]
        assert any("below the operating point" in t for t in texts)
        assert any(INTENDED_USE in t for t in texts)
    for entry in built.values():
        (sr,) = read(entry, "sr", failure=True)
        assert _root(sr) == "18748-4"
        texts = [str(i.TextValue) for i in walk(sr) if i.get("ValueType") == "TEXT"]
        assert any("model folder not found" in t and "not a normal" in t for t in texts)
        assert any("Not for clinical use" in t for t in texts)


def test_every_sr_names_the_model_and_versions(built: dict[str, Built]) -> None:
    for entry in built.values():
        for obj in entry.objects + entry.failure:
            if obj.kind not in ("sr", "mgcad"):
                continue
            ds = pydicom.dcmread(entry.files[obj.sop_instance_uid])
            assert ds.ManufacturerModelName in ("tiny-test",)
            versions = list(ds.SoftwareVersions)
            assert versions == [f"Breast AI Node {__version__}", "tiny-test 0.0.1"]


# --------------------------------------------------------------------------- #
# Mammography CAD SR
# --------------------------------------------------------------------------- #
def _summary(cad: Dataset) -> Dataset:
    (summary,) = [i for i in cad.ContentSequence if concept(i) == "111017"]
    return summary


def test_cad_report_codes_the_case_and_breast_scores(built: dict[str, Built]) -> None:
    for name in ("mg", "mg-negative", "mg-partial"):
        entry = built[name]
        result = entry.result
        (cad,) = read(entry, "mgcad")
        assert cad.SOPClassUID == MAMMOGRAPHY_CAD_SR
        body = _summary(cad).ContentSequence
        (certainty,) = [i for i in body if concept(i) == "111013"]
        assert float(certainty.MeasuredValueSequence[0].NumericValue) == pytest.approx(
            result.score * 100, abs=1e-3
        )
        (category,) = [i for i in body if concept(i) == "111005"]
        assert code_value(category) == BIRADS[int(result.assessment_category)].value
        breast_scores = {
            code_value(i.ContentSequence[0]): float(i.MeasuredValueSequence[0].NumericValue)
            for i in body
            if concept(i) == "111047"
        }
        sides = {"L": "80248007", "R": "73056007"}
        assert breast_scores == pytest.approx(
            {sides[b.laterality]: b.score * 100 for b in result.breasts}, abs=1e-3
        )


def test_cad_report_says_not_for_clinical_use_whatever_happened(built: dict[str, Built]) -> None:
    for name in ("mg", "mg-negative", "mg-partial"):
        for failure in (False, True):
            (cad,) = read(built[name], "mgcad", failure=failure)
            (impression,) = [i for i in _summary(cad).ContentSequence if concept(i) == "111033"]
            assert "Not for clinical use" in str(impression.TextValue), (name, failure)
    (cad,) = read(built["mg-partial"], "mgcad")
    top = {concept(i): i for i in cad.ContentSequence}
    assert code_value(top["111064"]) == "111223"  # Partially Succeeded


def test_cad_operating_points_are_the_cards(built: dict[str, Built]) -> None:
    for name, maximum in (("mg", 3), ("mg-negative-omit", 2)):
        (cad,) = read(built[name], "mgcad")
        (performed, *_) = items_named(cad, "111022")
        values = {
            concept(i): float(i.MeasuredValueSequence[0].NumericValue)
            for i in performed.ContentSequence
            if i.get("ValueType") == "NUM"
        }
        # 1 = the least sensitive point (sens90, the card's default), ... ; with
        # optional findings a last point holds every outlined region
        assert values == {"111072": maximum, "111092": 1}
        (table,) = items_named(performed, "111093")
        points = [i for i in table.ContentSequence if concept(i) == "111071"]
        assert [int(float(p.MeasuredValueSequence[0].NumericValue)) for p in points] == list(
            range(1, maximum + 1)
        )
        descriptions = [str(items_named(p, "111081")[0].TextValue) for p in points]
        assert descriptions[0].startswith("sens90:") and descriptions[1].startswith("sens95:")
        assert numbers(points[0], "111088") == [90.0]  # the card's case sensitivity


def test_cad_images_are_linked_to_the_image_library(built: dict[str, Built]) -> None:
    entry = built["mg-partial"]
    (cad,) = read(entry, "mgcad")
    library_position = [concept(i) for i in cad.ContentSequence].index("111028") + 1
    library = cad.ContentSequence[library_position - 1].ContentSequence
    links = [i for i in walk(cad) if "ReferencedContentItemIdentifier" in i]
    assert links, "by-reference links"
    # no IMAGE item outside the library: every other one is a link to a library entry
    images = [i for i in walk(cad) if i.get("ValueType") == "IMAGE"]
    assert len(images) == len(library) == len(entry.sources) + len(entry.failed_sources)
    for link in links:
        root, position, entry_index = (int(v) for v in link.ReferencedContentItemIdentifier)
        assert (root, position) == (1, library_position)
        assert 1 <= entry_index <= len(library)
        assert link.RelationshipType in ("HAS PROPERTIES", "SELECTED FROM")
    failed = items_named(cad, "111025")
    assert failed and [i for i in walk(failed[0]) if "ReferencedContentItemIdentifier" in i]


def test_cad_view_codes_come_from_the_source(built: dict[str, Built]) -> None:
    entry = built["mg"]
    sources = [copy.deepcopy(ds) for ds in entry.sources]
    # one view with a modifier, one without a View Code Sequence (XCCL by ViewPosition)
    spot = Dataset()
    spot.CodeValue, spot.CodingSchemeDesignator, spot.CodeMeaning = (
        "399055006",
        "SCT",
        "Spot Compression",
    )
    sources[0].ViewCodeSequence[0].ViewModifierCodeSequence = DicomSequence([spot])
    del sources[1].ViewCodeSequence
    sources[1].ViewPosition = "XCCL"
    objects = build_outputs(
        entry.result, sources, WITH_OPTIONAL.model_copy(update={"objects": ("mgcad",)})
    )
    cad = objects[0].dataset
    (library,) = items_named(cad, "111028")
    entries = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): i for i in library.ContentSequence
    }
    first = items_named(entries[str(sources[0].SOPInstanceUID)], "111031")[0]
    assert code_value(first) == sources[0].ViewCodeSequence[0].CodeValue
    (modifier,) = first.ContentSequence
    assert concept(modifier) == "111032" and code_value(modifier) == "399055006"
    second = items_named(entries[str(sources[1].SOPInstanceUID)], "111031")[0]
    value = second.ConceptCodeSequence[0]
    assert (value.CodeValue, value.CodeMeaning) == (
        "399192008",
        "cranio-caudal exaggerated laterally",  # CID 4014's meaning
    )
    # the secondary captures carry the source's view codes too
    for sc in read(entry, "sc"):
        source = next(
            ds
            for ds in entry.sources
            if ds.SOPInstanceUID == sc.SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        assert sc.ViewCodeSequence[0].CodeValue == source.ViewCodeSequence[0].CodeValue


# --------------------------------------------------------------------------- #
# GSPS keeps the source's VOI
# --------------------------------------------------------------------------- #
def test_presentation_states_keep_the_source_voi(built: dict[str, Built]) -> None:
    for name, expect in (("mg", "LINEAR"), ("mg-monochrome1", "SIGMOID"), ("mg-partial", "LUT")):
        entry = built[name]
        by_uid = {str(ds.SOPInstanceUID): ds for ds in entry.sources}
        for state in read(entry, "gsps"):
            source = by_uid[
                state.ReferencedSeriesSequence[0]
                .ReferencedImageSequence[0]
                .ReferencedSOPInstanceUID
            ]
            (voi,) = state.SoftcopyVOILUTSequence
            if expect == "LUT":
                (lut,) = voi.VOILUTSequence
                ours, theirs = lut, source.VOILUTSequence[0]
                assert "WindowCenter" not in voi
                assert int(ours.LUTDescriptor[0]) == int(theirs.LUTDescriptor[0])
                data = np.frombuffer(ours.LUTData, "<u2").astype(float)
                original = np.frombuffer(theirs.LUTData, "<u2").astype(float)
                scale = (2 ** int(ours.LUTDescriptor[2]) - 1) / (
                    2 ** int(theirs.LUTDescriptor[2]) - 1
                )
                assert np.allclose(data, original * scale, atol=0.5)
            else:
                assert float(voi.WindowCenter) == float(source.WindowCenter[0])
                assert float(voi.WindowWidth) == float(source.WindowWidth[0])
                function = str(voi.get("VOILUTFunction", "LINEAR"))
                assert function == expect
