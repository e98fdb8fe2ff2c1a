"""A model per modality: a study with mammograms and ultrasound images is inferred part by
part, each part by its own model, and its results say which model made what; an image
no model accepts fails its study or, when configured, is left out and named."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from node.app import NodeService
from node.config import Settings
from node.counters import Counters
from node.db import (
    Result,
    SessionFactory,
    Study,
    StudyState,
    open_database,
    utcnow,
)
from node.db.reads import show_study
from node.errors import ModelError
from node.http.study import render_study_page
from node.http.view import NodeView
from node.inference.modelset import ModelSet
from node.pipeline.completion import complete_due_studies
from node.pipeline.delivery import Sender
from node.pipeline.worker import InferenceWorker
from node.spool import Spool
from node.summary import study_summary
from tests.helpers.images import one_study
from tests.helpers.models import write_random_model_folder
from tests.helpers.spool import receive
from tests.outputs.reading import walk

CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A mammography model and an ultrasound model, both at version 0.0.1."""
    root = tmp_path_factory.mktemp("models")
    return {
        "mg": write_random_model_folder(root / "mg", seed=3, modalities=("MG",), name="mg-test"),
        "us": write_random_model_folder(
            root / "us", seed=4, modalities=("US",), name="us-test", height=64, width=80
        ),
    }


@pytest.fixture(scope="module")
def mixed_files(
    synthetic: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """One study: a four-view mammogram and two ultrasound images of the same visit."""
    mg = sorted(synthetic(studies=1, seed=11).rglob("*.dcm"))
    us = sorted(synthetic(studies=1, seed=12, modality="us").rglob("*.dcm"))
    return one_study(mg + us, tmp_path_factory.mktemp("mixed"))


@dataclasses.dataclass
class Node:
    settings: Settings
    db: SessionFactory
    spool: Spool
    worker: InferenceWorker
    sender: Sender

    def run(self, files: list[Path]) -> Study:
        """Receive ``files``, complete, infer and deliver; the study as it ends."""
        for path in files:
            receive(self.spool, self.db, path)
        complete_due_studies(
            self.db,
            self.settings.completion,
            self.settings.eligibility.rules,
            now=utcnow() + timedelta(hours=1),
        )
        self.worker.step()
        self.sender.step()
        with self.db() as session:
            return session.scalars(select(Study)).one()

    def delivered(self) -> list[Dataset]:
        folder = self.settings.destinations[0].folder  # type: ignore[union-attr]
        return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]

    def result(self) -> Result:
        with self.db() as session:
            return session.scalars(select(Result)).one()


@pytest.fixture
def node(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Node]:
    def make(models: list[Path], **sections: Any) -> Node:
        root = tmp_path_factory.mktemp("node")
        settings = Settings.model_validate(
            {
                "storage": {"database": f"sqlite:///{root}/node.db", "spool": root / "spool"},
                "models": models,
                "destinations": [{"name": "drop", "folder": root / "drop"}],
                "inference": {"device": "cpu", "tta": "none"},
                "outputs": {"objects": ["sr", "mgcad", "sc"]},
                **sections,
            }
        )
        spool = Spool(settings.storage.spool)
        spool.prepare()
        db = open_database(settings.storage.database)
        models_set = ModelSet.load(
            settings.available_models, settings.inference, settings.eligibility.rules
        )
        worker = InferenceWorker(settings, db, spool, models_set, "test-worker")
        return Node(settings, db, spool, worker, Sender(settings, db, spool, "test-sender"))

    return make


def _device_names(ds: Dataset) -> set[str]:
    return {
        str(item.TextValue)
        for item in walk(ds)
        if item.ConceptNameCodeSequence[0].CodeValue == "121013"  # Device Observer Name
    }


