"""One bad image fails only its own study: against ``breast-node serve`` and
``breast-node worker`` as real processes, with real decoding processes killed by signal
and a real decompression bomb (a JPEG 2000 stream of a few hundred bytes declaring
16384 x 16384 pixels)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openjpeg
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from node.config import Settings, load_settings
from node.db import SessionFactory, Study, open_database
from node.dicom import status
from tests.conftest import wait_until
from tests.helpers.node import Node, Worker, healthz
from tests.reliability.conftest import TERMINAL, serve_config
from tests.reliability.test_bad_input import encode, fresh, send_raw

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BOMB_SIDE = 16384


class Running:
    """A ``serve`` subprocess, its settings and its database."""

    def __init__(self, folder: Path, model: Path, **sections: dict[str, Any]) -> None:
        self.config = serve_config(folder, model, **sections)
        self.settings: Settings = load_settings(self.config, environ={})
        self.node = Node(self.config, folder / "node.log")
        self.db: SessionFactory | None = None

    def start(self) -> None:
        self.node.start()
        self.db = open_database(self.settings.storage.database)

    def stop(self) -> None:
        self.node.stop()
        if self.db is not None:
            self.db.kw["bind"].dispose()

    @property
    def pid(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid

    def studies(self) -> dict[str, tuple[str, str | None]]:
        assert self.db is not None
        with self.db() as session:
            return {s.study_uid: (s.state, s.reason) for s in session.query(Study)}

    def wait_terminal(
        self, uids: list[str], timeout: float = 180
    ) -> dict[str, tuple[str, str | None]]:
        assert wait_until(
            lambda: all(self.studies().get(u, ("",))[0] in TERMINAL for u in uids),
            timeout=timeout,
            every=0.2,
        ), self.studies()
        return self.studies()

    def health(self) -> tuple[int, dict[str, Any]]:
        return healthz(self.settings.http.port)

    def output_files(self, study_uid: str) -> list[Path]:
        folder = self.config.parent / "var" / "out" / study_uid
        return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


@pytest.fixture
def running(tmp_path: Path, model_dir: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(**sections: dict[str, Any]) -> Running:
        folder = tmp_path / f"node{len(started)}"
        folder.mkdir()
        node = Running(folder, model_dir, **sections)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.stop()


def unparsable_rescale_slope(ds: Dataset) -> bytes:
    """The image with Rescale Slope ``x!x``: a DS value that is not a number."""
    ds.RescaleSlope, ds.RescaleIntercept = "1.5", "0"
    data = encode(ds)
    assert data.count(b"1.5 ") == 1
    return data.replace(b"1.5 ", b"x!x ")


def test_an_unreadable_image_fails_its_own_study_not_its_batch_neighbours(
    running: Callable[..., Running], base: Dataset, tmp_path: Path
) -> None:
    """Four studies claimed in one batch by a worker process; one image's Rescale Slope
    is not a number. Before, a ValueError escaped the per-image handling and all four
    failed with "internal error preparing images"."""
    node = running(worker={"enabled": False, "batch_studies": 4})
    datasets = [fresh(base, f"isolation-{index}") for index in range(4)]
    objects = [encode(ds) for ds in datasets]
    bad = datasets[2]
    objects[2] = unparsable_rescale_slope(fresh(base, "isolation-2"))
    assert send_raw(node.settings.node.port, tmp_path, objects) == [status.SUCCESS] * 4
    uids = [str(ds.StudyInstanceUID) for ds in datasets]
    assert wait_until(
        lambda: all(node.studies().get(u, ("",))[0] == "queued" for u in uids), timeout=60
    ), node.studies()

    worker = Worker(node.config, tmp_path / "worker.log")  # claims all four at once
    try:
        studies = node.wait_terminal(uids)
    finally:
        assert worker.stop() == 0

    neighbours = [studies[str(ds.StudyInstanceUID)] for ds in datasets if ds is not bad]
    assert neighbours == [("done", None)] * 3, neighbours
    state, reason = studies[str(bad.StudyInstanceUID)]
    assert state == "failed" and reason is not None
    assert str(bad.SOPInstanceUID) in reason and "RescaleSlope" in reason, reason
    log = (tmp_path / "worker.log").read_text()
    assert '"inference.prepare_crashed"' not in log
    # the failed study still told the archive why
    (report,) = node.output_files(str(bad.StudyInstanceUID))
    assert b"RescaleSlope" in report.read_bytes()


def decode_processes_of(pid: int) -> list[int]:
    """The spawned decoding processes among ``pid``'s children (not the resource tracker)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [
        child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_a_dead_decoding_process_is_replaced_and_healthz_says_so(
    running: Callable[..., Running], base: Dataset, tmp_path: Path
) -> None:
    """Before, a killed decoding process broke the pool for good: every later study failed
    with BrokenProcessPool, and /healthz said ok throughout."""
    node = running(inference={"decode_processes": 1})

    def infer(seed: str) -> tuple[str, str | None]:
        ds = fresh(base, seed)
        assert send_raw(node.settings.node.port, tmp_path, [encode(ds)]) == [status.SUCCESS]
        uid = str(ds.StudyInstanceUID)
        return node.wait_terminal([uid])[uid]

    def kill_decoder() -> int:
        (decoder,) = decode_processes_of(node.pid)
        os.kill(decoder, signal.SIGKILL)  # what the OOM killer or a crashing codec does
        return decoder

    def decoders_check() -> tuple[int, dict[str, Any]]:
        code, health = node.health()
        return code, health["checks"].get("decoders", {"ok": None, "detail": ""})

    assert infer("decoders-1") == ("done", None)
    first = kill_decoder()
    assert infer("decoders-2") == ("done", None)  # the pool was replaced, the study retried
    code, check = decoders_check()
    assert code == 200 and check["ok"] and "replaced 1 time" in check["detail"], check

    kill_decoder()  # now with nothing queued: /healthz tells until the pool is replaced
    assert wait_until(lambda: decoders_check()[0] == 503, timeout=30), decoders_check()
    assert decoders_check()[1]["ok"] is False
    assert infer("decoders-3") == ("done", None)
    code, check = decoders_check()
    assert code == 200 and "replaced 2 time" in check["detail"], check
    assert decode_processes_of(node.pid) not in ([], [first])


