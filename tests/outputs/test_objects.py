"""What the result objects say, read back from their files with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from node.config import OutputSettings
from node.errors import OutputError
from node.outputs import build_failure_outputs, build_outputs
from node.outputs.uids import UID_PREFIX
from tests.outputs.conftest import ALL_OBJECTS, INTENDED_USE, KINDS, Built
from tests.outputs.reading import read

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def test_objects_per_kind(built: dict[str, Built]) -> None:
    for name in ("mg", "mg-negative", "mg-monochrome1"):
        objects = built[name].objects
        assert sorted(o.kind for o in objects) == ["gsps"] * 4 + ["mgcad"] + ["sc"] * 4 + ["sr"]
    partial = built["mg-partial"]
    assert sorted(o.kind for o in partial.objects) == ["gsps"] * 3 + ["mgcad"] + ["sc"] * 3 + ["sr"]
    assert len(partial.failed_sources) == 1
    # ultrasound: no Mammography CAD SR (it describes mammograms only)
    for name in ("us", "us-negative"):
        us = built[name]
        assert sorted(o.kind for o in us.objects) == ["gsps"] * 2 + ["sc", "sc", "sr"]
        assert [o.kind for o in us.failure] == ["sr"]
    assert sorted(o.kind for o in built["mg"].failure) == ["mgcad", "sr"]
    assert any(image.regions for image in built["mg"].result.images), "the model marks regions"


@pytest.mark.parametrize("kind", sorted(KINDS))
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
