"""The pipelined worker: the next batch is claimed and decoded while the current one is
inferred, gives the same results as the plain worker, and gives prefetched studies back
to the queue when it closes. And the hand-over between stages (:class:`node.jobs.Wake`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from sqlalchemy import select

from node.config import Settings
from node.db import Result, SessionFactory, Study, open_database, utcnow
from node.imaging.geometry import Geometry
from node.inference.engine import ImageInput, InferenceEngine, StudyInferenceError, StudyInput
from node.jobs import Wake
from node.outputs import build_outputs
from node.pipeline.completion import complete_due_studies
from node.pipeline.worker import InferenceWorker
from node.results import StudyResult
from node.spool import Spool
from tests.conftest import wait_until
from tests.helpers.models import write_random_model_folder
from tests.helpers.spool import receive


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model_folder(tmp_path_factory.mktemp("model") / "tiny", seed=3)


@pytest.fixture(scope="module")
def engine(model_folder: Path) -> InferenceEngine:
    settings = Settings.model_validate({"inference": {"device": "cpu", "tta": "none"}})
    return InferenceEngine.load(model_folder, settings.inference)


@pytest.fixture(scope="module")
def three_studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from training.synthetic import SynthOptions, write_studies

    out = tmp_path_factory.mktemp("studies")
    write_studies(out, studies=3, seed=23, options=SynthOptions(size="small"))
    return sorted(out.rglob("*.dcm"))


@dataclasses.dataclass
class Queue:
    db: SessionFactory
    spool: Spool
    settings: Settings

    def states(self) -> dict[str, tuple[str, str | None]]:
        with self.db() as session:
            return {s.study_uid: (s.state, s.claimed_by) for s in session.scalars(select(Study))}

    def scores(self) -> dict[str, list[float | None]]:
        with self.db() as session:
            rows = session.execute(select(Study.study_uid, Result.score).join(Result)).all()
        found: dict[str, list[float | None]] = {}
        for uid, score in rows:
            found.setdefault(uid, []).append(score)
        return found


@pytest.fixture
def queue(tmp_path: Path) -> Callable[..., Queue]:
    """A database and spool holding the three studies, complete and queued."""
    made = 0

    def make(files: list[Path], **worker: object) -> Queue:
        nonlocal made
        made += 1
        root = tmp_path / f"q{made}"
        settings = Settings.model_validate(
            {
                "storage": {"database": f"sqlite:///{root}/node.db", "spool": root / "spool"},
                "model": None,
                "destinations": [{"name": "drop", "folder": root / "drop"}],
                "inference": {"device": "cpu", "tta": "none"},
                "outputs": {"objects": ["sr"]},
                "worker": {"batch_studies": 1, **worker},
            }
        )
        spool = Spool(settings.storage.spool)
        spool.prepare()
        db = open_database(settings.storage.database)
        for path in files:
            receive(spool, db, path)
        later = utcnow() + timedelta(hours=1)
        complete_due_studies(db, settings.completion, settings.eligibility.rules, now=later)
        return Queue(db, spool, settings)

    return make


@pytest.fixture
def workers() -> Iterator[list[InferenceWorker]]:
    made: list[InferenceWorker] = []
    yield made
    for worker in made:
        worker.close()


def test_pipelined_worker_prefetches_and_matches_the_plain_worker(
    queue: Callable[..., Queue],
    engine: InferenceEngine,
    three_studies: list[Path],
    workers: list[InferenceWorker],
) -> None:
    piped = queue(three_studies, pipeline=True)
    plain = queue(three_studies, pipeline=False)
    w_piped = InferenceWorker(piped.settings, piped.db, piped.spool, engine, "piped")
    w_plain = InferenceWorker(plain.settings, plain.db, plain.spool, engine, "plain")
    workers += [w_piped, w_plain]

    assert w_piped.step() == 1
    # while the first study was inferred, the second was claimed (and decoded) ahead
    assert wait_until(
        lambda: (
            sorted(state for state, _ in piped.states().values())
            == ["processing", "queued", "sending"]
        ),
        timeout=30,
    ), piped.states()
    assert w_plain.step() == 1
    assert sorted(state for state, _ in plain.states().values()) == [
        "queued",
        "queued",
        "sending",
    ]

    while w_piped.step():
        pass
    while w_plain.step():
        pass
    for q in (piped, plain):
        assert {state for state, _ in q.states().values()} == {"sending"}
    # one result per study, the same scores either way
    assert piped.scores() == plain.scores()
    assert all(len(scores) == 1 for scores in piped.scores().values())


def test_close_gives_prefetched_studies_back(
    queue: Callable[..., Queue],
    engine: InferenceEngine,
    three_studies: list[Path],
    workers: list[InferenceWorker],
) -> None:
    q = queue(three_studies[:8], pipeline=True)  # two studies
    first = InferenceWorker(q.settings, q.db, q.spool, engine, "first")
    workers.append(first)
    assert first.step() == 1
    assert wait_until(lambda: ("processing", "first") in q.states().values(), timeout=30)

    first.close()
    assert sorted(q.states().values()) == [("queued", None), ("sending", None)]
    # another worker takes it at once: no lease had to expire
    second = InferenceWorker(q.settings, q.db, q.spool, engine, "second")
    workers.append(second)
    assert second.step() == 1
    assert sorted(state for state, _ in q.states().values()) == ["sending", "sending"]


def test_a_wake_starts_an_idle_job_and_repeats_a_running_one() -> None:
    wake = Wake()
    started: list[int] = []
    wake()  # not bound yet: nothing to start, no error
    wake.bind(lambda: started.append(1))
    wake()
    assert started == [1]

    runs: list[int] = []

    def body() -> int:
        runs.append(1)
        if len(runs) == 1:
            wake()  # work handed over while the job runs
        return 1

    assert wake.run(body) == 2
    assert started == [1]  # it ran again itself instead of being started anew
    assert wake.run(body) == 1
    wake()
    assert started == [1, 1]


def test_a_failing_body_leaves_the_wake_usable() -> None:
    wake = Wake()
    started: list[int] = []
    wake.bind(lambda: started.append(1))

    def boom() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        wake.run(boom)
    wake()
    assert started == [1]


def test_warm_up_runs_the_model_and_leaves_results_unchanged(
    engine: InferenceEngine, three_studies: list[Path]
) -> None:
    study = _study_input(three_studies[:4])
    before = engine.infer_studies([study])[0]
    assert engine.warm_up() > 0
    after = engine.infer_studies([study])[0]
    assert [i.probability for i in after.images] == [i.probability for i in before.images]


def _study_input(files: list[Path]) -> StudyInput:
    return StudyInput(
        str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID),
        tuple(
            ImageInput(f, str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID))
            for f in files
        ),
    )


@pytest.mark.parametrize("sc_size", [256, 0])
def test_pictures_drawn_on_the_display_copy_match_decoding_the_source_again(
    engine: InferenceEngine, model_folder: Path, three_studies: list[Path], sc_size: int
) -> None:
    """The engine keeps a display copy from preprocessing so the secondary capture
    needs no second decode; the picture is the same as one drawn from the source."""
    files = three_studies[:4]
    study = _study_input(files)
    settings = Settings.model_validate({"outputs": {"objects": ["sc"], "sc_size": sc_size}})
    plain = engine.infer_studies([study])[0]
    assert all(image.display is None for image in plain.images)
    keeping = InferenceEngine.load(model_folder, engine.settings, display_size=sc_size)
    with_display = keeping.infer_studies([study])[0]
    for image in with_display.images:
        assert image.display is not None
        rows, cols = image.geometry.original_shape
        expected = (rows, cols) if sc_size == 0 else None
        assert max(image.display.shape) == (max(rows, cols) if sc_size == 0 else sc_size)
        assert expected is None or image.display.shape == expected

    decoded = build_outputs(plain, [pydicom.dcmread(f) for f in files], settings.outputs)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    reused = build_outputs(with_display, headers, settings.outputs)
    assert len(decoded) == len(reused) == 4
    for a, b in zip(decoded, reused, strict=True):
        x = a.dataset.pixel_array.astype(np.int16)
        y = b.dataset.pixel_array.astype(np.int16)
        assert x.shape == y.shape
        difference = np.abs(x - y)
        assert difference.mean() < 0.5 and difference.max() <= 16, (
            difference.mean(),
            difference.max(),
        )


def test_a_map_onto_a_reduced_grid_samples_the_map_onto_the_original() -> None:
    rng = np.random.default_rng(5)
    geometry = Geometry(
        original_shape=(400, 300),
        crop=(20, 30, 380, 260),
        flipped=True,
        resized_shape=(100, 64),
        pad=(0, 0),
        input_shape=(128, 64),
    )
    heatmap = ndimage.gaussian_filter(rng.random((16, 8)).astype(np.float32), 1.0)
    full = geometry.map_to_original(heatmap)
    half = geometry.map_to_grid(heatmap, (200, 150))
    # a half-size cell's centre lies between two original pixel centres
    between = (full[0::2, :] + full[1::2, :]) / 2
    between = (between[:, 0::2] + between[:, 1::2]) / 2
    inside = np.zeros_like(half, dtype=bool)
    inside[11:189, 16:129] = True  # cells whose 2x2 block lies wholly inside the crop
    assert np.abs(half - between)[inside].max() < 0.01
    assert (half[:10] == 0).all() and (half[:, :15] == 0).all()
    assert np.array_equal(geometry.map_to_grid(heatmap, (400, 300)), full)


def test_decoding_processes_give_the_same_results_and_the_same_errors(
    model_folder: Path, three_studies: list[Path], tmp_path: Path
) -> None:
    """``inference.decode_processes`` moves decoding to other processes; nothing else."""
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(three_studies[4].read_bytes()[:2000])  # a truncated image
    good = _study_input(three_studies[:4])
    bad = StudyInput(
        str(pydicom.dcmread(three_studies[4], stop_before_pixels=True).StudyInstanceUID),
        (ImageInput(broken, "1.2.3.4"), *_study_input(three_studies[5:8]).images),
    )
    outcomes = {}
    for processes in (0, 2):
        settings = Settings.model_validate(
            {"inference": {"device": "cpu", "tta": "none", "decode_processes": processes}}
        )
        engine = InferenceEngine.load(model_folder, settings.inference, display_size=128)
        try:
            outcomes[processes] = engine.infer_each([good, bad])
        finally:
            engine.close()
    here, there = outcomes[0], outcomes[2]
    assert isinstance(here[0], StudyResult) and isinstance(there[0], StudyResult)
    assert [i.probability for i in here[0].images] == [i.probability for i in there[0].images]
    for a, b in zip(here[0].images, there[0].images, strict=True):
        assert a.display is not None and b.display is not None
        assert np.array_equal(a.display, b.display)
    assert isinstance(here[1], StudyInferenceError) and isinstance(there[1], StudyInferenceError)
    assert str(here[1]) == str(there[1])
    assert str(there[1]).startswith("image 1.2.3.4: ")
