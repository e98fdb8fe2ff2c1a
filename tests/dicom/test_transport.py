"""Reading PDUs into one buffer (ReceiveSocket), within a size and a time per PDU; the
listener's use of it is in test_receive_peers.py and tests/security/test_lockout.py."""

from __future__ import annotations

import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from node.dicom.transport import PduLimits, ReceiveSocket


@pytest.fixture
def pair() -> Iterator[tuple[ReceiveSocket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    assoc = Association(AE(), "acceptor")
    receiver = ReceiveSocket(assoc, client_socket=ours)
    yield receiver, theirs
    ours.close()
    theirs.close()


def send_in_pieces(sock: socket.socket, data: bytes, seed: int, close: bool) -> threading.Thread:
    """Write ``data`` in pieces of random sizes (1 byte to 64 KiB) from another thread."""

    def run() -> None:
        rng = random.Random(seed)
        position = 0
        while position < len(data):
            step = rng.randint(1, 65536)
            sock.sendall(data[position : position + step])
            position += step
        if close:
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_pdu_sent_in_pieces_arrives_whole(pair: tuple[ReceiveSocket, socket.socket]) -> None:
    receiver, peer = pair
    data = random.Random(1).randbytes(3_000_000)
    writer = send_in_pieces(peer, data, seed=2, close=False)
    first = receiver.recv(6)
    rest = receiver.recv(len(data) - 6)
    writer.join()
    assert isinstance(rest, bytearray)
    assert bytes(first + rest) == data


def test_a_closed_connection_returns_what_came(pair: tuple[ReceiveSocket, socket.socket]) -> None:
    receiver, peer = pair
    data = random.Random(3).randbytes(100_000)
    writer = send_in_pieces(peer, data, seed=4, close=True)
    got = receiver.recv(len(data) + 500)
    writer.join()
    assert bytes(got) == data
    assert receiver.recv(10) == bytearray()


def test_an_announced_length_is_not_allocated_up_front(
    pair: tuple[ReceiveSocket, socket.socket],
) -> None:
    """A PDU header can claim 4 GiB; memory follows what arrives, not the claim."""
    receiver, peer = pair
    data = random.Random(5).randbytes(3_000_000)
    writer = send_in_pieces(peer, data, seed=6, close=True)
    tracemalloc.start()
    try:
        got = receiver.recv(2**32 - 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.join()
    assert bytes(got) == data
    assert peak < 4 * len(data)


def test_a_silent_peer_times_out(pair: tuple[ReceiveSocket, socket.socket]) -> None:
    receiver, _ = pair
    assert receiver.socket is not None
    receiver.socket.settimeout(0.2)
    with pytest.raises(TimeoutError):
        receiver.recv(10)


@pytest.fixture
def limited(
    pair: tuple[ReceiveSocket, socket.socket],
) -> tuple[ReceiveSocket, socket.socket]:
    receiver, peer = pair
    receiver.configure(PduLimits(largest=1000, timeout=0.5), b"\x05\x00\x00\x00\x00\x04abcd", None)
    return receiver, peer


def test_bytes_read_before_the_association_come_first(
    limited: tuple[ReceiveSocket, socket.socket],
) -> None:
    receiver, peer = limited
    assert receiver.ready  # nothing on the socket, but a PDU to hand over
    assert bytes(receiver.recv(6)) == b"\x05\x00\x00\x00\x00\x04"
    assert bytes(receiver.recv(4)) == b"abcd"
    peer.sendall(b"\x05\x00\x00\x00\x00\x02xy")
    assert bytes(receiver.recv(6)) == b"\x05\x00\x00\x00\x00\x02"
    assert bytes(receiver.recv(2)) == b"xy"


def test_a_pdu_announcing_more_than_the_limit_is_aborted_unread(
    limited: tuple[ReceiveSocket, socket.socket],
) -> None:
    receiver, peer = limited
    receiver.recv(6), receiver.recv(4)
    peer.sendall(b"\x04\x00\xff\xff\xff\xff" + bytes(5000))
    assert receiver.recv(6) == bytearray()  # pynetdicom: a closed connection
    peer.settimeout(5)
    answer = peer.recv(100)
    assert answer == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])  # A-ABORT, then closed
    assert peer.recv(100) == b""


def test_a_trickled_pdu_is_cut_off_at_its_time(
    limited: tuple[ReceiveSocket, socket.socket],
) -> None:
    receiver, peer = limited
    receiver.recv(6), receiver.recv(4)
    stop = threading.Event()

    def trickle() -> None:
        peer.sendall(b"\x04\x00\x00\x00\x03\xe8")  # 1,000 bytes announced
        while not stop.wait(0.1):
            try:
                peer.sendall(b"\x00")
            except OSError:
                return

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        started = time.monotonic()
        head = receiver.recv(6)
        body = receiver.recv(1000)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    assert len(head) == 6 and 0 < len(body) < 1000  # what came, then cut off
    assert seconds < 1.0
