"""DICOM TLS with real dcmtk peers: storescu ``+tls`` against the node's listener (with and
without mutual TLS), and the node's SCU against storescp ``+tls``; idle connections that
never start their handshake against ``breast-node serve``."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from node.app import NodeService
from node.config import ClientTls, Settings, load_settings
from node.db import Instance
from node.dicom import status
from node.dicom.scu import Peer, echo, store_datasets
from node.errors import SendError
from tests.conftest import free_port, wait_until
from tests.helpers.hostile import closed_by_peer
from tests.helpers.node import Node
from tests.reliability.conftest import serve_config
from tests.security.conftest import Pki

pytestmark = pytest.mark.peers

NodeFactory = Callable[..., tuple[NodeService, Settings]]


def storescu_tls(
    settings: Settings, key: Path, cert: Path, ca: Path, files: list[Path]
) -> tuple[int, str]:
    done = subprocess.run(
        ["storescu", "+tls", str(key), str(cert), "+cf", str(ca), "-aec",
         settings.node.ae_title, "127.0.0.1", str(settings.node.port), *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def stored(service: NodeService) -> int:
    assert service.session_factory is not None
    with service.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def node_echo(settings: Settings, tls: ClientTls | None) -> bool:
    """C-ECHO the node with the node's own SCU (which closes failed connections)."""
    peer = Peer(
        host="127.0.0.1",
        port=settings.node.port,
        ae_title=settings.node.ae_title,
        calling_ae_title="PY_SCU",
        timeout=10,
        tls=tls,
    )
    try:
        return echo(peer) == status.SUCCESS
    except SendError:
        return False


def client_tls(pki: Pki, with_cert: bool) -> ClientTls:
    return ClientTls(
        ca_certificates=pki.ca,
        certificate=pki.client_cert if with_cert else None,
        private_key=pki.client_key if with_cert else None,
        server_hostname="localhost",
    )


def tls_section(pki: Pki, **extra: object) -> dict[str, object]:
    return {"certificate": str(pki.server_cert), "private_key": str(pki.server_key), **extra}


def test_listener_speaks_tls_only(
    node_factory: NodeFactory, synthetic: Callable[..., Path], pki: Pki
) -> None:
    service, settings = node_factory(security={"tls": tls_section(pki)})
    files = sorted(synthetic(studies=1, seed=11).rglob("*.dcm"))
    code, out = storescu_tls(settings, pki.client_key, pki.client_cert, pki.ca, files)
    assert code == 0, out
    assert stored(service) == len(files)
    assert node_echo(settings, client_tls(pki, with_cert=False))  # no client cert needed
    plain = subprocess.run(
        ["echoscu", "-aec", settings.node.ae_title, "127.0.0.1", str(settings.node.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert plain.returncode != 0  # plain TCP gets no association
    assert node_echo(settings, None) is False
    # the listener still serves TLS peers after the failed handshakes
    assert node_echo(settings, client_tls(pki, with_cert=True))


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    node_factory: NodeFactory, synthetic: Callable[..., Path], pki: Pki
) -> None:
    service, settings = node_factory(
        security={"tls": tls_section(pki, ca_certificates=str(pki.ca), require_client_cert=True)}
    )
    files = sorted(synthetic(studies=1, seed=11).rglob("*.dcm"))
    code, out = storescu_tls(settings, pki.rogue_client_key, pki.rogue_client_cert, pki.ca, files)
    assert code != 0, out
    assert node_echo(settings, client_tls(pki, with_cert=False)) is False
    assert stored(service) == 0
    code, out = storescu_tls(settings, pki.client_key, pki.client_cert, pki.ca, files)
    assert code == 0, out
    assert stored(service) == len(files)


@pytest.fixture
def storescp_tls(tmp_path: Path, pki: Pki) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp with TLS that requires a client certificate signed by the test CA."""
    port, folder = free_port(), tmp_path / "pacs"
    folder.mkdir()
    proc = subprocess.Popen(
        ["storescp", "+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca),
         "-rc", "-aet", "PACS", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_results_go_to_a_tls_destination(
    storescp_tls: tuple[int, Path], synthetic: Callable[..., Path], pki: Pki
) -> None:
    port, folder = storescp_tls
    tls = ClientTls(ca_certificates=pki.ca, certificate=pki.client_cert, private_key=pki.client_key)
    peer = Peer("127.0.0.1", port, "PACS", timeout=10, tls=tls)
    assert wait_until(lambda: _echo_ok(peer), timeout=30, every=0.2)
    datasets = [dcmread(f) for f in sorted(synthetic(studies=1, seed=11).rglob("*.dcm"))]
    outcomes = store_datasets(peer, datasets)
    assert [o.ok for o in outcomes] == [True] * len(datasets)
    received = {dcmread(f).SOPInstanceUID for f in folder.iterdir()}
    assert received == {ds.SOPInstanceUID for ds in datasets}

    # a destination whose certificate is not from the CA we trust, or whose name differs
    untrusted = Peer("127.0.0.1", port, "PACS", timeout=10, tls=tls.model_copy(
        update={"ca_certificates": pki.rogue_ca}))  # fmt: skip
    wrong_name = Peer("127.0.0.1", port, "PACS", timeout=10, tls=tls.model_copy(
        update={"server_hostname": "pacs.example.org"}))  # fmt: skip
    no_client_cert = Peer("127.0.0.1", port, "PACS", timeout=10, tls=ClientTls(
        ca_certificates=pki.ca))  # fmt: skip
    for refused in (untrusted, wrong_name, no_client_cert):
        with pytest.raises(SendError):
            store_datasets(refused, datasets[:1])
    assert len(list(folder.iterdir())) == len(datasets)


def _echo_ok(peer: Peer) -> bool:
    try:
        return echo(peer) == status.SUCCESS
    except SendError:
        return False


def test_idle_connections_do_not_hold_up_tls_clients(tmp_path: Path, pki: Pki) -> None:
    """Three TCP connections that never start a handshake: a TLS client behind them is
    served at once (the handshake runs on each connection's own thread), and the idle
    ones are closed after ``security.tls.handshake_timeout``."""
    config = serve_config(tmp_path, None, security={"tls": tls_section(pki, handshake_timeout=3)})
    settings = load_settings(config, environ={})
    node = Node(config, tmp_path / "node.log")
    node.start()
    idle = [
        socket.create_connection(("127.0.0.1", settings.node.port), timeout=10) for _ in range(3)
    ]
    try:
        started = time.monotonic()
        assert node_echo(settings, client_tls(pki, with_cert=False))
        seconds = time.monotonic() - started
        print(f"TLS C-ECHO behind 3 idle connections: {seconds:.2f} s")
        assert seconds < 3.0
        assert all(closed_by_peer(sock, 3 + 3) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
        node.stop()
