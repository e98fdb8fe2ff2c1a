"""The monitoring HTTP server: standard library ``http.server`` in background threads.

Routes: ``GET /healthz`` (JSON; 200 healthy, 503 not), ``GET /metrics`` (Prometheus
text), ``GET /`` (status page). With ``http.token`` set every route requires
``Authorization: Bearer <token>`` (401 otherwise); the token is never logged. Binds to
``http.host`` (127.0.0.1 by default: put a reverse proxy in front to expose it).
"""

from __future__ import annotations

import hmac
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from node.config import HttpSettings
from node.http.health import check_health
from node.http.metrics import CONTENT_TYPE, render_metrics
from node.http.pages import render_status_page
from node.http.view import NodeView

__all__ = ["MonitoringServer"]

log = structlog.get_logger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: NodeView, token: str | None) -> None:
        super().__init__(address, _Handler)
        self.view = view
        self.token = token


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "breast-node"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorised():
            self._send(
                HTTPStatus.UNAUTHORIZED,
                "text/plain; charset=utf-8",
                b"bearer token required\n",
                {"WWW-Authenticate": 'Bearer realm="breast-node"'},
            )
            return
        try:
            if path == "/healthz":
                healthy, checks = check_health(self.server.view)
                body = json.dumps({"healthy": healthy, "checks": checks}, indent=2)
                status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, "application/json", body.encode())
            elif path == "/metrics":
                self._send(HTTPStatus.OK, CONTENT_TYPE, render_metrics(self.server.view).encode())
            elif path in ("/", "/index.html"):
                page = render_status_page(self.server.view)
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
        except Exception:
            log.exception("http.failed", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"error\n")

    def _authorised(self) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # request lines go to structlog at debug level; never the Authorization header
        log.debug("http.request", client=self.client_address[0], request=format % args)


class MonitoringServer:
    """Serves the monitoring routes for one node until :meth:`stop`."""

    def __init__(self, view: NodeView, settings: HttpSettings) -> None:
        self.view = view
        self.settings = settings
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        if self._server is None:
            raise RuntimeError("the monitoring server is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind ``http.host:http.port`` and serve in a background thread."""
        self._server = _Server(
            (self.settings.host, self.settings.port), self.view, self.settings.token
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", kwargs={"poll_interval": 0.5}
        )
        self._thread.daemon = True
        self._thread.start()
        log.info(
            "http.started",
            host=self.settings.host,
            port=self.port,
            token_required=bool(self.settings.token),
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
