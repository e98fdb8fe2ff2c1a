"""Marks only at the operating point, on every object.

The same bright-spot model, the same regions, two operating points: "mg" is called
positive (threshold 0.3, images at 0.33-0.36), "mg-negative" negative (threshold
0.5). Before, a negative study got outlined regions labelled with their Grad-CAM
saliency (up to 1.00) on the secondary captures and the presentation states, TID 1500
regions, and "Presentation Required" CAD findings with a "with findings" summary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.config import OutputSettings
from node.outputs import build_outputs
from node.outputs.sc import FAINT, SecondaryCaptureStyle
from node.results import StudyResult
from tests.outputs.conftest import INTENDED_USE, Built
from tests.outputs.reading import code_value, concept, items_named, read, walk

REQUIRED, OPTIONAL = "111150", "111151"


def _by_source(entry: Built, kind: str) -> dict[str, Dataset]:
    """The objects of one kind, by the SOP Instance UID of the image each was made from."""
    return {
        o.source_sop_instance_uid: pydicom.dcmread(entry.files[o.sop_instance_uid])
        for o in entry.objects
        if o.kind == kind
    }


def _without_regions(result: StudyResult) -> StudyResult:
    return dataclasses.replace(
        result, images=tuple(dataclasses.replace(i, regions=()) for i in result.images)
    )


def test_the_negative_study_has_regions_but_no_marks(built: dict[str, Built]) -> None:
    positive, negative = built["mg"].result, built["mg-negative"].result
    assert positive.positive and not negative.positive
    # the same images, the same regions: only the operating point differs
    assert [len(i.regions) for i in negative.images] == [len(i.regions) for i in positive.images]
    assert any(i.regions for i in negative.images)
    assert negative.threshold > max(i.probability for i in negative.images)
    assert not negative.has_marks and positive.has_marks
    assert max(r.peak for i in negative.images for r in i.regions) == 1.0


def test_no_tid1500_region_and_no_required_cad_finding_below_the_operating_point(
    built: dict[str, Built],
) -> None:
    for name in ("mg-negative", "mg-negative-omit", "us-negative"):
        (sr,) = read(built[name], "sr")
        assert not [i for i in walk(sr) if i.get("ValueType") == "SCOORD"], name
    for name in ("mg-negative", "mg-negative-omit"):
        (cad,) = read(built[name], "mgcad")
        top = {concept(i): i for i in cad.ContentSequence}
        assert code_value(top["111017"]) == "111241"  # all algorithms succeeded; without findings
        intents = [code_value(i) for i in items_named(cad, "111056")]
        assert REQUIRED not in intents
    # with unmarked_regions: optional the regions are there, for presentation optional only
    (cad,) = read(built["mg-negative"], "mgcad")
    findings = items_named(cad, "111059")
    regions = sum(len(i.regions) for i in built["mg-negative"].result.images)
    assert len(findings) == regions > 0
    for finding in findings:
        (intent,) = [i for i in finding.ContentSequence if concept(i) == "111056"]
        assert code_value(intent) == OPTIONAL
        (point,) = intent.ContentSequence  # TID 4006 row 3: CAD Operating Point
        assert concept(point) == "111071" and int(point.MeasuredValueSequence[0].NumericValue) > 1
    # by default (omit) they are left out altogether
    (cad,) = read(built["mg-negative-omit"], "mgcad")
    assert not items_named(cad, "111059")


def test_marks_of_a_positive_study_are_required_findings_and_regions(
    built: dict[str, Built],
) -> None:
    entry = built["mg"]
    result = entry.result
    marks = [r for image in result.images for r in result.marks(image)]
    assert marks and all(r.score >= result.threshold for r in marks)
    (sr,) = read(entry, "sr")
    assert len([i for i in walk(sr) if i.get("ValueType") == "SCOORD"]) == len(marks)
    (cad,) = read(entry, "mgcad")
    top = {concept(i): i for i in cad.ContentSequence}
    assert code_value(top["111017"]) == "111242"  # all algorithms succeeded; with findings
    required = [
        f
        for f in items_named(cad, "111059")
        if code_value(next(i for i in f.ContentSequence if concept(i) == "111056")) == REQUIRED
    ]
    assert len(required) == len(marks)
    certainties = sorted(
        float(i.MeasuredValueSequence[0].NumericValue)
        for f in required
        for i in f.ContentSequence
        if concept(i) == "111012"
    )
    assert certainties == pytest.approx(sorted(r.score * 100 for r in marks), abs=1e-3)


def test_presentation_states_outline_marks_only(built: dict[str, Built]) -> None:
    for name in ("mg", "mg-negative"):
        entry = built[name]
        states = _by_source(entry, "gsps")
        for image in entry.result.images:
            state = states[image.sop_instance_uid]
            (annotation,) = state.GraphicAnnotationSequence
            graphics = annotation.get("GraphicObjectSequence", [])
            assert len(graphics) == len(entry.result.marks(image)), name
            labels = [str(t.UnformattedTextValue) for t in annotation.TextObjectSequence]
            assert all("%" in label for label in labels[1:])


def _pictures(result: StudyResult, entry: Built, settings: OutputSettings) -> dict[str, Dataset]:
    objects = build_outputs(result, entry.sources, settings, intended_use=INTENDED_USE)
    return {o.source_sop_instance_uid: o.dataset for o in objects}


def test_secondary_captures_outline_marks_and_say_where_the_image_stands(
    built: dict[str, Built],
) -> None:
    sc_only = OutputSettings(objects=("sc",), sc_size=512)
    entry = built["mg"]
    drawn = _pictures(entry.result, entry, sc_only)
    # the same result without regions: what the pictures look like without outlines
    plain = _pictures(_without_regions(entry.result), entry, sc_only)
    marked = {i.sop_instance_uid for i in entry.result.images if entry.result.marks(i)}
    assert marked
    for uid, sc in drawn.items():
        same = np.array_equal(sc.pixel_array[:512], plain[uid].pixel_array[:512])
        assert same is (uid not in marked), uid
    # the negative study: the same regions, no outline on any picture
    negative = built["mg-negative"]
    drawn = _pictures(negative.result, negative, sc_only)
    plain = _pictures(_without_regions(negative.result), negative, sc_only)
    for uid, sc in drawn.items():
        assert np.array_equal(sc.pixel_array, plain[uid].pixel_array), uid


@pytest.mark.parametrize("mode", ["shown", "faint", "off"])
def test_heat_map_below_the_operating_point_is_configurable(
    built: dict[str, Built], mode: str
) -> None:
    entry = built["mg-negative"]
    settings = OutputSettings(objects=("sc",), sc_size=512, heatmap_below_operating_point=mode)
    pictures = _pictures(entry.result, entry, settings)
    hot = next(i for i in entry.result.images if i.heatmap is not None and i.heatmap.max() > 0)
    rgb = pictures[hot.sop_instance_uid].pixel_array[:512].astype(int)
    colour = np.abs(rgb[..., 0] - rgb[..., 2]).max()  # grey pixels have R == G == B
    if mode == "off":
        assert colour == 0
    else:
        assert colour > 0
    style = SecondaryCaptureStyle(opacity=0.4, below=mode)
    assert style.opacity_for(True) == 0.4
    assert style.opacity_for(False) == {"shown": 0.4, "faint": 0.4 * FAINT, "off": 0.0}[mode]
