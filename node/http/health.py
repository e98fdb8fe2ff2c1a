"""``/healthz``: is the node able to do its job right now?

Healthy (HTTP 200) only when every check passes: the DICOM listener accepts TCP
connections (with DICOM TLS: its server is running), the database takes a write
transaction, the spool is writable and under its watermark, and the model is loaded
(or no model is configured, which the answer says explicitly). Otherwise HTTP 503,
with the failing checks named.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from node.errors import StorageError
from node.http.view import NodeView

__all__ = ["check_health"]

Check = dict[str, Any]


def _listener(view: NodeView) -> Check:
    port = view.listener_port()
    if port is None:
        return {"ok": False, "detail": "DICOM listener is not running"}
    if view.settings.security.tls is not None:
        # a bare TCP probe would show up as a failed TLS handshake in the log every time
        return {"ok": True, "detail": f"{view.settings.node.ae_title} listening (TLS) on {port}"}
    host = view.settings.node.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        return {"ok": False, "detail": f"cannot connect to {host}:{port}: {exc.strerror or exc}"}
    return {"ok": True, "detail": f"{view.settings.node.ae_title} listening on port {port}"}


def _database(view: NodeView) -> Check:
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
    configured = view.settings.model
    if configured is None:
        return {"ok": True, "detail": "no model configured (receive and queue only)"}
    return {"ok": False, "detail": f"model {configured} is configured but not loaded"}


def check_health(view: NodeView) -> tuple[bool, dict[str, Check]]:
    """Run every check; returns (healthy, check name -> {ok, detail})."""
    checks = {
        "listener": _listener(view),
        "database": _database(view),
        "spool": _spool(view),
        "model": _model(view),
    }
    return all(check["ok"] for check in checks.values()), checks
