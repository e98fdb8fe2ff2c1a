"""What a broken or hostile peer does on the wire, with plain sockets: PDU headers that
announce more than follows, connections that stall, bytes that trickle. And what the node
process costs meanwhile (``/proc``: resident memory, threads, descriptors)."""

from __future__ import annotations

import os
import socket
import struct
import time

from pynetdicom import AE
from pynetdicom.association import Association

__all__ = [
    "VERIFICATION",
    "closed_by_peer",
    "echo_seconds",
    "fd_targets",
    "header",
    "open_fds",
    "pdata_association",
    "rss_mib",
    "stalled_request",
    "threads",
]

VERIFICATION = "1.2.840.10008.1.1"

A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04


def header(pdu_type: int, length: int) -> bytes:
    """A PDU header (PS3.8 9.3.1): type, reserved byte, 32-bit big-endian length."""
    return struct.pack(">BBL", pdu_type, 0, length)


def stalled_request(port: int, announced: int = 100_000, host: str = "127.0.0.1") -> socket.socket:
    """A connection that sends the first 10 bytes of an A-ASSOCIATE-RQ announcing
    ``announced`` bytes (header, protocol version, reserved), then nothing."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(header(A_ASSOCIATE_RQ, announced) + b"\x00\x01\x00\x00")
    return sock


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the other end closes (or resets) ``sock`` within ``timeout`` seconds;
    whatever it sends before (an A-ABORT) is read and dropped."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset
            return True
    return False


def echo_seconds(port: int, *, timeout: float = 30.0) -> tuple[bool, float]:
    """C-ECHO with pynetdicom: (whether it succeeded, seconds from connect to response)."""
    ae = AE(ae_title="ECHO_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(VERIFICATION)
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="BREAST_AI")
    ok = False
    if assoc.is_established:
        answer = assoc.send_c_echo()
        ok = answer.get("Status", -1) == 0
        assoc.release()
    return ok, time.monotonic() - started


def pdata_association(port: int) -> tuple[Association, socket.socket]:
    """An established association (Verification) and its raw socket, to write PDUs that
    pynetdicom would never send."""
    ae = AE(ae_title="RAW_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="BREAST_AI")
    assert assoc.is_established
    raw = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    assert isinstance(raw, socket.socket)
    return assoc, raw


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid``, MiB."""
    return _status(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    """Threads of process ``pid``."""
    return _status(pid, "Threads")


def open_fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor of process ``pid`` refers to (a path, ``socket:[...]``)."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except FileNotFoundError:  # closed meanwhile
            continue
    return targets
