"""``/healthz``: is the node able to do its job right now?

Healthy (HTTP 200) only when every check passes: the DICOM listener answers a real
C-ECHO (over DICOM TLS when the listener speaks TLS), the database takes a write
transaction, the spool is writable and under its watermark, the model is loaded (or no
model is configured, which the answer says explicitly), and the decoding processes
(``inference.decode_processes``) are alive. Otherwise HTTP 503, with the failing checks
named.

The C-ECHO calls the node's own AE title with the node's own AE title. When the
``security`` allow-lists refuse that (an A-ASSOCIATE-RJ), the listener still read and
answered an association request, which is what the check is about: it passes and says so.
A listener whose accept thread or association threads are stuck, or that does not
answer within ``_PROBE_TIMEOUT`` seconds, fails it.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from node.config import ServerTls
from node.dicom import status
from node.dicom.scu import Peer, probe
from node.dicom.security import ClientContext
from node.errors import StorageError
from node.http.view import NodeView

__all__ = ["check_health"]

Check = dict[str, Any]

#: Seconds the listener has to answer the C-ECHO (association and response each).
_PROBE_TIMEOUT = 5.0


def _listener(view: NodeView) -> Check:
    port = view.listener_port()
    if port is None:
        return {"ok": False, "detail": "DICOM listener is not running"}
    node = view.settings.node
    host = node.host if node.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    tls = view.settings.security.tls
    peer = Peer(
        host=host, port=port, ae_title=node.ae_title, calling_ae_title=node.ae_title,
        timeout=_PROBE_TIMEOUT,
    )  # fmt: skip
    start = time.perf_counter()
    try:
        answer = probe(peer, _probe_context(tls) if tls is not None else None)
    except Exception as exc:  # a socket or TLS error on our side of the probe
        return {"ok": False, "detail": f"C-ECHO to {host}:{port} failed: {exc}"}
    took = f"{(time.perf_counter() - start) * 1000:.0f} ms"
    over = " over TLS" if tls is not None else ""
    if answer.rejected:
        return {
            "ok": True,
            "detail": f"{node.ae_title} on port {port} answered{over} in {took} (the security "
            "allow-lists refused the C-ECHO's association)",
        }
    if not answer.established:
        if tls is not None and _tls_answers(host, port, _probe_context(tls)):
            return {
                "ok": True,
                "detail": f"{node.ae_title} on port {port} answered the TLS handshake in "
                f"{took} (it did not accept the node's own certificate as a client "
                "certificate, so no C-ECHO)",
            }
        return {
            "ok": False,
            "detail": f"no association with {node.ae_title} on {host}:{port}{over} "
            f"within {_PROBE_TIMEOUT:g} s",
        }
    if answer.status != status.SUCCESS:
        shown = "none" if answer.status is None else status.describe(answer.status)
        return {"ok": False, "detail": f"C-ECHO{over} answered {shown}"}
    return {"ok": True, "detail": f"{node.ae_title} on port {port} answered C-ECHO{over} in {took}"}


def _tls_answers(host: str, port: int, context: ssl.SSLContext) -> bool:
    """Whether the listener answers a TLS handshake in time (completing it, or refusing
    our certificate with an alert), as opposed to not answering at all."""
    try:
        with (
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as wrapped,
        ):
            wrapped.settimeout(_PROBE_TIMEOUT)
            wrapped.recv(1)  # TLS 1.3 reports a refused client certificate here
    except ssl.SSLError:
        return True  # an alert: the listener answered
    except TimeoutError:
        return False  # connected, but nothing answered: the stuck listener we look for
    except OSError:
        return False
    return True


def _probe_context(tls: ServerTls) -> ssl.SSLContext:
    """A TLS client context for calling our own listener: the node's own certificate as
    the client certificate (accepted where ``ca_certificates`` holds the CA that signed
    it), the listener's certificate not checked (it is our own, on this machine)."""
    context = ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context


def _database(view: NodeView, *, write: bool) -> Check:
    if not write:
        try:
            with view.read_factory() as session:
                session.execute(text("SELECT version FROM schema_version"))
        except SQLAlchemyError as exc:
            return {"ok": False, "detail": f"database not readable: {type(exc).__name__}"}
        return {"ok": True, "detail": "readable (/healthz checks that it takes a write)"}
    try:
        with view.session_factory.begin() as session:
            # a write that changes nothing: fails on a read-only or locked-out database
            session.execute(text("UPDATE schema_version SET version = version WHERE 1 = 0"))
    except SQLAlchemyError as exc:
        return {"ok": False, "detail": f"database not writable: {type(exc).__name__}"}
    return {"ok": True, "detail": "writable"}


def _spool(view: NodeView) -> Check:
    root = view.spool.root
    if not os.access(root, os.W_OK):
        return {"ok": False, "detail": f"spool {root} is not writable"}
    try:
        view.spool.check_space()
    except StorageError as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True, "detail": "writable, under its watermark"}


def _model(view: NodeView) -> Check:
    loaded = view.model()
    if loaded is not None:
        return {"ok": True, "detail": f"model {loaded} loaded"}
    configured = view.settings.models
    if not configured:
        return {"ok": True, "detail": "no model configured (receive and queue only)"}
    folders = ", ".join(map(str, configured))
    return {"ok": False, "detail": f"model {folders} is configured but not loaded"}


def _decoders(view: NodeView) -> Check | None:
    state = view.decoders()
    if state is None:
        return None
    ok, detail = state
    return {"ok": ok, "detail": detail}


def check_health(view: NodeView, *, write_probe: bool = True) -> tuple[bool, dict[str, Check]]:
    """Run every check; returns (healthy, check name -> {ok, detail}).

    ``decoders`` is there only when the node decodes in separate processes. With
    ``write_probe=False`` (the status page) the database is only read, so the page never
    waits for SQLite's write lock; ``/healthz`` keeps the write probe.
    """
    checks = {
        "listener": _listener(view),
        "database": _database(view, write=write_probe),
        "spool": _spool(view),
        "model": _model(view),
    }
    decoders = _decoders(view)
    if decoders is not None:
        checks["decoders"] = decoders
    return all(check["ok"] for check in checks.values()), checks
