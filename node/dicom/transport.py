"""The listener's side of the wire: admitting connections, reading PDUs within limits, and
receiving data sets into the spool.

Admission (:class:`RequestHandler`): each accepted connection gets its own thread (the
thread that accepts connections only accepts, and wraps TLS sockets without a
handshake). There the TLS handshake runs, bounded by ``security.tls.handshake_timeout``,
and the A-ASSOCIATE-RQ is read whole, bounded by ``node.largest_association_request``
and, together with the handshake, by ``node.association_request_timeout``
(:class:`~node.dicom.pending.PendingConnections`). Only then is a pynetdicom association
made, with those bytes as the first it reads; the thread then waits for the association
to end and removes whatever data set it left half received.

Reading (:class:`ReceiveSocket`): pynetdicom reads every PDU 4 KiB at a time into a
growing buffer, blocking until as many bytes have come as the PDU's header announces.
:class:`ReceiveSocket` reads with ``recv_into``, as much as the kernel has at each call
(a 17 MB mammogram in 128 KiB PDUs is some 4,300 ``recv`` calls otherwise, each giving up
and taking back the interpreter lock), refuses a PDU whose header announces more than
``node.largest_pdu`` before reading any of it (A-ABORT), and cuts off a PDU that has not
come whole within ``node.pdu_timeout``.

Receiving (:func:`receive_into_spool`): pynetdicom writes each received data set to a
temporary file it creates; the listener has it create an
:class:`~node.spool.IncomingFile` in the spool instead, which keeps the spool's watermark
while it grows and is removed at once when its transfer does not finish.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from pynetdicom import dimse_messages
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket
from pynetdicom.transport import RequestHandler as _PynetdicomRequestHandler

from node.deadlines import shut_down
from node.dicom.pending import PendingConnections
from node.spool import IncomingFile, Spool

__all__ = [
    "ListenerLimits",
    "PduLimits",
    "ReceiveSocket",
    "RequestHandler",
    "receive_into_spool",
]

log = structlog.get_logger(__name__)

_FIRST_BUFFER = 1 << 20
_HEADER = 6
#: A-ABORT (PS3.8 9.3.8): source 2 (service provider), reason 6 (invalid PDU parameter value)
_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


@dataclass(frozen=True)
class PduLimits:
    """What one PDU may be once associated: ``largest`` bytes (its length field) and
    ``timeout`` seconds from its first bytes to its last."""

    largest: int
    timeout: float


@dataclass(frozen=True)
class ListenerLimits:
    """Everything :class:`RequestHandler` bounds, from ``node`` and ``security.tls``."""

    pending: PendingConnections
    largest_request: int
    handshake_timeout: float
    pdu: PduLimits
    spool: Spool | None = None


class ReceiveSocket(AssociationSocket):
    """An association socket that reads each PDU into one buffer, within :class:`PduLimits`.

    Without limits (:meth:`configure` not called) it only reads faster; pynetdicom's
    ``recv`` contract is kept either way: fewer bytes than asked only when the connection
    closed (or, here, was cut off), and no exception for a closed connection.
    """

    _limits: PduLimits | None = None
    _prefix: bytes = b""
    _deadline: float = 0.0
    _body_left: int = 0
    _timeout: float | None = None
    _spool: Spool | None = None
    _incoming: tuple[IncomingFile, ...] = ()

    def configure(self, limits: PduLimits, first: bytes, spool: Spool | None) -> None:
        """Bound every PDU by ``limits``; ``first``: bytes already read from the connection
        (the A-ASSOCIATE-RQ), returned before anything else; ``spool``: where data sets
        received on this connection are written (:meth:`open_incoming`)."""
        self._limits = limits
        self._prefix = first
        self._spool = spool
        self._set_timeout(limits.timeout)

    @property
    def ready(self) -> bool:
        """True when a PDU can be read (bytes read before the association count)."""
        return bool(self._prefix) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` from the peer, blocking until all have come.

        pynetdicom reads each PDU as its 6-byte header, then the length the header
        announces. With limits, the header of a PDU announcing more than
        ``limits.largest`` is answered with an A-ABORT and the connection shut down (no
        byte returned); a PDU not whole within ``limits.timeout`` seconds of its first
        bytes is cut off the same way (what came is returned). The buffer starts at 1 MiB
        at most and doubles as data arrives: an announcement costs nothing until the
        bytes are here.
        """
        if self.socket is None:
            raise OSError("the association has no socket")
        limits = self._limits
        if limits is None:
            return self._read(nr_bytes, None)
        if self._body_left and nr_bytes == self._body_left:
            self._body_left = 0
            return self._read(nr_bytes, self._deadline)
        # the header of the next PDU: its clock starts
        if self._timeout != limits.timeout:
            self._set_timeout(limits.timeout)
        self._deadline = time.monotonic() + limits.timeout
        data = self._read(nr_bytes, self._deadline)
        if nr_bytes == _HEADER and len(data) == _HEADER:
            length = int(struct.unpack(">L", data[2:6])[0])
            if length > limits.largest:
                self._refuse(f"a PDU announcing {length} bytes, more than node.largest_pdu")
                return bytearray()
            self._body_left = length
        return data

    def _read(self, nr_bytes: int, deadline: float | None) -> bytearray:
        if self._prefix:
            taken, self._prefix = self._prefix[:nr_bytes], self._prefix[nr_bytes:]
            if len(taken) == nr_bytes:
                return bytearray(taken)
            return bytearray(taken) + self._read(nr_bytes - len(taken), deadline)
        sock = self.socket
        assert sock is not None
        buffer = bytearray(min(nr_bytes, _FIRST_BUFFER))
        received = 0
        while received < nr_bytes:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._cut_off(received, nr_bytes)
                    break
                if self._timeout is None or left < self._timeout:
                    self._set_timeout(left)
            if received == len(buffer):
                buffer += bytes(min(len(buffer), nr_bytes - received))
            try:
                with memoryview(buffer) as view:
                    count = sock.recv_into(view[received:])
            except TimeoutError:
                if deadline is None:  # no limits: pynetdicom treats it as a closed connection
                    raise
                self._cut_off(received, nr_bytes)
                break
            if count == 0:
                break
            received += count
        del buffer[received:]
        return buffer

    def _set_timeout(self, seconds: float) -> None:
        if self.socket is not None:
            self.socket.settimeout(seconds)
        self._timeout = seconds

    def _peer(self) -> str:
        try:
            return str(self.assoc.requestor.address)
        except ValueError:  # no address set (a socket made outside a listener)
            return "unknown"

    def _cut_off(self, received: int, expected: int) -> None:
        limit = self._limits.timeout if self._limits is not None else 0.0
        log.warning(
            "connection.dropped",
            address=self._peer(),
            reason=f"a PDU not whole within {limit:g} s (node.pdu_timeout): "
            f"{received} of {expected} bytes",
        )
        if self.socket is not None:
            shut_down(self.socket)

    def _refuse(self, reason: str) -> None:
        log.warning("connection.dropped", address=self._peer(), reason=reason)
        if self.socket is not None:
            with contextlib.suppress(OSError):  # the peer may be gone already
                self.socket.sendall(_ABORT_INVALID_PARAMETER)
            shut_down(self.socket)

    def open_incoming(self) -> IncomingFile:
        """A spool file for the next data set received on this connection."""
        assert self._spool is not None
        incoming = self._spool.incoming()
        self._incoming = (*(f for f in self._incoming if not f.finished), incoming)
        return incoming

    @property
    def receives_into_spool(self) -> bool:
        return self._spool is not None

    def discard_unfinished(self) -> int:
        """Remove the files of data sets whose transfer never finished; how many."""
        unfinished = [f for f in self._incoming if not f.finished]
        for incoming in unfinished:
            incoming.discard()
        self._incoming = ()
        if unfinished:
            log.info(
                "store.discarded",
                address=self._peer(),
                files=len(unfinished),
                reason="the connection ended during the transfer",
            )
        return len(unfinished)


