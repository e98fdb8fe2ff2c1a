"""The receiver against real peers: dcmtk storescu/echoscu and pynetdicom as SCU."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt
from sqlalchemy import select

from node.app import NodeService
from node.cli import main
from node.config import Settings
from node.db import Instance
from node.db.reads import count_by_state, recent_studies
from node.dicom import status
from node.dicom.contexts import SupportedContexts
from node.dicom.scu import Peer, send_files
from node.dicom.transport import ReceiveSocket
from tests.conftest import wait_until

pytestmark = pytest.mark.peers

NodeFactory = Callable[..., tuple[NodeService, Settings]]
MG = "1.2.840.10008.5.1.4.1.1.1.2"


def dicom_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def storescu(
    settings: Settings, *paths: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "storescu",
            "-R",
            "-aec",
            settings.node.ae_title,
            *extra,
            "127.0.0.1",
            str(settings.node.port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored(service: NodeService) -> dict[str, Instance]:
    assert service.session_factory is not None
    with service.session_factory() as session:
        return {row.sop_instance_uid: row for row in session.scalars(select(Instance))}


def states(service: NodeService) -> dict[str, int]:
    assert service.session_factory is not None
    return {k: v for k, v in count_by_state(service.session_factory).items() if v}


def peer(settings: Settings) -> Peer:
    return Peer("127.0.0.1", settings.node.port, settings.node.ae_title, "TEST_SCU")


def test_echoscu_and_breast_node_echo(node_factory: NodeFactory, tmp_path: Path) -> None:
    _, settings = node_factory()
    done = subprocess.run(
        ["echoscu", "-aec", settings.node.ae_title, "127.0.0.1", str(settings.node.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    config = settings.storage.spool.parent.parent / "node.yaml"
    assert main(["echo", "--config", str(config)]) == 0


def test_storescu_study_is_stored_verbatim_and_queued(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory()
    files = dicom_files(synthetic(studies=1, seed=11))
    done = storescu(settings, *files)
    assert done.returncode == 0, done.stderr
    rows = stored(service)
    assert len(rows) == len(files) == 4
    for path in files:
        original = dcmread(path)
        row = rows[original.SOPInstanceUID]
        received = dcmread(settings.storage.spool / row.path)
        assert received.PixelData == original.PixelData  # bytes as sent, never decoded
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert (row.modality, row.laterality, row.view) == (
            "MG",
            original.ImageLaterality,
            original.ViewPosition,
        )
        assert row.calling_ae == "STORESCU"
        assert row.size_bytes == (settings.storage.spool / row.path).stat().st_size
    assert wait_until(lambda: states(service) == {"queued": 1})
    assert not any((settings.storage.spool / "tmp").iterdir())


@pytest.mark.parametrize(
    ("syntax", "propose"),
    [("j2k", "-xv"), ("jpegls", "-xt"), ("jpeg-lossless", "-xs"), ("rle", "-xr")],
)
def test_compressed_transfer_syntaxes_are_kept_as_sent(
    node_factory: NodeFactory, synthetic: Callable[..., Path], syntax: str, propose: str
) -> None:
    service, settings = node_factory()
    files = dicom_files(synthetic(studies=1, seed=12, transfer_syntax=syntax))
    done = storescu(settings, *files, extra=(propose,))
    assert done.returncode == 0, done.stderr
    rows = stored(service)
    for path in files:
        original = dcmread(path)
        received = dcmread(settings.storage.spool / rows[original.SOPInstanceUID].path)
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert received.PixelData == original.PixelData


def test_concurrent_associations(node_factory: NodeFactory, synthetic: Callable[..., Path]) -> None:
    service, settings = node_factory()
    folder = synthetic(studies=4, seed=13)
    senders = [
        subprocess.Popen(
            [
                "storescu",
                "-aec",
                settings.node.ae_title,
                "-aet",
                f"SENDER{i}",
                "127.0.0.1",
                str(settings.node.port),
                *map(str, dicom_files(folder / f"study-{i + 1:04d}")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    rows = stored(service)
    assert len(rows) == 16
    assert {row.calling_ae for row in rows.values()} == {f"SENDER{i}" for i in range(4)}
    assert wait_until(lambda: states(service) == {"queued": 4})


def test_study_split_over_two_associations_and_resent(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory(completion={"quiet_seconds": 2})
    files = dicom_files(synthetic(studies=1, seed=14))
    assert send_files(peer(settings), files[:2]).sent == 2
    assert send_files(peer(settings), files[2:]).sent == 2
    again = send_files(peer(settings), files)  # the PACS resends everything
    assert (again.sent, again.failed) == (4, [])
    rows = stored(service)
    assert len(rows) == 4
    assert sorted(row.receive_count for row in rows.values()) == [2, 2, 2, 2]
    assert wait_until(lambda: states(service) == {"queued": 1})
    assert service.session_factory is not None
    (study,) = recent_studies(service.session_factory)
    assert (study.instance_count, study.generation) == (4, 1)


def test_late_instance_reopens_the_study(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory()
    files = dicom_files(synthetic(studies=1, seed=14))
    send_files(peer(settings), files[:3])
    assert wait_until(lambda: states(service) == {"queued": 1})
    send_files(peer(settings), files[3:])
    assert wait_until(lambda: states(service) == {"queued": 1} and _generation(service) == 2)


def _generation(service: NodeService) -> int:
    assert service.session_factory is not None
    return recent_studies(service.session_factory)[0].generation


def test_late_instance_ignored_by_policy(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory(completion={"late_policy": "ignore"})
    files = dicom_files(synthetic(studies=1, seed=14))
    send_files(peer(settings), files[:3])
    assert wait_until(lambda: states(service) == {"queued": 1})
    assert send_files(peer(settings), files[3:]).sent == 1
    assert len(stored(service)) == 4
    assert states(service) == {"queued": 1} and _generation(service) == 1


def test_for_processing_only_study_is_skipped(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory()
    files = [
        p
        for p in dicom_files(synthetic(studies=1, seed=15, for_processing=True))
        if "processing" in p.name
    ]
    assert files
    assert storescu(settings, *files).returncode == 0
    assert wait_until(lambda: states(service) == {"skipped": 1})
    assert service.session_factory is not None
    assert recent_studies(service.session_factory)[0].reason == "only For Processing images"


@pytest.mark.parametrize(
    ("options", "keep", "state", "reason"),
    [
        ({"modality": "us"}, "", "queued", None),
        ({"tomo": True}, "tomo", "skipped", "tomosynthesis not supported"),
        ({"tomo": True}, "", "queued", None),
    ],
)
def test_eligibility_of_received_studies(
    node_factory: NodeFactory,
    synthetic: Callable[..., Path],
    options: dict[str, object],
    keep: str,
    state: str,
    reason: str | None,
) -> None:
    service, settings = node_factory()
    files = [p for p in dicom_files(synthetic(studies=1, seed=17, **options)) if keep in p.name]
    assert send_files(peer(settings), files).sent == len(files)
    assert wait_until(lambda: states(service) == {state: 1})
    assert service.session_factory is not None
    assert recent_studies(service.session_factory)[0].reason == reason


def test_disk_watermark_refuses_with_out_of_resources(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory(storage={"min_free_bytes": 10**18})
    files = dicom_files(synthetic(studies=1, seed=11))
    report = send_files(peer(settings), files[:1])
    assert report.failed and status.describe(status.OUT_OF_RESOURCES) in report.failed[0][1]
    done = storescu(settings, files[0], extra=("-v",))
    assert done.returncode != 0
    assert "Refused: OutOfResources" in done.stdout + done.stderr
    assert stored(service) == {}
    assert not list((settings.storage.spool / "studies").iterdir())


def _garbage_file(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    # an element header claiming far more bytes than follow
    path.write_bytes(path.read_bytes() + b"\x10\x00\x10\x00PN\xff\x7fBROKEN")
    return path


def test_malformed_and_incomplete_data_get_error_statuses_and_association_survives(
    node_factory: NodeFactory,
    synthetic: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, settings = node_factory()
    good = dicom_files(synthetic(studies=1, seed=11))[0]
    no_study = Dataset()
    no_study.SOPClassUID = MG
    no_study.SOPInstanceUID = generate_uid()
    no_study.Modality = "MG"
    garbage = _garbage_file(tmp_path / "garbage.dcm")

    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(MG, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", settings.node.port, ae_title=settings.node.ae_title)
    assert assoc.is_established
    try:
        monkeypatch.setattr(
            _config, "STORE_SEND_CHUNKED_DATASET", True
        )  # send the bytes as they are
        result: Any = assoc.send_c_store(garbage)
        assert result.Status == status.CANNOT_UNDERSTAND
        monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
        no_study.file_meta = FileMetaDataset()
        no_study.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        result = assoc.send_c_store(no_study)
        assert result.Status == status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        result = assoc.send_c_store(dcmread(good))
        assert result.Status == status.SUCCESS
    finally:
        assoc.release()
    assert list(stored(service)) == [dcmread(good).SOPInstanceUID]


def test_status_command_json_and_table(
    node_factory: NodeFactory, synthetic: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    service, settings = node_factory()
    files = dicom_files(synthetic(studies=2, seed=16))
    assert storescu(settings, *files).returncode == 0
    assert wait_until(lambda: states(service) == {"queued": 2})
    config = settings.storage.spool.parent.parent / "node.yaml"
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["studies"]["queued"] == 2
    assert {row["state"] for row in data["recent"]} == {"queued"}
    originals = {dcmread(f).StudyInstanceUID: dcmread(f) for f in files}
    for row in data["recent"]:
        assert originals[row["study_uid"]].AccessionNumber == row["accession_number"]
    text = json.dumps(data)
    for ds in originals.values():
        assert str(ds.PatientName) not in text and str(ds.PatientID) not in text
    assert main(["status", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "queued: 2" in table and next(iter(originals)) in table


def test_concurrent_senders_each_get_their_own_contexts(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    """Four storescu processes at once: every instance is stored, the listener copies
    its contexts per association the cheap way, and its own set is left untouched."""
    service, settings = node_factory()
    assert service.scp is not None and service.scp._server is not None
    contexts = service.scp._server.contexts
    assert isinstance(contexts, SupportedContexts)
    before = [vars(cx) for cx in copy.deepcopy(list(contexts))]
    files = dicom_files(synthetic(studies=2, seed=12))
    command = ["storescu", "-aec", settings.node.ae_title, "127.0.0.1", str(settings.node.port)]
    senders = [
        subprocess.Popen([*command, str(path)], stderr=subprocess.PIPE, text=True)
        for path in files[:4]
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    rows = stored(service)
    assert {dcmread(path).SOPInstanceUID for path in files[:4]} == set(rows)
    assert [vars(cx) for cx in contexts] == before


def test_the_listener_reads_with_receive_sockets(
    node_factory: NodeFactory, synthetic: Callable[..., Path]
) -> None:
    service, settings = node_factory()
    assert service.scp is not None
    sockets: list[type] = []
    service.scp.bind(evt.EVT_CONN_OPEN, lambda event: sockets.append(type(event.assoc.dul.socket)))
    done = storescu(settings, *dicom_files(synthetic(studies=1, seed=13)))
    assert done.returncode == 0, done.stderr
    assert sockets == [ReceiveSocket]
