"""The spool's file system running out of space, on a small tmpfs of its own, against a
real ``breast-node serve`` with dcmtk ``storescu`` and pynetdicom senders: a data set
bigger than the space left, a transfer aborted half way, a full file system, and the
space coming back.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); where the tests cannot mount one they are
skipped, and ``test_storage_faults.py`` still covers the watermark on the real disk.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from node.config import Settings, load_settings
from node.dicom import status
from tests.conftest import wait_until
from tests.helpers.hostile import echo_seconds, fd_targets
from tests.helpers.node import ROOT, Node
from tests.reliability.conftest import serve_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]

MIB = 1024**2
FS_SIZE = 64 * MIB
RESERVE = 8 * MIB
MG = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    point = tmp_path / "fs"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def sized(base: Dataset, side: int, seed: str) -> Dataset:
    """``base`` with its own UIDs and a ``side`` x ``side`` 16-bit image (``2 side²`` bytes)."""
    ds = copy.deepcopy(base)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(2 * side * side)
    return ds


@pytest.fixture
def base(synthetic: Callable[..., Path]) -> Dataset:
    return dcmread(next(synthetic(studies=1, seed=7, size="small").rglob("L-CC.dcm")))


def write(ds: Dataset, folder: Path, name: str) -> Path:
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def storescu(settings: Settings, path: Path) -> str:
    """storescu's verbose output for one file (the status it got, or the abort)."""
    done = subprocess.run(
        ["storescu", "-v", "-aec", settings.node.ae_title, "127.0.0.1",
         str(settings.node.port), str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


def pynetdicom_store(settings: Settings, path: Path) -> int | None:
    """The C-STORE status pynetdicom gets for a file sent as it is (None: no answer)."""
    ae = AE(ae_title="DISK_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    ae.add_requested_context(MG, str(syntax))
    chunked, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        assoc = ae.associate("127.0.0.1", settings.node.port, ae_title=settings.node.ae_title)
        assert assoc.is_established
        answer = assoc.send_c_store(path)
        if assoc.is_established:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return int(answer.Status) if "Status" in answer else None


def free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


class Watch:
    """Samples the spool's free space and its ``tmp/`` folder every 10 ms."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.least_free = free(spool)
        self.largest_tmp = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.least_free = min(self.least_free, free(self.spool))
            sizes = []
            for entry in (self.spool / "tmp").iterdir():
                try:
                    sizes.append(entry.stat().st_size)
                except FileNotFoundError:
                    continue
            self.largest_tmp = max([self.largest_tmp, *sizes])

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def tmp_files(settings: Settings) -> list[Path]:
    return sorted((settings.storage.spool / "tmp").iterdir())


def growing(settings: Settings) -> bool:
    """Whether a data set is half received: a file in ``tmp/`` past its first MiB."""
    sizes = []
    for path in tmp_files(settings):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            continue
    return any(size > MIB for size in sizes)


@pytest.fixture
def node_on(tmp_path: Path, small_fs: Path) -> Iterator[Callable[..., tuple[Node, Settings]]]:
    """Start ``serve`` (no model) with its spool on the small file system."""
    nodes: list[Node] = []

    def start(node: dict[str, object] | None = None, **storage: object) -> tuple[Node, Settings]:
        folder = tmp_path / f"node{len(nodes)}"
        folder.mkdir()
        spool = small_fs / f"spool{len(nodes)}"
        storage = {"spool": str(spool), **storage}
        config = serve_config(folder, None, storage=storage, node=node or {})
        node = Node(config, folder / "node.log")
        node.start()
        nodes.append(node)
        return node, load_settings(config, environ={})

    yield start
    for node in nodes:
        node.stop()


def test_out_of_space_is_answered_and_leaves_nothing(
    node_on: Callable[..., tuple[Node, Settings]], base: Dataset, tmp_path: Path
) -> None:
    """With a reserve (``min_free_bytes``): a data set bigger than the space left is
    answered Out of Resources and never written past the reserve, its file removed at
    once; an aborted transfer's file is removed at once; a full file system refuses
    every C-STORE with Out of Resources (no abort, no file left); space coming back is
    enough for the next C-STORE to succeed."""
    # PDUs of 1 MiB: a data set arrives in pieces, so that it can be cut off half way
    node, settings = node_on({"max_pdu": MIB}, min_free_bytes=RESERVE, max_used_percent=100)
    assert node.proc is not None
    spool = settings.storage.spool
    small = write(sized(base, 256, "small"), tmp_path, "small")
    assert "Received Store Response (Success)" in storescu(settings, small)
    sockets = held_sockets(node.proc.pid)

    # 1. 96 MiB into the ~56 MiB left above the reserve, from storescu and from pynetdicom
    big = write(sized(base, 6928, "big"), tmp_path, "big")
    with Watch(spool) as watch:
        out = storescu(settings, big)
    print(f"96 MiB with 64 MiB: storescu: least free {watch.least_free / MIB:.1f} MiB")
    assert "Refused: OutOfResources" in out, out
    assert watch.least_free >= RESERVE - 2 * MIB
    assert not tmp_files(settings)
    with Watch(spool) as watch:
        assert pynetdicom_store(settings, big) == status.OUT_OF_RESOURCES
    print(f"96 MiB with 64 MiB: pynetdicom: least free {watch.least_free / MIB:.1f} MiB")
    assert watch.least_free >= RESERVE - 2 * MIB
    assert not tmp_files(settings)

    # 2. transfers that fit, cut off half way: their files go at once, no restart
    half = write(sized(base, 4096, "half"), tmp_path, "half")  # 32 MiB
    killed = subprocess.Popen(
        ["storescu", "-aec", settings.node.ae_title, "127.0.0.1", str(settings.node.port),
         str(half)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: growing(settings), timeout=30, every=0.01)
    killed.kill()  # the sender dies: the connection drops mid-transfer
    killed.wait(timeout=30)
    assert wait_until(lambda: not tmp_files(settings), timeout=5, every=0.05)

    aborting = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.abort_send", "127.0.0.1",
         str(settings.node.port), settings.node.ae_title, str(half)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert aborting.stdin is not None
    try:
        assert wait_until(lambda: growing(settings), timeout=30, every=0.01)
    finally:
        aborting.stdin.write(b"abort\n")  # an A-ABORT mid-transfer
        aborting.stdin.close()
        aborting.wait(timeout=30)
    assert wait_until(lambda: not tmp_files(settings), timeout=5, every=0.05)

    # 3. the file system fills (a ballast leaves less than the reserve): every C-STORE is
    #    refused with Out of Resources, from either sender, leaving no file behind
    ballast = spool / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, free(spool) - RESERVE // 2)
    finally:
        os.close(fd)
    for attempt in range(3):
        again = write(sized(base, 256, f"again-{attempt}"), tmp_path, f"again-{attempt}")
        assert "Refused: OutOfResources" in storescu(settings, again)
        assert pynetdicom_store(settings, again) == status.OUT_OF_RESOURCES
        assert not tmp_files(settings)
    assert echo_seconds(settings.node.port)[0]

    # 4. space comes back: the next C-STORE succeeds, no restart
    ballast.unlink()
    assert "Received Store Response (Success)" in storescu(settings, again)
    # no received file left open, no socket of a finished association left (the database
    # pool may open connections of its own meanwhile: they are neither)
    assert wait_until(lambda: not held_files(node.proc.pid, spool), timeout=10)
    assert wait_until(lambda: held_sockets(node.proc.pid) <= sockets, timeout=10)
    assert not tmp_files(settings)


def held_files(pid: int, spool: Path) -> list[str]:
    """The files under ``spool`` process ``pid`` holds open."""
    return [t for t in fd_targets(pid) if t.startswith(str(spool))]


def held_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds open."""
    return sum(t.startswith("socket:") for t in fd_targets(pid))


def test_a_full_file_system_without_a_watermark_is_out_of_resources(
    node_on: Callable[..., tuple[Node, Settings]], base: Dataset, tmp_path: Path
) -> None:
    """No watermark at all (``min_free_bytes: 0``, ``max_used_percent: 100``): the write
    that finds the file system full (ENOSPC) refuses the data set with Out of Resources
    instead of aborting the association, and removes what was written."""
    node, settings = node_on(min_free_bytes=0, max_used_percent=100)
    assert node.proc is not None
    big = write(sized(base, 6928, "big"), tmp_path, "big")
    out = storescu(settings, big)
    assert "Refused: OutOfResources" in out, out
    assert not tmp_files(settings)
    assert pynetdicom_store(settings, big) == status.OUT_OF_RESOURCES
    assert not tmp_files(settings)
    small = write(sized(base, 256, "small"), tmp_path, "small")
    assert "Received Store Response (Success)" in storescu(settings, small)
    assert free(settings.storage.spool) > FS_SIZE - 2 * MIB  # nothing left behind
