"""Bad input through real associations against ``breast-node serve``: a table of known
defects, each with the status it must get at C-STORE or the reason its study must end
with, and a seeded mutation fuzz of real synthetic DICOM bytes."""

from __future__ import annotations

import copy
import io
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import AE, _config
from sqlalchemy import select

from node.db import Instance, Study
from node.dicom import status
from tests.conftest import wait_until
from tests.reliability.conftest import TERMINAL, Served

pytestmark = [pytest.mark.peers, pytest.mark.slow]

MG = "1.2.840.10008.5.1.4.1.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"  # as long as MG's UID
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PIXEL_TAG = b"\xe0\x7f\x10\x00"
FUZZ_OBJECTS = 150
FUZZ_SEED = 20261121


@pytest.fixture(scope="module")
def base(synthetic: Callable[..., Path]) -> Dataset:
    """A good 'small' synthetic For Presentation mammogram."""
    return dcmread(next(synthetic(studies=1, seed=7, size="small").rglob("L-CC.dcm")))


def fresh(ds: Dataset, seed: str) -> Dataset:
    """A copy of ``ds`` with its own study, series and instance UIDs (seeded)."""
    out = copy.deepcopy(ds)
    out.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    out.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    out.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "instance"])
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def body_start(data: bytes) -> int:
    """Offset of the data set after the preamble and the file meta group."""
    (group_length,) = struct.unpack("<I", data[140:144])
    return 144 + group_length


def send_raw(port: int, folder: Path, objects: list[bytes]) -> list[int | None]:
    """C-STORE each encoded file's data set as its bytes are (no re-encoding); the status of
    each, ``None`` when there was no answer. Reassociates after an abort."""
    ae = AE(ae_title="FUZZ_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (MG, DX, BASIC_TEXT_SR):
        for syntax in (ExplicitVRLittleEndian, JPEG2000Lossless):
            ae.add_requested_context(sop_class, syntax)
    statuses: list[int | None] = []
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = None
    try:
        for index, data in enumerate(objects):
            path = folder / f"object-{index:04d}.dcm"
            path.write_bytes(data)
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", port, ae_title="BREAST_AI")
                assert assoc.is_established, "the node stopped accepting associations"
            try:
                answer = assoc.send_c_store(path)
            except (ValueError, AttributeError, RuntimeError):  # our own SCU refused it
                statuses.append(None)
                continue
            statuses.append(int(answer.Status) if "Status" in answer else None)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        if assoc is not None and assoc.is_established:
            assoc.release()
    return statuses


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


# ------------------------------------------------------------------------------- fuzz
def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of an encoded file; the file meta is left alone so the
    object can be sent under its context."""
    start, pixels = body_start(data), data.rfind(PIXEL_TAG)
    kind = rng.choice(["truncate", "flip", "overwrite", "insert", "cut-pixels"])
    out = bytearray(data)
    if kind == "truncate":
        return kind, bytes(out[: rng.randrange(start + 1, len(out) - 1)])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(start, pixels)] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":  # four bytes that, on a length field, claim absurd sizes
        at = rng.randrange(start, pixels - 4)
        out[at : at + 4] = rng.choice(
            [b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x00\x00\x10\x00"]
        )
    elif kind == "insert":
        at = rng.randrange(start, pixels)
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    else:  # a span cut out of the pixel data: shorter than its length says
        at = rng.randrange(pixels + 12, len(out) - 4096)
        del out[at : at + rng.randint(2, 4096)]
    return kind, bytes(out)


#: mutations that always leave an object no one can use; the others can hit a value that
#: nothing checks (a character of a description), so those are judged by the stored file
ALWAYS_BROKEN = {"truncate", "cut-pixels"}


def usable(path: Path) -> bool:
    """Whether a stored file reads completely and its pixels decode to Rows x Columns."""
    try:
        ds = dcmread(path)
        return bool(ds.pixel_array.shape == (ds.Rows, ds.Columns))
    except Exception:
        return False


def test_mutation_fuzz_never_crashes_leaks_or_passes_corruption(
    served: Served, base: Dataset, tmp_path: Path
) -> None:
    rng = random.Random(FUZZ_SEED)
    assert served.echo()
    time.sleep(1.0)
    fds_before = served.open_fds()
    kinds: dict[str, str] = {}
    objects = []
    for index in range(FUZZ_OBJECTS):
        ds = fresh(base, f"fuzz-{FUZZ_SEED}-{index}")
        kind, data = mutate(encode(ds), rng)
        kinds[str(ds.StudyInstanceUID)] = kind
        objects.append(data)
    answers = send_raw(served.settings.node.port, tmp_path, objects)
    assert served.alive() and served.echo()

    def settled() -> bool:
        studies = served.studies()
        return all(s.state in TERMINAL for uid, s in studies.items() if uid in kinds)

    assert wait_until(settled, timeout=180, every=0.5)
    studies = {uid: s for uid, s in served.studies().items() if uid in kinds}
    accepted = sum(1 for a in answers if a == status.SUCCESS)
    assert len(studies) <= accepted  # nothing refused was recorded
    with served.db() as session:
        rows = session.execute(
            select(Study.study_uid, Instance.path).join(Instance, Instance.study_id == Study.id)
        ).all()
    paths = {uid: served.settings.storage.spool / path for uid, path in rows if uid in kinds}
    outcomes: dict[str, int] = {}
    for uid, study in studies.items():
        outcomes[study.state] = outcomes.get(study.state, 0) + 1
        if study.state == "done":
            assert kinds[uid] not in ALWAYS_BROKEN, (kinds[uid], uid)
            assert usable(paths[uid]), (kinds[uid], uid)
        else:
            assert study.reason, (uid, study.state)
    refused = {status.describe(a or 0) for a in answers if a != status.SUCCESS}
    print(
        f"fuzz: {FUZZ_OBJECTS} objects, {accepted} accepted, refused {refused}, "
        f"studies {outcomes}, open descriptors {fds_before} -> {served.open_fds()}"
    )

    assert wait_until(lambda: served.open_fds() <= fds_before + 4, timeout=30, every=0.5), (
        fds_before,
        served.open_fds(),
    )
    assert served.alive() and served.echo()
