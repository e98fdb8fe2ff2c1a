"""Reading PDUs off the wire with fewer interpreter round trips.

pynetdicom reads every PDU from the socket 4 KiB at a time, appending each piece to a
growing buffer: a 17 MB mammogram in 128 KiB PDUs is some 4,300 ``recv`` calls, each
giving up and taking back the interpreter lock. With several senders at once those
hand-overs, not the network, set the pace. :class:`ReceiveSocket` reads each PDU into
one buffer with ``recv_into``, as much as the kernel has at each call, and
:class:`RequestHandler` gives every association the listener accepts such a socket.
"""

from __future__ import annotations

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket
from pynetdicom.transport import RequestHandler as _PynetdicomRequestHandler

__all__ = ["ReceiveSocket", "RequestHandler"]

_FIRST_BUFFER = 1 << 20


class ReceiveSocket(AssociationSocket):
    """An association socket whose ``recv`` fills one growing buffer with ``recv_into``."""

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` from the peer, blocking until all have come.

        Returns fewer bytes only when the peer closed the connection (what has come
        so far), as pynetdicom's own ``recv`` does; socket errors and timeouts
        propagate to pynetdicom, which treats them as a closed connection. The
        length comes from the peer's PDU header, so the buffer starts at 1 MiB at
        most and doubles as data arrives: a peer that announces 4 GiB and sends
        little costs little.
        """
        if self.socket is None:
            raise OSError("the association has no socket")
        buffer = bytearray(min(nr_bytes, _FIRST_BUFFER))
        received = 0
        while received < nr_bytes:
            if received == len(buffer):
                buffer += bytes(min(len(buffer), nr_bytes - received))
            with memoryview(buffer) as view:
                count = self.socket.recv_into(view[received:])
            if count == 0:
                break
            received += count
        del buffer[received:]
        return buffer


class RequestHandler(_PynetdicomRequestHandler):
    """pynetdicom's handler for an incoming connection, reading with :class:`ReceiveSocket`."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        socket = assoc.dul.socket
        if type(socket) is AssociationSocket:  # only the class we know how to extend
            socket.__class__ = ReceiveSocket
        return assoc
