"""How large an image may be before it is decoded: the defence against decompression bombs.

A compressed image is small on the wire and large in memory: a 27 KB JPEG 2000 object
declaring 16384 x 16384 pixels decodes to 512 MiB, and the decoding steps around it
need several times that. :func:`check_image_size` reads the size the header declares
(Rows x Columns x Number of Frames x Samples per Pixel x bytes per sample) and, for
JPEG 2000, JPEG and JPEG-LS, the size the compressed stream itself declares (a decoder
allocates what the stream says, whatever the header says), and refuses an image over
``inference.max_image_bytes`` before a single pixel is decoded.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from node.errors import InferenceError

__all__ = ["check_image_size", "codestream_size", "declared_size"]

_MIB = 1024 * 1024


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value: Any = ds.get(keyword, default)
    if value in (None, ""):
        if default is None:
            raise InferenceError(f"the image has no {keyword}")
        value = default
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"invalid {keyword} {value!r}") from exc
    if number < 0:
        raise InferenceError(f"invalid {keyword} {number}")
    return number


def declared_size(ds: Dataset) -> tuple[int, int, int, int, int]:
    """``(rows, columns, frames, samples per pixel, bytes per sample)`` from the header.

    Raises :class:`InferenceError` for a missing or unparsable value.
    """
    bits = _int(ds, "BitsAllocated", 16)
    return (
        _int(ds, "Rows"),
        _int(ds, "Columns"),
        max(_int(ds, "NumberOfFrames", 1), 1),
        max(_int(ds, "SamplesPerPixel", 1), 1),
        max((bits + 7) // 8, 1),
    )


def codestream_size(stream: bytes) -> tuple[int, int, int, int] | None:
    """``(rows, columns, components, bytes per sample)`` a compressed image declares.

    Reads the SIZ marker of a JPEG 2000 codestream (ISO/IEC 15444-1 A.5.1, also inside
    a JP2 file) or the SOF marker of a JPEG or JPEG-LS stream (ISO/IEC 10918-1 B.2.2,
    14495-1 C.2.2). ``None`` when ``stream`` is none of these or too short to tell.
    """
    if stream.startswith(b"\x00\x00\x00\x0cjP  "):  # a JP2 file: find the codestream box
        at = stream.find(b"jp2c")
        stream = stream[at + 4 :] if at >= 0 else b""
    if stream[:4] == b"\xff\x4f\xff\x51" and len(stream) >= 43:
        x, y, x0, y0 = (int.from_bytes(stream[i : i + 4], "big") for i in (8, 12, 16, 20))
        components = int.from_bytes(stream[40:42], "big")
        precision = (stream[42] & 0x7F) + 1
        return max(y - y0, 0), max(x - x0, 0), components, (precision + 7) // 8
    if stream[:2] != b"\xff\xd8":
        return None
    at = 2
    # SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); JPEG-LS SOF55 (F7)
    frames = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}
    while at + 4 <= len(stream):
        if stream[at] != 0xFF:
            return None
        marker = stream[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(stream[at + 2 : at + 4], "big")
        if marker in frames:
            if at + 10 > len(stream):
                return None
            precision = stream[at + 4]
            rows = int.from_bytes(stream[at + 5 : at + 7], "big")
            columns = int.from_bytes(stream[at + 7 : at + 9], "big")
            return rows, columns, stream[at + 9], (precision + 7) // 8
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        at += 2 + length
    return None


def check_image_size(ds: Dataset, max_bytes: int) -> None:
    """Refuse an image that would need more than ``max_bytes`` once decoded.

    The header's size is Rows x Columns x Number of Frames x Samples per Pixel x bytes
    per sample (Bits Allocated rounded up to bytes). For encapsulated pixel data the
    first fragment's stream is read as well: a stream that declares more pixels than the
    header, or more than ``max_bytes``, is refused too, and so is one that declares 0
    lines (their number left to a DNL marker: pylibjpeg-libjpeg never returns from such a
    JPEG-LS stream, holding Python's lock). Raises :class:`InferenceError`
    naming the sizes and the setting; decodes nothing.
    """
    rows, columns, frames, samples, per_sample = declared_size(ds)
    size = rows * columns * frames * samples * per_sample
    limit = f"inference.max_image_bytes ({max_bytes} bytes, {max_bytes / _MIB:.0f} MiB)"
    if size > max_bytes:
        raise InferenceError(
            f"the image declares {rows} x {columns} pixels x {frames} frame(s) x {samples} "
            f"sample(s) x {per_sample} byte(s) = {size} bytes ({size / _MIB:.0f} MiB), "
            f"more than {limit}; not decoded"
        )
    stream = _first_fragment(ds)
    if stream is None:
        return
    found = codestream_size(stream)
    if found is None:
        return
    stream_rows, stream_columns, components, stream_bytes = found
    if stream_rows == 0:
        raise InferenceError(
            "the compressed pixel data declares 0 lines (the number of lines left to a DNL "
            "marker), which the node does not decode; not decoded"
        )
    if stream_rows > rows or stream_columns > columns:
        raise InferenceError(
            f"the compressed pixel data declares {stream_rows} x {stream_columns} pixels, "
            f"the header {rows} x {columns}; not decoded"
        )
    stream_size = stream_rows * stream_columns * frames * max(components, 1) * stream_bytes
    if stream_size > max_bytes:
        raise InferenceError(
            f"the compressed pixel data declares {stream_size} bytes "
            f"({stream_size / _MIB:.0f} MiB), more than {limit}; not decoded"
        )


def _first_fragment(ds: Dataset) -> bytes | None:
    """The first fragment of encapsulated Pixel Data (its first 64 KiB), else ``None``."""
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if syntax is None or not getattr(syntax, "is_encapsulated", False) or "PixelData" not in ds:
        return None
    try:
        items = generate_fragments(ds.PixelData)
        next(items)  # the Basic Offset Table item
        return bytes(next(items)[: 64 * 1024])
    except (StopIteration, ValueError, TypeError, AttributeError):
        return None  # the decoder will say what is wrong with it