_NamedTemporaryFile = tempfile.NamedTemporaryFile


def _dataset_file(*args: Any, **kwargs: Any) -> Any:
    """What pynetdicom calls to create the file of a data set it receives: on a listener
    connection that receives into the spool, an :class:`IncomingFile` (pynetdicom decodes
    P-DATA on the connection's DUL thread, whose ``socket`` is the association socket)."""
    sock = getattr(threading.current_thread(), "socket", None)
    if isinstance(sock, ReceiveSocket) and sock.receives_into_spool:
        return sock.open_incoming()
    return _NamedTemporaryFile(*args, **kwargs)


def receive_into_spool() -> None:
    """Have pynetdicom create the files of received data sets through the receiving
    connection (:meth:`ReceiveSocket.open_incoming`); idempotent, and connections without
    a spool (any other pynetdicom use in the process) keep pynetdicom's own files."""
    dimse_messages.NamedTemporaryFile = _dataset_file  # type: ignore[attr-defined]


def _read_exactly(sock: Any, size: int) -> bytes:
    buffer = bytearray(size)
    received = 0
    with memoryview(buffer) as view:
        while received < size:
            count = sock.recv_into(view[received:])
            if count == 0:
                break
            received += count
    return bytes(buffer[:received])


class RequestHandler(_PynetdicomRequestHandler):
    """pynetdicom's handler of an incoming connection, admitting it within
    :class:`ListenerLimits` (when given by :meth:`with_limits`) and reading with
    :class:`ReceiveSocket`."""

    limits: ClassVar[ListenerLimits | None] = None
    _first: bytes = b""
    _assoc: Association | None = None

    @classmethod
    def with_limits(cls, limits: ListenerLimits) -> type[RequestHandler]:
        """A handler class for a listener with ``limits``."""
        return type("LimitedRequestHandler", (cls,), {"limits": limits})

    def handle(self) -> None:
        """Admit the connection, then run its association to the end (in this thread)."""
        limits = self.limits
        if limits is None:
            super().handle()
            return
        address = str(self.client_address[0])
        token = limits.pending.admit(self.request, address)
        try:
            first = self._association_request(limits, address)
        finally:
            in_time = limits.pending.settle(token)
        if first is None or not in_time:
            self.request.close()
            return
        self._first = first
        super().handle()  # makes the association (_create_association) and starts it
        assoc = self._assoc
        if assoc is not None:
            assoc.join()
            socket = assoc.dul.socket
            if isinstance(socket, ReceiveSocket):
                socket.discard_unfinished()
        self.request.close()

    def _association_request(self, limits: ListenerLimits, address: str) -> bytes | None:
        """The first PDU, read whole (normally the A-ASSOCIATE-RQ); None when the
        connection failed, closed or broke a limit (logged)."""
        sock = self.request
        if isinstance(sock, ssl.SSLSocket) and not self._handshake(sock, limits, address):
            return None
        try:
            sock.settimeout(limits.pending.timeout)
            head = _read_exactly(sock, _HEADER)
            length = int(struct.unpack(">L", head[2:6])[0]) if len(head) == _HEADER else 0
            if length > limits.largest_request:
                sock.sendall(_ABORT_INVALID_PARAMETER)
                log.warning(
                    "connection.dropped",
                    address=address,
                    reason=f"a first PDU announcing {length} bytes, more than "
                    f"node.largest_association_request ({limits.largest_request})",
                )
                return None
            body = _read_exactly(sock, length) if len(head) == _HEADER else b""
        except OSError as exc:  # reset, or timed out (its deadline logs that)
            log.debug("connection.closed", address=address, reason=str(exc))
            return None
        if len(head) < _HEADER or len(body) < length:  # closed, or shut down at its deadline
            log.debug("connection.closed", address=address, reason="no whole request")
            return None
        return head + body

    @staticmethod
    def _handshake(sock: ssl.SSLSocket, limits: ListenerLimits, address: str) -> bool:
        try:
            sock.settimeout(limits.handshake_timeout)
            sock.do_handshake()
        except TimeoutError:
            log.warning(
                "connection.dropped",
                address=address,
                reason=f"TLS handshake not done within {limits.handshake_timeout:g} s "
                "(security.tls.handshake_timeout)",
            )
            return False
        except OSError as exc:  # ssl.SSLError included
            log.warning("connection.dropped", address=address, reason=f"TLS handshake: {exc}")
            return False
        return True

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        self._assoc = assoc
        socket = assoc.dul.socket
        if type(socket) is AssociationSocket:  # only the class we know how to extend
            socket.__class__ = ReceiveSocket
            limits = self.limits
            if limits is not None and isinstance(socket, ReceiveSocket):
                socket.configure(limits.pdu, self._first, limits.spool)
        return assoc
