"""Reading PDUs off the wire with fewer interpreter round trips.

pynetdicom reads every PDU from the socket 4 KiB at a time, appending each piece to a
growing buffer: a 17 MB mammogram in 128 KiB PDUs is some 4,300 ``recv`` calls, each
giving up and taking back the interpreter lock. With several senders at once those
hand-overs, not the network, set the pace. :class:`ReceiveSocket` reads each PDU into
one buffer of its final size, as much as the kernel has at each call, and
:class:`RequestHandler` gives every association the listener accepts such a socket.
"""

from __future__ import annotations

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket
from pynetdicom.transport import RequestHandler as _PynetdicomRequestHandler

__all__ = ["ReceiveSocket", "RequestHandler"]


class ReceiveSocket(AssociationSocket):
    """An association socket whose ``recv`` fills one buffer with ``recv_into``."""

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` from the peer, blocking until all have come.

        Returns fewer bytes only when the peer closed the connection (what has come
        so far), as pynetdicom's own ``recv`` does; socket errors and timeouts
        propagate to pynetdicom, which treats them as a closed connection.
        """
        if self.socket is None:
            raise OSError("the association has no socket")
        buffer = bytearray(nr_bytes)
        received = 0
        with memoryview(buffer) as view:
            while received < nr_bytes:
                count = self.socket.recv_into(view[received:], nr_bytes - received)
                if count == 0:
                    break
                received += count
        if received < nr_bytes:
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