def _library(ds: Dataset) -> set[str]:
    """The images a report was made from (its evidence)."""
    return {
        str(item.ReferencedSOPInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }


def _texts(ds: Dataset) -> list[str]:
    return [str(i.TextValue) for i in walk(ds) if i.ValueType == "TEXT"]


def test_a_mixed_study_is_inferred_part_by_part(
    node: Callable[..., Node], folders: dict[str, Path], mixed_files: list[Path]
) -> None:
    n = node([folders["mg"], folders["us"]])
    study = n.run(mixed_files)
    assert study.state == StudyState.DONE.value, study.reason

    modality_of = {
        str(ds.SOPInstanceUID): str(ds.Modality)
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in mixed_files)
    }
    row = n.result()
    assert (row.model_name, row.model_version) == ("mg-test, us-test", "0.0.1, 0.0.1")
    known = show_study(n.db, str(study.study_uid))
    detail = known["results"][-1]["detail"]
    parts = {part["model"]["name"]: part for part in detail["parts"]}
    assert set(parts) == {"mg-test", "us-test"}
    for name, modality in (("mg-test", "MG"), ("us-test", "US")):
        images = parts[name]["images"]
        assert {i["modality"] for i in images} == {modality}
        assert {i["sop_instance_uid"] for i in images} == {
            uid for uid, m in modality_of.items() if m == modality
        }
        assert any("reported separately" in note for note in parts[name]["notes"])
    assert detail["positive"] == any(p["positive"] for p in parts.values())
    assert detail["score"] == max(p["score"] for p in parts.values())

    delivered = n.delivered()
    assert len({str(ds.SOPInstanceUID) for ds in delivered}) == len(delivered)
    srs = [ds for ds in delivered if ds.SOPClassUID == COMPREHENSIVE_SR]
    cads = [ds for ds in delivered if ds.SOPClassUID == CAD_SR]
    captures = [ds for ds in delivered if ds.Modality == "OT" or "SC" in str(ds.SOPClassUID)]
    assert len(srs) == 2 and len(cads) == 1
    assert len({str(ds.SeriesInstanceUID) for ds in srs}) == 2  # one series per model
    for sr in srs:
        (name,) = _device_names(sr)
        modality = "MG" if name == "mg-test" else "US"
        assert {modality_of[uid] for uid in _library(sr)} == {modality}
        other = "us-test" if name == "mg-test" else "mg-test"
        assert any(f"by model {other} 0.0.1" in text for text in _texts(sr)), name
    # the CAD SR describes the mammograms only
    assert {modality_of[uid] for uid in _library(cads[0])} == {"MG"}
    assert len(captures) == len(mixed_files)

    # breast-node show, and the study page, name each part's model and operating point
    text = study_summary(known)
    assert "MG images: model mg-test 0.0.1" in text and "US images: model us-test 0.0.1" in text
    view = NodeView(
        settings=n.settings,
        session_factory=n.db,
        read_factory=n.db,
        spool=n.spool,
        counters=Counters(),
        listener_port=lambda: None,
        model=lambda: None,
    )
    page = render_study_page(view, str(study.study_uid))
    assert page is not None
    assert "MG images: model mg-test</h2>" in page and "US images: model us-test</h2>" in page
    assert "Inferred part by part by 2 models (mg-test 0.0.1, us-test 0.0.1)" in page
    for uid in modality_of:
        assert f'id="image-{uid}"' in page


def test_result_uids_are_derived_the_same_on_every_build(
    node: Callable[..., Node], folders: dict[str, Path], mixed_files: list[Path]
) -> None:
    runs = []
    for _ in range(2):
        n = node([folders["mg"], folders["us"]])
        assert n.run(mixed_files).state == StudyState.DONE.value
        runs.append(sorted(str(ds.SOPInstanceUID) for ds in n.delivered()))
    assert runs[0] == runs[1]


def test_an_image_no_model_accepts_fails_its_study(
    node: Callable[..., Node], folders: dict[str, Path], mixed_files: list[Path]
) -> None:
    # a rule that matches every image, and a mammography model only (a node would refuse
    # to start so; a worker that meets such an image anyway fails its study)
    n = node([folders["mg"]], eligibility={"rules": [{"name": "any"}]})
    study = n.run(mixed_files)
    assert study.state == StudyState.FAILED.value
    assert "no model accepts modality US (mg-test: MG)" in str(study.reason)
    (report,) = [ds for ds in n.delivered() if ds.SOPClassUID == COMPREHENSIVE_SR]
    assert any("no model accepts modality US" in t for t in _texts(report))


