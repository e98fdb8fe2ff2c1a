"""Every synthetic object passes dciodvfy, and every transfer syntax decodes to the same pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.synthetic.conftest import dciodvfy_errors, dicom_files
from training.synthetic import SynthOptions, write_studies
from training.synthetic.options import Modality, TransferSyntaxName

pytestmark = pytest.mark.peers

CASES = {
    "explicit": SynthOptions(mix=(1.0, 0.0, 0.0)),
    "monochrome1": SynthOptions(photometric="monochrome1", split_series=True),
    "for-processing+tomo": SynthOptions(for_processing=True, tomo=True),
    "rle": SynthOptions(transfer_syntax="rle"),
    "jpegls": SynthOptions(transfer_syntax="jpegls"),
    "j2k": SynthOptions(transfer_syntax="j2k"),
    "jpeg-lossless": SynthOptions(transfer_syntax="jpeg-lossless", tomo=True),
    "voi-sigmoid": SynthOptions(voi="sigmoid"),
    "voi-lut": SynthOptions(voi="lut", photometric="monochrome1", transfer_syntax="rle"),
    "us": SynthOptions(modality="us", mix=(0.5, 0.5, 0.0)),
    "us-rle": SynthOptions(modality="us", transfer_syntax="rle"),
}


def _needs_dcmcjpeg(options: SynthOptions) -> None:
    if options.transfer_syntax == "jpeg-lossless" and shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmcjpeg (Debian package dcmtk) is not installed")


@pytest.mark.parametrize("case", sorted(CASES))
def test_dciodvfy_reports_no_errors(case: str, tmp_path: Path) -> None:
    options = CASES[case]
    _needs_dcmcjpeg(options)
    write_studies(tmp_path, 1, 21, options)
    files = dicom_files(tmp_path)
    assert files
    for path in files:
        assert dciodvfy_errors(path) == [], path.name


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k", "jpeg-lossless"])
@pytest.mark.parametrize("modality", ["mg", "us"])
def test_transfer_syntax_decodes_to_the_explicit_pixels(
    syntax: TransferSyntaxName, modality: Modality, tmp_path: Path
) -> None:
    options = SynthOptions(modality=modality, transfer_syntax=syntax, tomo=modality == "mg")
    _needs_dcmcjpeg(options)
    plain = SynthOptions(modality=modality, tomo=modality == "mg")
    write_studies(tmp_path / "plain", 1, 5, plain)
    write_studies(tmp_path / syntax, 1, 5, options)
    files = dicom_files(tmp_path / "plain")
    assert files
    for path in files:
        expected = pydicom.dcmread(path)
        got = pydicom.dcmread(tmp_path / syntax / path.relative_to(tmp_path / "plain"))
        assert got.file_meta.TransferSyntaxUID.is_compressed
        assert got.SOPInstanceUID == expected.SOPInstanceUID
        assert np.array_equal(got.pixel_array, expected.pixel_array), path.name
