"""The inference worker and the sender against a real database, spool and tiny model:
late instances start a new generation whose result supersedes the earlier one."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.config import SendingSettings, Settings
from node.db import (
    DeliveryState,
    NewDelivery,
    NewResult,
    RecordOutcome,
    Result,
    ResultOutcome,
    SessionFactory,
    Study,
    StudyState,
    claim_next,
    open_database,
    save_result,
    utcnow,
)
from node.db.reads import deliveries_of
from node.inference.engine import InferenceEngine
from node.outputs import ResultObject
from node.pipeline.completion import complete_due_studies
from node.pipeline.delivery import Sender, backoff_seconds, write_file_atomically
from node.pipeline.worker import InferenceWorker, encode_object
from node.spool import Spool
from tests.helpers.models import write_random_model_folder
from tests.helpers.spool import receive


@dataclasses.dataclass
class Pipeline:
    settings: Settings
    db: SessionFactory
    spool: Spool
    worker: InferenceWorker
    sender: Sender

    def ingest(self, files: list[Path]) -> list[RecordOutcome]:
        return [receive(self.spool, self.db, path) for path in files]

    def complete(self) -> None:
        later = utcnow() + timedelta(hours=1)
        complete_due_studies(
            self.db, self.settings.completion, self.settings.eligibility.rules, now=later
        )

    def study(self) -> Study:
        with self.db() as session:
            return session.scalars(select(Study)).one()

    def results(self) -> list[Result]:
        with self.db() as session:
            return list(session.scalars(select(Result).order_by(Result.generation)))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    folder = write_random_model_folder(tmp_path_factory.mktemp("model") / "tiny", seed=3)
    settings = Settings.model_validate({"inference": {"device": "cpu", "tta": "none"}})
    return InferenceEngine.load(folder, settings.inference)


@pytest.fixture
def pipeline(tmp_path: Path, engine: InferenceEngine) -> Callable[..., Pipeline]:
    def make(**outputs: Any) -> Pipeline:
        settings = Settings.model_validate(
            {
                "storage": {"database": f"sqlite:///{tmp_path}/node.db", "spool": tmp_path / "s"},
                "model": None,
                "destinations": [{"name": "drop", "folder": tmp_path / "drop"}],
                "inference": {"device": "cpu", "tta": "none"},
                "outputs": {"objects": ["sr", "mgcad"], **outputs},
            }
        )
        spool = Spool(settings.storage.spool)
        spool.prepare()
        db = open_database(settings.storage.database)
        return Pipeline(
            settings,
            db,
            spool,
            InferenceWorker(settings, db, spool, engine, "test-worker"),
            Sender(settings, db, spool, "test-sender"),
        )

    return make


@pytest.fixture(scope="module")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from training.synthetic import SynthOptions, write_studies

    out = tmp_path_factory.mktemp("study")
    write_studies(out, studies=1, seed=11, options=SynthOptions(size="small"))
    return sorted(out.rglob("*.dcm"))


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_late_instance_supersedes_pending_result(
    pipeline: Callable[..., Pipeline], study_files: list[Path]
) -> None:
    p = pipeline()
    p.ingest(study_files[:3])
    p.complete()
    assert p.worker.step() == 1
    assert p.study().state == StudyState.SENDING.value
    first = deliveries_of(p.db, p.study().id)
    assert {(d.generation, d.state) for d in first} == {(1, DeliveryState.PENDING)}

    # the fourth view arrives before the first result went out
    assert p.ingest(study_files[3:]) == [RecordOutcome.REOPENED]
    p.complete()
    assert p.worker.step() == 1
    assert p.sender.step() == 1
    study = p.study()
    assert (study.state, study.generation) == (StudyState.DONE.value, 2)

    rows = deliveries_of(p.db, study.id)
    old = [d for d in rows if d.generation == 1]
    new = [d for d in rows if d.generation == 2]
    assert {d.state for d in old} == {DeliveryState.SUPERSEDED}
    assert {d.state for d in new} == {DeliveryState.SENT}
    assert not {d.sop_instance_uid for d in old} & {d.sop_instance_uid for d in new}
    written = sorted((p.settings.destinations[0].folder).rglob("*.dcm"))  # type: ignore[union-attr]
    assert {f.name for f in written} == {Path(d.path).name for d in new}
    sources = {sop_uid(f) for f in study_files}
    for path in written:
        evidence = pydicom.dcmread(path).CurrentRequestedProcedureEvidenceSequence
        refs = {
            str(item.ReferencedSOPInstanceUID)
            for series in evidence
            for s in series.ReferencedSeriesSequence
            for item in s.ReferencedSOPSequence
        }
        assert refs == sources
    assert [(r.generation, r.outcome) for r in p.results()] == [(1, "result"), (2, "result")]


def test_own_results_sent_back_do_not_reopen_the_study(
    pipeline: Callable[..., Pipeline], study_files: list[Path]
) -> None:
    p = pipeline()
    p.ingest(study_files)
    p.complete()
    p.worker.step()
    p.sender.step()
    assert p.study().state == StudyState.DONE.value
    returned = sorted((p.settings.destinations[0].folder).rglob("*.dcm"))  # type: ignore[union-attr]
    assert returned
    assert set(p.ingest(returned)) == {RecordOutcome.OWN_RESULT}
    assert (p.study().state, p.study().generation) == (StudyState.DONE.value, 1)


def test_stale_worker_cannot_overwrite_a_reopened_study(
    pipeline: Callable[..., Pipeline], study_files: list[Path]
) -> None:
    p = pipeline()
    p.ingest(study_files[:3])
    p.complete()
    claimed = claim_next(
        p.db, "slow-worker", StudyState.QUEUED, StudyState.PROCESSING, lease_seconds=60
    )
    assert claimed is not None
    p.ingest(study_files[3:])  # reopens the study while the slow worker infers

    stale = save_result(
        p.db,
        claimed,
        NewResult(ResultOutcome.RESULT, score=0.5),
        [NewDelivery("drop", "1.2.3", "1.2.840.10008.5.1.4.1.1.88.33", "sr", "results/x")],
    )
    assert stale is None
    assert p.results() == [] and deliveries_of(p.db, claimed.id) == []
    assert (p.study().state, p.study().generation) == (StudyState.RECEIVING.value, 2)


def test_failure_without_failure_report_fails_at_once(
    pipeline: Callable[..., Pipeline], study_files: list[Path], tmp_path: Path
) -> None:
    p = pipeline(failure_report=False)
    broken = tmp_path / "broken.dcm"
    ds = pydicom.dcmread(study_files[0])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(broken, enforce_file_format=True)
    p.ingest([broken, *study_files[1:]])
    p.complete()
    assert p.worker.step() == 1
    study = p.study()
    assert study.state == StudyState.FAILED.value
    assert study.reason is not None and study.reason.startswith("inference failed: ")
    assert deliveries_of(p.db, study.id) == []
    (result,) = p.results()
    assert (result.outcome, result.reason) == ("failure", study.reason)


def test_backoff_doubles_up_to_the_maximum() -> None:
    settings = SendingSettings(backoff_initial_seconds=30, backoff_max_seconds=200)
    assert [backoff_seconds(n, settings) for n in range(1, 6)] == [30, 60, 120, 200, 200]
    assert backoff_seconds(10_000, settings) == 200


def test_objects_are_written_in_explicit_vr_little_endian() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1143.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1143.2"
    back = pydicom.dcmread(io.BytesIO(encode_object(ResultObject("sr", ds))))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.StudyInstanceUID == ds.StudyInstanceUID


def test_folder_write_leaves_no_temporary_file_after_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "study" / "sr-1.2.3.dcm"
    target.parent.mkdir()
    (target.parent / ".sr-1.2.3.dcm.part").write_bytes(b"half a file from a killed run")
    write_file_atomically(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == [target.name]
