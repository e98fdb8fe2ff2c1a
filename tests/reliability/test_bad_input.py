"""Bad input through real associations against ``breast-node serve``: a table of known
defects, each with the status it must get at C-STORE or the reason its study must end
with. The seeded mutation fuzz is in ``test_fuzz.py``."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from node.dicom import status
from tests.conftest import wait_until
from tests.helpers.mutations import PIXEL_TAG, body_start, encode, fresh, send_raw
from tests.reliability.conftest import TERMINAL, Served

pytestmark = [pytest.mark.peers, pytest.mark.slow]

MG = "1.2.840.10008.5.1.4.1.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"  # as long as MG's UID
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@pytest.fixture(scope="module")
def base(synthetic: Callable[..., Path]) -> Dataset:
    """A good 'small' synthetic For Presentation mammogram."""
    return dcmread(next(synthetic(studies=1, seed=7, size="small").rglob("L-CC.dcm")))


# ------------------------------------------------------------------ table of defects
def truncated_header(ds: Dataset) -> bytes:
    data = encode(ds)
    start = body_start(data)
    return data[: start + (data.rfind(PIXEL_TAG) - start) // 2]


def truncated_pixels(ds: Dataset) -> bytes:
    data = encode(ds)
    return data[: data.rfind(PIXEL_TAG) + 12 + len(ds.PixelData) // 3]


def absurd_length(ds: Dataset) -> bytes:
    ds.InstitutionName = "HOSPITAL"
    data = bytearray(encode(ds))
    at = data.find(b"\x08\x00\x80\x00LO")  # InstitutionName, explicit VR, 2-byte length
    data[at + 6 : at + 8] = b"\xff\xff"
    return bytes(data)


def wrong_vr(ds: Dataset) -> bytes:
    data = bytearray(encode(ds))
    at = data.find(b"\x20\x00\x0d\x00UI")  # Study Instance UID claimed to be a sequence
    length = struct.unpack("<H", data[at + 6 : at + 8])[0]
    data[at : at + 8 + length] = (
        b"\x20\x00\x0d\x00SQ\x00\x00"
        + struct.pack("<I", length)
        + bytes(data[at + 8 : at + 8 + length])
    )
    return bytes(data)


def missing_study_uid(ds: Dataset) -> bytes:
    del ds.StudyInstanceUID
    return encode(ds)


def mismatched_sop_class(ds: Dataset) -> bytes:
    ds.SOPClassUID = DX
    data = encode(ds)
    start = body_start(data)  # the file meta, and so the command, says mammography
    return data[:start].replace(DX.encode(), MG.encode()) + data[start:]


def bad_number_of_frames(ds: Dataset) -> bytes:
    ds.NumberOfFrames = "1"
    data = bytearray(encode(ds))
    at = data.find(b"\x28\x00\x08\x00IS")
    data[at + 8 : at + 10] = b"x!"
    return bytes(data)


def non_image(ds: Dataset) -> bytes:
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    sr.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber"):
        setattr(sr, keyword, ds.get(keyword))
    sr.SOPClassUID = BASIC_TEXT_SR
    sr.Modality = "SR"
    return encode(sr)


def no_laterality_or_view(ds: Dataset) -> bytes:
    for keyword in ("ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    return encode(ds)


def wrong_photometric(ds: Dataset) -> bytes:
    ds.PhotometricInterpretation = "RGB"  # one sample per pixel says otherwise
    return encode(ds)


def undecodable_pixels(ds: Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([random.Random(3).randbytes(4096)])
    ds["PixelData"].VR = "OB"
    return encode(ds)


CASES: list[tuple[str, Callable[[Dataset], bytes], int | None, str | None, str | None]] = [
    # name, defect, C-STORE status, else (final study state, words in its reason)
    ("truncated header", truncated_header, status.CANNOT_UNDERSTAND, None, None),
    ("absurd length", absurd_length, status.CANNOT_UNDERSTAND, None, None),
    ("wrong VR", wrong_vr, status.CANNOT_UNDERSTAND, None, None),
    ("bad IS value", bad_number_of_frames, status.CANNOT_UNDERSTAND, None, None),
    ("missing UID", missing_study_uid, status.DATASET_DOES_NOT_MATCH_SOP_CLASS, None, None),
    (
        "mismatched SOP class",
        mismatched_sop_class,
        status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        None,
        None,
    ),
    ("non-image object", non_image, status.SUCCESS, "skipped", "no breast images"),
    ("truncated pixel data", truncated_pixels, status.SUCCESS, "failed", "pixel data"),
    (
        "pixel data that does not decode",
        undecodable_pixels,
        status.SUCCESS,
        "failed",
        "cannot decode pixel data",
    ),
    (
        "wrong photometric interpretation",
        wrong_photometric,
        status.SUCCESS,
        "failed",
        "photometric",
    ),
    # laterality is then read from the image (where the breast lies), the view is optional
    ("no laterality or view", no_laterality_or_view, status.SUCCESS, "done", None),
]


@pytest.mark.parametrize(
    ("defect", "expected_status", "state", "reason"),
    [
        pytest.param(defect, code, state, reason, id=name)
        for name, defect, code, state, reason in CASES
    ],
)
def test_defect_gets_its_status_or_reason(
    served: Served,
    base: Dataset,
    tmp_path: Path,
    defect: Callable[[Dataset], bytes],
    expected_status: int,
    state: str | None,
    reason: str | None,
) -> None:
    ds = fresh(base, defect.__name__)
    (answer,) = send_raw(served.settings.node.port, tmp_path, [defect(ds)])
    assert answer == expected_status, status.describe(answer or 0)
    if state is None:
        assert str(ds.get("StudyInstanceUID")) not in served.studies()
    else:
        uid = str(ds.StudyInstanceUID)
        assert wait_until(
            lambda: (s := served.studies().get(uid)) is not None and s.state in TERMINAL,
            timeout=120,
            every=0.2,
        )
        study = served.studies()[uid]
        assert study.state == state, study.reason
        if reason is not None:
            assert study.reason is not None and reason in study.reason.lower()
    assert served.alive() and served.echo()
