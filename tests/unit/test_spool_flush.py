"""Making a received file durable early: its writeback starts while it arrives, and its
fsync can run before the study's lock is taken."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

import node.spool as spool_module
from node.errors import StorageError
from node.spool import CHECK_EVERY, FILE_MODE, Spool, start_writeback

KIB = 1024


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return spool


def test_an_incoming_file_writes_back_what_it_has_as_it_grows(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every CHECK_EVERY bytes the bytes written so far, and only those, go to disk."""
    ranges: list[tuple[int, int]] = []
    real = spool_module.start_writeback

    def recording(fd: int, offset: int, length: int) -> bool:
        ranges.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(spool_module, "start_writeback", recording)
    incoming = spool.incoming()
    chunk = bytes(range(256)) * (700 * KIB // 256)  # 700 KiB, as a PDU's value might be
    written_before_each: list[int] = []
    for _ in range(8):
        written_before_each.append(incoming.written)
        incoming.write(chunk)
    incoming.close()

    assert len(ranges) >= 4  # 5.6 MB in 1 MiB steps
    offset = 0
    for start, length in ranges:  # contiguous from the start, never past what was written
        assert start == offset
        assert length > 0
        offset += length
        assert offset in written_before_each
    assert offset <= incoming.written - len(chunk)
    assert incoming.written - offset < CHECK_EVERY + len(chunk)
    assert Path(incoming.name).read_bytes() == chunk * 8


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's")
def test_writeback_reaches_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "data"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * (2 * CHECK_EVERY))
        assert start_writeback(fd, 0, 2 * CHECK_EVERY)
        assert not start_writeback(fd, -1, 10)  # EINVAL: the kernel saw the arguments
    finally:
        os.close(fd)
    assert not start_writeback(fd, 0, 10)  # EBADF: a closed descriptor is refused, quietly


def test_settle_makes_a_file_private_and_says_its_size(spool: Spool) -> None:
    source = spool.tmp / "received.dcm"
    source.write_bytes(b"\0" * 1000)
    source.chmod(0o644)
    assert spool.settle(source) == 1000
    assert stat.S_IMODE(source.stat().st_mode) == FILE_MODE
    with pytest.raises(StorageError):
        spool.settle(spool.tmp / "missing.dcm")


def test_adopt_after_settle_places_the_file(spool: Spool) -> None:
    source = spool.tmp / "received.dcm"
    source.write_bytes(b"DICM" * 250)
    size = spool.settle(source)
    relative = spool.relative_path("1.2.3", "1.2.3.4")
    assert spool.adopt(relative, source) == size == 1000
    assert not source.exists()
    assert spool.path(relative).read_bytes() == b"DICM" * 250
