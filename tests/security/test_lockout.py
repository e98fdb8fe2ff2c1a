"""Peers that try to keep others out or to make the listener hold memory, against a real
``breast-node serve`` on loopback with plain sockets: stalled and trickled association
requests and PDUs, and PDU headers that announce gigabytes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import Settings, load_settings
from tests.conftest import wait_until
from tests.helpers.hostile import (
    P_DATA_TF,
    closed_by_peer,
    echo_seconds,
    header,
    pdata_association,
    rss_mib,
    stalled_request,
    threads,
)
from tests.helpers.node import Node
from tests.reliability.conftest import serve_config

pytestmark = pytest.mark.peers

#: the limits under test, shorter than their defaults so that the test is quick
LIMITS = {
    "association_request_timeout": 3.0,
    "pdu_timeout": 3.0,
    "max_pending_connections": 8,
}
GIB = 1024**3
MIB = 1024**2


class Listener:
    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.settings = settings

    @property
    def port(self) -> int:
        return self.settings.node.port

    @property
    def pid(self) -> int:
        assert self.node.proc is not None and self.node.proc.poll() is None
        return self.node.proc.pid


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    folder = tmp_path_factory.mktemp("lockout")
    config = serve_config(folder, None, node=LIMITS)
    node = Node(config, folder / "node.log")
    node.start()
    try:
        yield Listener(node, load_settings(config, environ={}))
    finally:
        node.stop()


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_stalled_association_requests_do_not_keep_senders_out(listener: Listener) -> None:
    """16 connections (``node.max_associations``) that send 10 bytes of an A-ASSOCIATE-RQ
    announcing 100,000 bytes and then nothing: a sender still gets its C-ECHO through at
    once, and the listener closes each of them when its request time is up."""
    stalled = [stalled_request(listener.port) for _ in range(16)]
    try:
        time.sleep(0.5)
        ok, seconds = echo_seconds(listener.port)
        print(f"C-ECHO with 16 stalled connections: ok={ok} in {seconds:.2f} s")
        assert ok and seconds < 2.0
        limit = LIMITS["association_request_timeout"]
        assert all(closed_by_peer(sock, limit + 3) for sock in stalled)
    finally:
        close_all(stalled)
    assert echo_seconds(listener.port)[0]


def test_connections_beyond_the_pending_cap_push_out_the_oldest(listener: Listener) -> None:
    """Three times ``max_pending_connections`` stalled requests: the oldest are closed as
    the newer arrive, a sender gets through, and the listener's threads stay bounded."""
    cap = int(LIMITS["max_pending_connections"])
    before = threads(listener.pid)
    stalled = [stalled_request(listener.port) for _ in range(3 * cap)]
    try:
        oldest = stalled[: 2 * cap]
        assert all(closed_by_peer(sock, 2.0) for sock in oldest)
        assert threads(listener.pid) <= before + cap + 4
        assert echo_seconds(listener.port)[0]
    finally:
        close_all(stalled)


def test_an_association_request_announcing_gigabytes_is_refused_unread(
    listener: Listener,
) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        sock.sendall(header(0x01, 4 * GIB - 1) + b"\x00\x01\x00\x00")
        assert closed_by_peer(sock, 2.0)
    assert echo_seconds(listener.port)[0]


def flood(sock: socket.socket, total: int, outcome: list[int]) -> None:
    """Send ``total`` bytes of nothing; ``outcome`` gets how many the node took."""
    chunk = bytes(MIB)
    sent = 0
    try:
        while sent < total:
            sent += sock.send(chunk)
    except OSError:
        pass
    outcome.append(sent)


def test_pdus_announcing_gigabytes_cost_no_memory(listener: Listener) -> None:
    """Two associations send a P-DATA-TF header announcing 4 GiB and then 129 MiB: the
    listener refuses each at its header (A-ABORT, connection closed) instead of buffering
    what follows, so its resident memory does not grow."""
    before = rss_mib(listener.pid)
    peers = [pdata_association(listener.port) for _ in range(2)]
    outcomes: list[int] = []
    senders = []
    for _, raw in peers:
        raw.sendall(header(P_DATA_TF, 4 * GIB - 1))
        sender = threading.Thread(target=flood, args=(raw, 129 * MIB, outcomes))
        sender.start()
        senders.append(sender)
    for sender in senders:
        sender.join(timeout=60)
    time.sleep(0.5)
    after = rss_mib(listener.pid)
    print(f"RSS with two 4 GiB announcements: {before:.0f} -> {after:.0f} MiB; sent {outcomes}")
    for assoc, raw in peers:  # pynetdicom saw the A-ABORT and closed its end
        assert wait_until(lambda a=assoc: bool(a.is_aborted), timeout=5)
        raw.close()
    assert after - before < 32
    assert all(sent < 129 * MIB for sent in outcomes)
    assert echo_seconds(listener.port)[0]


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_a_pdu_must_arrive_within_its_time(listener: Listener, trickle: bool) -> None:
    """After association, a P-DATA-TF that announces 100,000 bytes and then stalls (or
    trickles one byte every half second) is cut off after ``node.pdu_timeout``."""
    assoc, raw = pdata_association(listener.port)
    try:
        raw.sendall(header(P_DATA_TF, 100_000) + bytes(10))
        started = time.monotonic()
        limit = LIMITS["pdu_timeout"]
        closed = False
        while not closed and time.monotonic() - started < limit + 5:
            if trickle:
                try:
                    raw.sendall(b"\x00")
                except OSError:
                    closed = True
                    break
            closed = closed_by_peer(raw, 0.5)
        seconds = time.monotonic() - started
        assert closed, f"still open after {seconds:.1f} s"
        assert seconds < limit + 3
    finally:
        assoc.abort()
        raw.close()  # pynetdicom leaves a socket the peer closed unclosed
    assert echo_seconds(listener.port)[0]


def test_defaults_of_the_limits_are_safe(tmp_path: Path) -> None:
    node = load_settings(serve_config(tmp_path, None), environ={}).node
    assert node.association_request_timeout <= node.acse_timeout
    assert node.pdu_timeout <= node.network_timeout
    assert 0 < node.largest_association_request <= MIB
    assert 0 < node.largest_pdu <= 256 * MIB
    assert node.max_pending_connections >= node.max_associations
