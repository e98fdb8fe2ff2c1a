"""Broken DICOM objects for the bad-input tests and the fuzz: encoding, seeded mutations of
the encoded bytes (header, element lengths, pixel-data dimensions, compressed streams),
and a sender that C-STOREs the bytes exactly as they are."""

from __future__ import annotations

import copy
import io
import random
import struct
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config

__all__ = [
    "ALWAYS_BROKEN",
    "COMPRESSED",
    "MUTATIONS",
    "PIXEL_TAG",
    "SYNTAXES",
    "body_start",
    "encode",
    "fresh",
    "jpeg_ls_without_lines",
    "mutate",
    "send_raw",
]

MG = "1.2.840.10008.5.1.4.1.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PIXEL_TAG = b"\xe0\x7f\x10\x00"
ITEM = b"\xfe\xff\x00\xe0"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
SYNTAXES = (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless)
COMPRESSED = frozenset(str(uid) for uid in SYNTAXES[1:])
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}  # fmt: skip
#: the largest side a mutated compressed stream may declare: big enough to be wrong,
#: small enough that a decoder trusting it allocates tens of MB, not gigabytes
LARGEST_SIDE = 4096


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


def length_fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(offset, size, value) of the length field of each top-level element of an explicit
    VR little endian data set from ``start`` to ``end``."""
    fields = []
    position = start
    while position + 8 <= end:
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            at, size, header = position + 8, 4, 12
        else:
            at, size, header = position + 6, 2, 8
        value = int.from_bytes(data[at : at + size], "little")
        fields.append((at, size, value))
        if value == 0xFFFFFFFF:  # a sequence of undefined length: skip to its end
            close = data.find(SEQUENCE_END, position)
            if close < 0:
                break
            position = close + len(SEQUENCE_END)
        else:
            position += header + value
    return fields


def _absurd(rng: random.Random, size: int, value: int, total: int) -> int:
    choices = [0, 1, value + 1, max(value - 1, 0), value * 2 + 1, total, rng.randrange(1 << 16)]
    choices += [0xFFFF] if size == 2 else [0xFFFFFFFF, 0x7FFFFFFF, 0x00100000, total * 16]
    return rng.choice(choices) & ((1 << (8 * size)) - 1)


# ------------------------------------------------------------------ on the data set
def _dimensions(ds: Dataset, rng: random.Random) -> None:
    """One to three image attributes set to values that contradict the pixel data."""
    compressed = str(ds.file_meta.TransferSyntaxUID) in COMPRESSED
    side = (0, 1, 3, ds.Rows * 2 + 1, LARGEST_SIDE if compressed else 65535)
    values: dict[str, tuple[object, ...]] = {
        "Rows": side,
        "Columns": side,
        "BitsAllocated": (0, 1, 8, 12, 32, 64),
        "BitsStored": (0, 1, 17, 40),
        "HighBit": (0, 16, 40),
        "SamplesPerPixel": (0, 2, 3, 4),
        "PixelRepresentation": (1, 2),
        "NumberOfFrames": ("0", "2", "-1", "100000"),
        "PhotometricInterpretation": ("RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME"),
        "PlanarConfiguration": (1, 2),
    }
    for keyword in rng.sample(sorted(values), rng.randint(1, 3)):
        setattr(ds, keyword, rng.choice(values[keyword]))


# ------------------------------------------------------------------ on the bytes
def _truncate(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    return data[: rng.randrange(start + 1, len(data) - 1)]


def _flip(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(start, pixels)] ^= 1 << rng.randrange(8)
    return data


def _length(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    """An element's length field (the pixel data's included) set to an absurd value."""
    at, size, value = rng.choice(length_fields(bytes(data), start, len(data)))
    data[at : at + size] = _absurd(rng, size, value, len(data)).to_bytes(size, "little")
    return data


def _insert(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    at = rng.randrange(start, pixels)
    data[at:at] = rng.randbytes(rng.randint(1, 64))
    return data


def _cut_pixels(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    """A span cut out of the pixel data: shorter than its length says."""
    at = rng.randrange(pixels + 12, len(data) - 4096)
    del data[at : at + rng.randint(2, 4096)]
    return data


def _stream(data: bytearray, start: int, pixels: int, rng: random.Random) -> bytearray:
    """A compressed stream broken inside its encapsulation: bits flipped, cut short, an
    item length or the declared image size changed, the delimiter dropped, noise."""
    first = data.find(ITEM, pixels)  # the Basic Offset Table, then the fragment
    item = data.find(ITEM, first + 8 + int.from_bytes(data[first + 4 : first + 8], "little"))
    length = int.from_bytes(data[item + 4 : item + 8], "little")
    body = item + 8
    how = rng.choice(["flip", "cut", "item-length", "size", "no-delimiter", "noise", "table"])
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(body, body + length)] ^= 1 << rng.randrange(8)
    elif how == "cut":  # the fragment shorter than its item says
        del data[body + rng.randrange(length) : body + length]
    elif how == "item-length":
        data[item + 4 : item + 8] = _absurd(rng, 4, length, len(data)).to_bytes(4, "little")
    elif how == "size":
        _declared_size(data, body, length, rng)
    elif how == "no-delimiter":
        end = data.rfind(SEQUENCE_END)
        del data[end:]
    elif how == "noise":
        data[body : body + length] = rng.randbytes(length)
    else:  # offsets that point anywhere
        data[first + 4 : first + 8] = (4).to_bytes(4, "little")
        data[first + 8 : first + 8] = rng.randbytes(4)
    return data


def _declared_size(data: bytearray, body: int, length: int, rng: random.Random) -> None:
    """The image size the codestream itself declares (JPEG 2000 SIZ, JPEG-LS SOF55, or
    the RLE header's segment table), changed."""
    sides = (0, 1, 7, LARGEST_SIDE)
    siz = data.find(b"\xff\x51", body, body + length)
    sof = data.find(b"\xff\xf7", body, body + length)
    if siz >= 0:  # Lsiz, Rsiz, then Xsiz and Ysiz (32-bit big-endian)
        at = siz + 6 + 4 * rng.randrange(2)
        data[at : at + 4] = rng.choice(sides).to_bytes(4, "big")
    elif sof >= 0:  # Lf, P, then Y and X (16-bit big-endian)
        at = sof + 5 + 2 * rng.randrange(2)
        data[at : at + 2] = rng.choice(sides).to_bytes(2, "big")
    else:  # RLE: the number of segments, then their offsets
        at = body + 4 * rng.randrange(16)
        data[at : at + 4] = rng.choice([0, 15, 16, length * 2, 0xFFFFFFFF]).to_bytes(4, "little")


Mutation = Callable[[bytearray, int, int, random.Random], bytearray]

#: kind -> (mutation of the bytes, or None for one made on the data set; for which bases)
MUTATIONS: dict[str, tuple[Mutation | None, str]] = {
    "truncate": (_truncate, "any"),
    "flip": (_flip, "any"),
    "length": (_length, "any"),
    "insert": (_insert, "any"),
    "cut-pixels": (_cut_pixels, "native"),
    "dimensions": (None, "any"),
    "stream": (_stream, "compressed"),
}
#: mutations that always leave an object no one can use; the others can hit a value that
#: nothing checks (a character of a description), so those are judged by the stored file
ALWAYS_BROKEN = frozenset({"truncate", "cut-pixels"})


def mutate(ds: Dataset, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of ``ds`` (which has its own UIDs): its kind and the bytes. The
    file meta is left alone, so the object can be sent under its context."""
    compressed = str(ds.file_meta.TransferSyntaxUID) in COMPRESSED
    kinds = [
        kind
        for kind, (_, bases) in MUTATIONS.items()
        if bases == "any" or (bases == "compressed") == compressed
    ]
    kind = rng.choice(kinds)
    change, _ = MUTATIONS[kind]
    if change is None:
        _dimensions(ds, rng)
        return kind, encode(ds)
    data = encode(ds)
    return kind, bytes(change(bytearray(data), body_start(data), data.rfind(PIXEL_TAG), rng))


def send_raw(
    port: int, folder: Path, objects: list[bytes], *, per_association: int = 0
) -> list[int | None]:
    """C-STORE each encoded file's data set as its bytes are (no re-encoding); the status
    of each, ``None`` when there was no answer. A new association every
    ``per_association`` objects (0: only after an abort)."""
    ae = AE(ae_title="FUZZ_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (MG, DX, BASIC_TEXT_SR):
        for syntax in SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    statuses: list[int | None] = []
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    path = folder / "object.dcm"
    assoc = None
    try:
        for index, data in enumerate(objects):
            path.write_bytes(data)
            renew = per_association and index and index % per_association == 0
            if assoc is not None and assoc.is_established and renew:
                assoc.release()
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


def jpeg_ls_without_lines(ds: Dataset) -> bytes:
    """``ds`` (JPEG-LS) with its frame header declaring 0 lines, as a stream whose number
    of lines follows in a DNL marker would; the encoded file."""
    data = bytearray(encode(ds))
    sof = data.find(b"\xff\xf7", data.rfind(PIXEL_TAG))
    data[sof + 5 : sof + 7] = b"\x00\x00"
    return bytes(data)
