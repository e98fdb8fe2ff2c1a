"""The private pynetdicom hooks the listener relies on are still there, as we know them.

The listener speeds up receiving, and bounds what a peer can make it hold, by extending
places pynetdicom does not publish (:mod:`node.dicom.transport`,
:mod:`node.dicom.contexts`): the request handler (admission in the connection's own
thread), the association socket (PDUs read whole, within limits), the temporary file
of a received data set (written into the spool, the watermark kept) and the TLS
wrapping of accepted sockets. An upgrade that renamed or reshaped any of them could make
receiving silently slower or the limits silently absent; these checks make it fail
loudly instead, and pyproject.toml pins pynetdicom below its next major version.
"""

from __future__ import annotations

import inspect
import socketserver
import threading
from importlib.metadata import version

import pynetdicom
from pynetdicom import dimse_messages, fsm
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import (
    AssociationServer,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from node.dicom.contexts import SupportedContexts
from node.dicom.transport import ReceiveSocket, receive_into_spool
from node.dicom.transport import RequestHandler as NodeRequestHandler
from node.spool import IncomingFile


def test_pynetdicom_is_the_major_version_the_hooks_were_written_for() -> None:
    assert int(version("pynetdicom").split(".")[0]) == 3, pynetdicom.__version__


def test_the_request_handler_creates_the_association_where_we_extend_it() -> None:
    hook = RequestHandler._create_association
    assert list(inspect.signature(hook).parameters) == ["self"]
    source = inspect.getsource(hook)
    # the socket our handler swaps for ReceiveSocket, made here and nowhere else
    assert "AssociationSocket(assoc, client_socket=self.request)" in source
    # the per-association copy that SupportedContexts makes cheap
    assert "deepcopy(self.server.contexts)" in source
    assert issubclass(NodeRequestHandler, RequestHandler)
    assert "_create_association" in NodeRequestHandler.__dict__


def test_the_server_takes_a_request_handler_class_and_its_contexts_as_attributes() -> None:
    init = inspect.getsource(ThreadedAssociationServer.__init__)
    assert "self.contexts" in init
    # socketserver keeps the handler class on the server, where the listener replaces it
    assert issubclass(ThreadedAssociationServer, socketserver.BaseServer)
    assert "self.RequestHandlerClass" in inspect.getsource(socketserver.BaseServer.__init__)
    assert "self.RequestHandlerClass(" in inspect.getsource(socketserver.BaseServer.finish_request)


def test_association_socket_recv_reads_a_given_number_of_bytes() -> None:
    parameters = inspect.signature(AssociationSocket.recv).parameters
    assert list(parameters) == ["self", "nr_bytes"]
    assert ReceiveSocket.recv.__qualname__ == "ReceiveSocket.recv"
    assert issubclass(ReceiveSocket, AssociationSocket)


def test_a_presentation_context_keeps_its_transfer_syntaxes_in_one_private_list() -> None:
    context = PresentationContext()
    context.abstract_syntax = "1.2.840.10008.1.1"
    context.add_transfer_syntax("1.2.840.10008.1.2")
    assert context._transfer_syntax == ["1.2.840.10008.1.2"]
    assert context.transfer_syntax is not None
    # the only mutable attribute a shallow copy would share
    mutable = {
        name
        for name, value in vars(context).items()
        if isinstance(value, list | dict | set | bytearray)
    }
    assert mutable == {"_transfer_syntax"}, mutable
    assert issubclass(SupportedContexts, list)


def test_the_handler_runs_in_the_connections_own_thread_and_starts_the_association() -> None:
    """The node admits a connection in ``handle`` (TLS handshake, association request)
    and then waits there for the association thread that ``handle`` starts."""
    assert issubclass(ThreadedAssociationServer, socketserver.ThreadingMixIn)
    thread = inspect.getsource(ThreadedAssociationServer.process_request_thread)
    assert "self.finish_request(request, client_address)" in thread
    handle = inspect.getsource(RequestHandler.handle)
    assert "assoc = self._create_association()" in handle
    assert "assoc.start()" in handle
    assert "handle" in NodeRequestHandler.__dict__
    assert issubclass(DULServiceProvider, threading.Thread)


def test_accepted_sockets_are_wrapped_on_the_accept_thread_as_we_expect() -> None:
    """Our TLS context wraps without a handshake; pynetdicom wraps in ``get_request``."""
    source = inspect.getsource(AssociationServer.get_request)
    assert "self.ssl_context.wrap_socket(" in source
    assert "server_side=True" in source


def test_the_dul_reads_a_pdu_as_header_then_body_when_the_socket_is_ready() -> None:
    """ReceiveSocket tells a header read (6 bytes) from the body that follows, and serves
    the association request it was given first through ``ready``."""
    read = inspect.getsource(DULServiceProvider._read_pdu_data)
    assert "self.socket.recv(6)" in read
    assert "self.socket.recv(pdu_length)" in read
    assert "struct.error" in read  # an empty header read is a closed connection
    assert "self.socket.ready" in inspect.getsource(DULServiceProvider._is_transport_event)
    assert isinstance(inspect.getattr_static(AssociationSocket, "ready"), property)
    assert isinstance(inspect.getattr_static(ReceiveSocket, "ready"), property)


def test_a_received_data_set_goes_to_a_file_pynetdicom_creates_on_the_dul_thread() -> None:
    """The listener replaces the ``NamedTemporaryFile`` that ``decode_msg`` calls (on the
    DUL thread, from the state machine) with an IncomingFile in the spool; pynetdicom
    writes, flushes and names it, and closes and unlinks it after the C-STORE handler."""
    decode = inspect.getsource(DIMSEMessage.decode_msg)
    assert 'NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")' in decode
    assert "self._data_set_file.write(data[1:])" in decode
    assert "self._data_set_file.file.flush()" in decode
    assert "Path(self._data_set_file.name)" in decode
    assert "dul.assoc.dimse.receive_primitive(" in inspect.getsource(fsm)
    # the DUL thread finds its connection's socket (and so the spool) by this attribute
    assert "self.socket: " in inspect.getsource(DULServiceProvider.__init__)
    scp = inspect.getsource(StorageServiceClass.SCP)
    assert "req._dataset_file.close()" in scp  # the handler reads the refusal here too
    assert "os.unlink(req._dataset_file.name)" in scp
    dataset_path = inspect.getattr_static(Event, "dataset_path")
    assert "req._dataset_path" in inspect.getsource(dataset_path.fget)
    receive_into_spool()
    assert dimse_messages.NamedTemporaryFile.__name__ == "_dataset_file"
    for method in ("write", "flush", "close", "discard"):
        assert callable(getattr(IncomingFile, method)), method
    assert isinstance(inspect.getattr_static(IncomingFile, "file"), property)
