"""The private pynetdicom hooks the listener relies on are still there, as we know them.

The listener speeds up receiving by extending three places pynetdicom does not publish
(:mod:`node.dicom.transport`, :mod:`node.dicom.contexts`). An upgrade that renamed or
reshaped any of them would not break receiving, only make it silently slower; these
checks make it fail loudly instead, and pyproject.toml pins pynetdicom below its next
major version.
"""

from __future__ import annotations

import inspect
import socketserver
from importlib.metadata import version

import pynetdicom
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from node.dicom.contexts import SupportedContexts
from node.dicom.transport import ReceiveSocket
from node.dicom.transport import RequestHandler as NodeRequestHandler


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
