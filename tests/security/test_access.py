"""Allow-lists: calling AE titles and source addresses, enforced at association time with
real dcmtk peers (echoscu/storescu ``-aet``) and pynetdicom as SCU."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from sqlalchemy import func, select

from node.app import NodeService
from node.config import Settings, load_settings
from node.db import Instance
from node.dicom.security import RejectReason, RejectResult, RejectSource
from node.errors import ConfigError

pytestmark = pytest.mark.peers

NodeFactory = Callable[..., tuple[NodeService, Settings]]
VERIFICATION = "1.2.840.10008.1.1"


def dcmtk(tool: str, settings: Settings, calling: str, *files: Path) -> tuple[int, str]:
    done = subprocess.run(
        [tool, "-aet", calling, "-aec", settings.node.ae_title, "127.0.0.1",
         str(settings.node.port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def pynetdicom_reject(settings: Settings, calling: str) -> tuple[int, int, int] | None:
    """(result, source, reason) of the rejection, or None when the association was accepted."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", settings.node.port, ae_title=settings.node.ae_title)
    if assoc.is_established:
        assoc.release()
        return None
    assert assoc.is_rejected
    answer = assoc.acceptor.primitive
    return int(answer.result), int(answer.result_source), int(answer.diagnostic)


def stored_count(service: NodeService) -> int:
    assert service.session_factory is not None
    with service.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_calling_ae_allow_list(node_factory: NodeFactory, synthetic: Callable[..., Path]) -> None:
    service, settings = node_factory(
        security={"allowed_calling_ae_titles": ["PACS_MAIN", "MODALITY_1"]}
    )
    files = sorted(synthetic(studies=1, seed=11).rglob("*.dcm"))

    assert dcmtk("echoscu", settings, "PACS_MAIN")[0] == 0
    code, out = dcmtk("echoscu", settings, "INTRUDER")
    assert code != 0 and "Calling AE Title Not Recognized" in out, out
    code, out = dcmtk("storescu", settings, "INTRUDER", *files)
    assert code != 0 and "Calling AE Title Not Recognized" in out, out
    assert stored_count(service) == 0

    assert pynetdicom_reject(settings, "INTRUDER") == (
        RejectResult.PERMANENT,
        RejectSource.SERVICE_USER,
        RejectReason.CALLING_AE_NOT_RECOGNISED,
    )
    assert pynetdicom_reject(settings, "MODALITY_1") is None
    code, out = dcmtk("storescu", settings, "MODALITY_1", *files)
    assert code == 0, out
    assert stored_count(service) == len(files)


@pytest.mark.parametrize(
    ("allowed", "accepted"),
    [(["10.0.0.0/8", "192.168.1.7"], False), (["10.0.0.0/8", "127.0.0.0/8"], True), ([], True)],
)
def test_address_allow_list(node_factory: NodeFactory, allowed: list[str], accepted: bool) -> None:
    _, settings = node_factory(security={"allowed_addresses": allowed})
    code, out = dcmtk("echoscu", settings, "ANY_SCU")
    assert (code == 0) is accepted, out
    expected = (
        None
        if accepted
        else (RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.NO_REASON_GIVEN)
    )
    assert pynetdicom_reject(settings, "ANY_SCU") == expected


@pytest.mark.parametrize(
    ("security", "key"),
    [
        ({"allowed_addresses": ["10.0.0.300"]}, "security.allowed_addresses.0"),
        ({"allowed_calling_ae_titles": ["THIS_TITLE_IS_TOO_LONG"]}, "allowed_calling_ae_titles"),
        ({"tls": {"certificate": "a.crt"}}, "security.tls.private_key"),
        (
            {"tls": {"certificate": "a.crt", "private_key": "a.key", "require_client_cert": True}},
            "security.tls",
        ),
    ],
)
def test_bad_security_settings_name_the_key(
    tmp_path: Path, security: dict[str, object], key: str
) -> None:
    import yaml

    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"security": security}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert key in str(caught.value)
