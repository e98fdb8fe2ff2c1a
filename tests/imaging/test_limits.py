"""The largest image decoded: sizes read from the header and from real compressed streams
(made by the codecs the node decodes with), refused before any pixel is decoded."""

from __future__ import annotations

import io

import jpeg_ls
import numpy as np
import openjpeg
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

from node.errors import InferenceError
from node.imaging.limits import check_image_size, codestream_size, declared_size

MIB = 1024 * 1024


def jpeg2000(rows: int, columns: int) -> bytes:
    return bytes(openjpeg.encode(np.zeros((rows, columns), np.uint16), bits_stored=12))


def jpegls(rows: int, columns: int) -> bytes:
    pixels = np.zeros((rows, columns), np.uint16)
    pixels[0, 0] = 4095  # 12 bits per sample
    return bytes(jpeg_ls.encode(pixels))


def jpeg(rows: int, columns: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((rows, columns, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def image(rows: int, columns: int, *, stream: bytes | None = None, syntax: str = "") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = rows, columns, 16, 1
    if stream is not None:
        ds.PixelData = encapsulate([stream])
    return ds


def test_each_codec_stream_says_its_size() -> None:
    assert codestream_size(jpeg2000(80, 48)) == (80, 48, 1, 2)
    assert codestream_size(jpegls(33, 65)) == (33, 65, 1, 2)
    assert codestream_size(jpeg(30, 70)) == (30, 70, 3, 1)
    assert codestream_size(b"not a stream") is None
    assert codestream_size(b"\xff\xd8\xff") is None  # cut short


def test_the_header_size_is_rows_columns_frames_samples_and_bytes() -> None:
    ds = image(100, 50)
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.BitsAllocated = 3, 3, 8
    assert declared_size(ds) == (100, 50, 3, 3, 1)
    check_image_size(ds, 100 * 50 * 3 * 3)
    with pytest.raises(InferenceError, match=r"inference\.max_image_bytes"):
        check_image_size(ds, 100 * 50 * 3 * 3 - 1)


def test_a_bomb_is_refused_from_its_header() -> None:
    ds = image(16384, 16384, stream=jpeg2000(64, 64), syntax=JPEG2000Lossless)
    with pytest.raises(InferenceError) as caught:
        check_image_size(ds, 256 * MIB)
    assert "16384 x 16384" in str(caught.value) and "512 MiB" in str(caught.value)


@pytest.mark.parametrize(
    ("make", "syntax"),
    [(jpeg2000, JPEG2000Lossless), (jpegls, JPEGLSLossless)],
    ids=["jpeg2000", "jpeg-ls"],
)
def test_a_stream_larger_than_its_header_is_refused(make: object, syntax: str) -> None:
    """A decoder allocates what the stream declares, whatever the header says."""
    stream = make(512, 256)  # type: ignore[operator]
    check_image_size(image(512, 256, stream=stream, syntax=syntax), 256 * MIB)
    with pytest.raises(InferenceError, match="compressed pixel data declares 512 x 256"):
        check_image_size(image(64, 64, stream=stream, syntax=syntax), 256 * MIB)


def test_a_colour_jpeg_counts_its_components() -> None:
    stream = jpeg(1024, 1024)
    ds = image(1024, 1024, stream=stream, syntax=JPEGBaseline8Bit)
    ds.BitsAllocated = 8
    check_image_size(ds, 3 * MIB)
    with pytest.raises(InferenceError, match="compressed pixel data declares 3145728 bytes"):
        check_image_size(ds, 2 * MIB)


@pytest.mark.parametrize("value", ["", "x", "-5"])
def test_unparsable_dimensions_are_named(value: str) -> None:
    ds = image(10, 10)
    ds.Rows = None
    if value:
        ds["Rows"].VR = "US"
        ds["Rows"]._value = value  # as a broken file would carry it
    with pytest.raises(InferenceError, match="Rows"):
        check_image_size(ds, MIB)
