"""``/healthz`` asks the listener a real C-ECHO: a socket that accepts connections but
answers nothing is unhealthy, an allow-list that refuses the probe is still an answer, and
with DICOM TLS the probe speaks TLS."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from node.app import NodeService
from node.config import Settings
from node.http.health import check_health
from node.http.view import NodeView
from node.spool import Spool
from tests.helpers.node import healthz
from tests.security.conftest import Pki

pytestmark = pytest.mark.peers

NodeFactory = Callable[..., tuple[NodeService, Settings]]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A real TCP listener that accepts connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def test_a_listener_that_accepts_but_never_answers_is_unhealthy(
    node_factory: NodeFactory, silent_listener: int
) -> None:
    """Before, /healthz only opened a TCP connection: a listener stuck before any
    association (every sender locked out) still passed."""
    service, settings = node_factory()
    assert service.session_factory is not None and service.scp is not None
    stuck = NodeView(
        settings=settings,
        session_factory=service.session_factory,
        read_factory=service.session_factory,
        spool=Spool(settings.storage.spool),
        counters=service.counters,
        listener_port=lambda: silent_listener,
        model=lambda: None,
    )
    healthy, checks = check_health(stuck)
    assert not healthy and not checks["listener"]["ok"], checks
    assert "no association" in checks["listener"]["detail"]

    real = NodeView(
        settings=settings,
        session_factory=service.session_factory,
        read_factory=service.session_factory,
        spool=stuck.spool,
        counters=service.counters,
        listener_port=lambda: service.scp.port if service.scp else None,
        model=lambda: None,
    )
    healthy, checks = check_health(real)
    assert checks["listener"]["ok"], checks
    assert "answered C-ECHO" in checks["listener"]["detail"]


def test_an_allow_list_that_refuses_the_probe_is_still_an_answer(
    node_factory: NodeFactory,
) -> None:
    _, settings = node_factory(security={"allowed_calling_ae_titles": ["MODALITY"]})
    code, health = healthz(settings.http.port)
    assert code == 200, health
    assert "allow-lists refused" in health["checks"]["listener"]["detail"]


def test_the_probe_speaks_tls_to_a_tls_listener(node_factory: NodeFactory, pki: Pki) -> None:
    tls = {"certificate": str(pki.server_cert), "private_key": str(pki.server_key)}
    _, settings = node_factory(security={"tls": tls})
    code, health = healthz(settings.http.port)
    assert code == 200, health
    assert "answered C-ECHO over TLS" in health["checks"]["listener"]["detail"]

    # mutual TLS: the node's own certificate (server use only) is refused as a client's,
    # and that refusal is the listener's answer
    strict = {**tls, "ca_certificates": str(pki.ca), "require_client_cert": True}
    _, settings = node_factory(security={"tls": strict})
    code, health = healthz(settings.http.port)
    assert code == 200, health
    assert "answered the TLS handshake" in health["checks"]["listener"]["detail"]
