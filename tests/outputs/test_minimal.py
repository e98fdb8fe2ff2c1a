"""The minimal failure report: built from nothing but a Study Instance UID (or one header
with anything in it), written and read back strictly, and checked by dciodvfy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from node.config import OutputSettings
from node.outputs import build_minimal_failure_outputs
from node.outputs.minimal import BASIC_TEXT_SR
from node.pipeline.worker import encode_object
from tests.outputs.conftest import run_dciodvfy

STUDY = "1.2.826.0.1.3680043.8.498.1"


def read_back(data: bytes, path: Path) -> Dataset:
    path.write_bytes(data)
    with pydicom.config.strict_reading():
        return pydicom.dcmread(path)


def test_from_nothing_but_the_study_uid(tmp_path: Path) -> None:
    (obj,) = build_minimal_failure_outputs(
        STUDY, "no eligible images to infer", OutputSettings(), revision=2, accession_number="A7"
    )
    ds = read_back(encode_object(obj), tmp_path / "minimal.dcm")
    assert obj.kind == "sr" and ds.SOPClassUID == BASIC_TEXT_SR
    assert (ds.StudyInstanceUID, ds.AccessionNumber, ds.PatientID) == (STUDY, "A7", "")
    words = " ".join(str(item.TextValue) for item in ds.ContentSequence)
    assert "no eligible images to infer" in words and "not a normal (negative)" in words
    again = build_minimal_failure_outputs(STUDY, "other words", OutputSettings(), revision=2)
    assert again[0].sop_instance_uid == obj.sop_instance_uid  # rebuilt: the archive replaces it
    assert build_minimal_failure_outputs(STUDY, "x", OutputSettings(failure_report=False)) == []
    if shutil.which("dciodvfy"):
        report = run_dciodvfy(tmp_path / "minimal.dcm")
        assert "BasicTextSR" in [line.strip() for line in report], report
        assert not [line for line in report if line.startswith("Error")], report


def test_patient_and_study_come_from_a_header_when_there_is_one(tmp_path: Path) -> None:
    source = Dataset()
    source.SpecificCharacterSet = "ISO_IR 100"
    source.PatientName, source.PatientID, source.PatientSex = "MÜLLER^JÖRG", "P1", "F"
    source.StudyDate, source.AccessionNumber = "20260102", "ACC9"
    (obj,) = build_minimal_failure_outputs(STUDY, "reason", OutputSettings(), source=source)
    ds = read_back(encode_object(obj), tmp_path / "minimal.dcm")
    assert (str(ds.PatientName), ds.PatientID, ds.PatientSex) == ("MÜLLER^JÖRG", "P1", "F")
    assert (ds.StudyDate, ds.AccessionNumber) == ("20260102", "ACC9")
