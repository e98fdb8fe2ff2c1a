"""A monitoring port already in use is logged and skipped: the node still starts and
receives (before, the server's cleanup after the failed bind raised an AttributeError
that hid the real error and stopped the node)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.app import NodeService
from node.config import Settings
from node.http.server import MonitoringServer

NodeFactory = Callable[..., tuple[NodeService, Settings]]


def test_a_busy_monitoring_port_leaves_the_node_receiving(
    node_factory: NodeFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        service, settings = node_factory(http={"host": "127.0.0.1", "port": port})
        assert service.http is None
        # the log goes to stdout, or through logging once another test routed it there
        captured = capsys.readouterr()
        assert "http.unavailable" in captured.out + captured.err + caplog.text
        assert service.scp is not None
        ae = AE(ae_title="PORT_TEST")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", service.scp.port, ae_title=settings.node.ae_title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_the_server_raises_the_bind_error_itself(node_factory: NodeFactory) -> None:
    service, settings = node_factory()
    assert service.http is not None
    taken = settings.http.model_copy(update={"port": service.http.port})
    with pytest.raises(OSError):
        MonitoringServer(service.http.view, taken).start()