@pytest.fixture(scope="module")
def bomb_stream() -> bytes:
    """A lossless JPEG 2000 stream of 16384 x 16384 12-bit zeros: under 1 KB, 512 MiB
    once decoded."""
    pixels = np.zeros((BOMB_SIDE, BOMB_SIDE), dtype=np.uint16)
    stream = bytes(openjpeg.encode(pixels, bits_stored=12, photometric_interpretation=2))
    del pixels
    return stream


def bomb(base: Dataset, seed: str, stream: bytes) -> Dataset:
    ds = fresh(base, seed)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.Rows = ds.Columns = BOMB_SIDE
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return ds


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_decompression_bomb_fails_its_study_before_anything_is_decoded(
    running: Callable[..., Running], base: Dataset, bomb_stream: bytes, tmp_path: Path
) -> None:
    """Before, a few hundred bytes declaring 16384 x 16384 were decoded inside the
    listener's process (``decode_processes: 0``), its peak memory rising by gigabytes."""
    node = running()  # decode_processes: 0, the default: decoding in the listener's process
    warm = fresh(base, "bomb-warm-up")  # the first study loads the codecs and the model
    assert send_raw(node.settings.node.port, tmp_path, [encode(warm)]) == [status.SUCCESS]
    node.wait_terminal([str(warm.StudyInstanceUID)])
    before = peak_rss_mib(node.pid)

    ds = bomb(base, "bomb", bomb_stream)
    data = encode(ds)
    assert len(data) < 64 * 1024
    assert send_raw(node.settings.node.port, tmp_path, [data]) == [status.SUCCESS]
    uid = str(ds.StudyInstanceUID)
    state, reason = node.wait_terminal([uid])[uid]
    after = peak_rss_mib(node.pid)
    print(f"bomb: {len(data)} bytes; serve peak RSS {before:.0f} -> {after:.0f} MiB")
    assert state == "failed" and reason is not None
    assert "inference.max_image_bytes" in reason and str(ds.SOPInstanceUID) in reason, reason
    assert after - before < 100, (before, after)
    assert node.output_files(uid), "the failure report was not delivered"
