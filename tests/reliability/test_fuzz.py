"""A seeded mutation fuzz against ``breast-node serve``: 2,000 real synthetic mammograms,
uncompressed and in JPEG 2000, JPEG-LS and RLE, each its own study and broken one way
(:mod:`tests.helpers.mutations`: cut short, bits flipped, element lengths made absurd,
bytes inserted, pixel data cut, image dimensions contradicting the pixels, compressed
streams broken inside), sent byte for byte over a few associations.

Every object gets a DIMSE status; every study that was stored ends ``done`` (only if its
file reads whole and decodes to Rows x Columns), ``failed`` or ``skipped`` with a reason;
the node stays up and keeps accepting associations; its open descriptors come back to
where they were (no received file still open, no socket of a closed association) and
nothing is left in the spool's ``tmp/``.
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless
from sqlalchemy import select

from node.config import load_settings
from node.db import Instance, Study, open_reader
from node.dicom import status
from tests.conftest import wait_until
from tests.e2e.conftest import model_dir  # noqa: F401  (the session's tiny model)
from tests.helpers.hostile import echo_seconds, fd_targets
from tests.helpers.mutations import (
    ALWAYS_BROKEN,
    SYNTAXES,
    fresh,
    jpeg_ls_without_lines,
    mutate,
    send_raw,
)
from tests.helpers.node import Node
from tests.reliability.conftest import TERMINAL, Served, serve_config, serving

pytestmark = [pytest.mark.peers, pytest.mark.slow]

FUZZ_OBJECTS = 2000
FUZZ_SEED = 20261121
PER_ASSOCIATION = 250
#: what a C-STORE of a broken object may get: stored, or refused as not understood
EXPECTED = {status.SUCCESS, status.CANNOT_UNDERSTAND, status.DATASET_DOES_NOT_MATCH_SOP_CLASS}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:  # noqa: F811
    worker = {"batch_studies": 16, "check_interval_seconds": 0.2}
    with serving(tmp_path_factory.mktemp("fuzz"), model_dir, worker=worker) as node:
        yield node


@pytest.fixture(scope="module")
def bases(synthetic: Callable[..., Path]) -> list[Dataset]:
    """A synthetic For Presentation mammogram at a quarter of its 'small' size (128 x 104),
    in each transfer syntax the fuzz sends."""
    ds = dcmread(next(synthetic(studies=1, seed=7, size="small").rglob("L-CC.dcm")))
    half = ds.pixel_array[::4, ::4].copy()
    ds.Rows, ds.Columns = half.shape
    ds.PixelData = half.tobytes()
    out = []
    for syntax in SYNTAXES:
        copied = copy.deepcopy(ds)
        if syntax != ds.file_meta.TransferSyntaxUID:
            copied.compress(syntax)
        out.append(copied)
    return out


def usable(path: Path) -> bool:
    """Whether a stored file reads completely and its pixels decode to Rows x Columns
    (pydicom's warnings, such as a Number of Frames of 0 read as 1, are not failures)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            return bool(ds.pixel_array.shape == (ds.Rows, ds.Columns))
    except Exception:
        return False


@dataclass
class Fuzzed:
    """What the fuzz sent and what the node answered."""

    served: Served
    known: set[str]
    kinds: dict[str, str]
    answers: list[int | None]
    sockets_before: int
    seconds: float


@pytest.fixture(scope="module")
def fuzz(fuzzed: Served, bases: list[Dataset], tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    """The 2,000 mutated objects, made in memory and sent over a few associations."""
    rng = random.Random(FUZZ_SEED)
    assert fuzzed.echo()
    time.sleep(1.0)
    sockets_before = sockets(fuzzed)
    known = set(fuzzed.studies())
    kinds: dict[str, str] = {}
    objects = []
    started = time.monotonic()
    for index in range(FUZZ_OBJECTS):
        ds = fresh(bases[index % len(bases)], f"fuzz-{FUZZ_SEED}-{index}")
        kind, data = mutate(ds, rng)
        kinds[str(ds.StudyInstanceUID)] = f"{kind} {ds.file_meta.TransferSyntaxUID.name}"
        objects.append(data)
    folder = tmp_path_factory.mktemp("fuzz-objects")
    answers = send_raw(fuzzed.settings.node.port, folder, objects, per_association=PER_ASSOCIATION)
    return Fuzzed(fuzzed, known, kinds, answers, sockets_before, time.monotonic() - started)


def test_every_object_gets_a_status_and_nothing_leaks(fuzz: Fuzzed) -> None:
    """The listener's side: a DIMSE status for each object (no abort, no silence), the
    node up and accepting associations, its descriptors back where they were, nothing
    left in ``tmp/``, nothing refused recorded."""
    served = fuzz.served
    assert served.alive() and served.echo()
    unanswered = [(i, a) for i, a in enumerate(fuzz.answers) if a not in EXPECTED]
    assert not unanswered, unanswered[:10]
    accepted = sum(1 for answer in fuzz.answers if answer == status.SUCCESS)
    stored = {uid for uid in served.studies() if uid not in fuzz.known}
    assert len(stored) <= accepted
    refused = Counter(status.describe(a or 0) for a in fuzz.answers if a != status.SUCCESS)
    kinds = Counter(kind.split()[0] for kind in fuzz.kinds.values())
    print(
        f"fuzz: {FUZZ_OBJECTS} objects {dict(kinds)} sent in {fuzz.seconds:.0f} s: "
        f"{accepted} stored, refused {dict(refused)}"
    )
    # the database pool keeps the connections the load opened; a leak would be a file in
    # the spool still open, or sockets of associations long closed
    spool = str(served.settings.storage.spool)
    assert wait_until(lambda: leaks(served, spool, fuzz.sockets_before) == [], timeout=30), leaks(
        served, spool, fuzz.sockets_before
    )
    assert not list((served.settings.storage.spool / "tmp").iterdir())


def sockets(served: Served) -> int:
    return sum(1 for target in fd_targets(served.pid) if target.startswith("socket:"))


def leaks(served: Served, spool: str, sockets_before: int) -> list[str]:
    """Descriptors the listener should not hold any more: received files still open in
    ``tmp/``, and sockets beyond those it had before (plus the association in use)."""
    open_files = [t for t in fd_targets(served.pid) if t.startswith(spool + "/tmp")]
    extra = sockets(served) - sockets_before - 2
    return open_files + [f"{extra} more sockets"] * (extra > 0)


def settle(
    served: Served, known: set[str], quiet: float = 30.0, most: float = 300.0
) -> dict[str, Study]:
    """Wait until every new study is finished, or none has finished for ``quiet`` s (a
    claimed study whose worker gave up waits for its lease), or ``most`` s passed."""
    finished, since, started = -1, time.monotonic(), time.monotonic()
    while True:
        studies = {uid: s for uid, s in served.studies().items() if uid not in known}
        now_finished = sum(1 for s in studies.values() if s.state in TERMINAL)
        now = time.monotonic()
        if now_finished == len(studies) or now - started > most:
            return studies
        if now_finished != finished:
            finished, since = now_finished, now
        elif now - since > quiet:
            return studies
        time.sleep(1.0)


def test_every_stored_study_ends_with_a_result_or_a_reason(fuzz: Fuzzed) -> None:
    """The pipeline's side: every study stored ends ``done`` (only when its file reads
    whole and decodes), ``failed`` or ``skipped`` with a reason."""
    served = fuzz.served
    started = time.monotonic()
    studies = settle(served, fuzz.known)
    with served.db() as session:
        rows = session.execute(
            select(Study.study_uid, Instance.path).join(Instance, Instance.study_id == Study.id)
        ).all()
    paths = {uid: served.settings.storage.spool / path for uid, path in rows if uid in studies}
    outcomes = Counter(study.state for study in studies.values())
    print(f"fuzz: studies {dict(outcomes)}, {time.monotonic() - started:.0f} s after sending")
    unfinished = [(uid, s.state) for uid, s in studies.items() if s.state not in TERMINAL]
    assert not unfinished, unfinished[:10]
    for uid, study in studies.items():
        if study.state == "done":
            kind = fuzz.kinds.get(uid, "(a mutated Study Instance UID)")
            assert kind.split()[0] not in ALWAYS_BROKEN, (kind, uid)
            assert usable(paths[uid]), (kind, uid)
        else:
            assert study.reason, (uid, study.state)
    assert served.alive() and served.echo()


def test_an_image_whose_decoder_never_returns_does_not_silence_the_listener(
    tmp_path: Path,
    bases: list[Dataset],
    model_dir: Path,  # noqa: F811
) -> None:
    """A JPEG-LS image whose frame header declares 0 lines (found by the fuzz): once the
    worker takes it up, the listener must still answer C-ECHO, and the study fails with a
    reason that says why (before, pylibjpeg-libjpeg was tried after CharLS refused the
    stream, never returned and held the interpreter lock)."""
    config = serve_config(tmp_path, model_dir)
    settings = load_settings(config, environ={})
    node = Node(config, tmp_path / "node.log")
    node.start()
    try:
        # read without the write lock: a node stuck mid-transaction would hold it
        served = Served(node, settings, open_reader(settings.storage.database))
        ds = fresh(bases[SYNTAXES.index(JPEGLSLossless)], "no-lines")
        answers = send_raw(settings.node.port, tmp_path, [jpeg_ls_without_lines(ds)])
        assert answers == [status.SUCCESS]
        uid = str(ds.StudyInstanceUID)
        assert wait_until(
            lambda: (s := served.studies().get(uid)) is not None and s.state != "receiving",
            timeout=60,
        )
        time.sleep(2.0)  # the worker has taken it up
        ok, seconds = echo_seconds(settings.node.port, timeout=10)
        assert ok, f"no C-ECHO answer within {seconds:.0f} s"
        assert wait_until(
            lambda: (s := served.studies().get(uid)) is not None and s.state == "failed",
            timeout=60,
        )
        reason = served.studies()[uid].reason or ""
        assert "0 lines" in reason and "not decoded" in reason, reason
    finally:
        node.kill()  # a process stuck in a decoder does not stop on SIGTERM