def test_without_model_skip_infers_the_rest_and_names_what_it_left_out(
    node: Callable[..., Node], folders: dict[str, Path], mixed_files: list[Path]
) -> None:
    n = node([folders["mg"]], eligibility={"without_model": "skip"})
    study = n.run(mixed_files)
    assert study.state == StudyState.DONE.value, study.reason
    detail = show_study(n.db, str(study.study_uid))["results"][-1]["detail"]
    (part,) = detail["parts"]
    assert {i["modality"] for i in part["images"]} == {"MG"}
    assert [item["modality"] for item in detail["left_out"]] == ["US", "US"]
    (sr,) = [ds for ds in n.delivered() if ds.SOPClassUID == COMPREHENSIVE_SR]
    left = [t for t in _texts(sr) if t.startswith("Not analysed by AI")]
    assert len(left) == 2 and all("no model accepts modality US" in t for t in left)


def test_without_model_skip_fails_a_study_with_nothing_left(
    node: Callable[..., Node], folders: dict[str, Path], synthetic: Callable[..., Path]
) -> None:
    us = sorted(synthetic(studies=1, seed=12, modality="us").rglob("*.dcm"))
    n = node([folders["mg"]], eligibility={"without_model": "skip"})
    study = n.run(us)
    assert study.state == StudyState.FAILED.value
    assert "no image left to infer" in str(study.reason)
    assert "no model accepts modality US" in str(study.reason)


def test_a_rule_names_its_model(
    node: Callable[..., Node], folders: dict[str, Path], tmp_path: Path, mixed_files: list[Path]
) -> None:
    # a second model that accepts both modalities comes first; the ultrasound rule still
    # sends its images to the ultrasound model
    both = write_random_model_folder(tmp_path / "both", seed=5, name="both-test")
    rules = [
        {"name": "mammography", "modalities": ["MG"]},
        {"name": "breast-ultrasound", "modalities": ["US"], "model": "us-test"},
    ]
    n = node([both, folders["us"]], eligibility={"rules": rules})
    study = n.run(mixed_files)
    assert study.state == StudyState.DONE.value, study.reason
    parts = show_study(n.db, str(study.study_uid))["results"][-1]["detail"]["parts"]
    assert {p["model"]["name"]: p["images"][0]["modality"] for p in parts} == {
        "both-test": "MG",
        "us-test": "US",
    }


def test_the_node_refuses_to_start_when_a_rule_has_no_model(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "storage": {"database": f"sqlite:///{tmp_path}/node.db", "spool": tmp_path / "s"},
            "models": [folders["mg"], tmp_path / "not-there"],
            "inference": {"device": "cpu"},
            "http": {"enabled": False},
        }
    )
    with pytest.raises(ModelError) as caught:
        NodeService(settings, role="worker").start()
    message = str(caught.value)
    assert "eligibility rule 'breast-ultrasound' can match US images" in message
    assert "no model accepts modality US (mg-test: MG)" in message
    assert "not-there" in message and "without_model: skip" in message
    assert not (tmp_path / "node.db").exists()  # nothing started


def test_two_models_of_one_name_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    copy = write_random_model_folder(tmp_path / "again", modalities=("US",), name="mg-test")
    settings = Settings.model_validate({"inference": {"device": "cpu"}})
    with pytest.raises(ModelError, match="two model folders hold a model named 'mg-test'"):
        ModelSet.load([folders["mg"], copy], settings.inference)
    rules = Settings.model_validate(
        {"eligibility": {"rules": [{"name": "r", "model": "nope"}]}}
    ).eligibility.rules
    with pytest.raises(ModelError, match="eligibility rule 'r' names model 'nope'"):
        ModelSet.load([folders["mg"]], settings.inference, rules)
