"""The monitoring HTTP server: standard library ``http.server`` in background threads.

Routes: ``GET /healthz`` (JSON; 200 healthy, 503 not), ``GET /metrics`` (Prometheus
text), ``GET /`` (status page), ``GET /studies/<uid>`` (study page) and its pictures
(``GET /studies/<uid>/pictures/<generation>/<name>.png``), and, with a token only,
``POST /studies/<uid>/retry|reprocess`` (:mod:`node.http.actions`). With ``http.token``
set every route requires ``Authorization: Bearer <token>``, or HTTP Basic with the token
as password (what a browser sends once it has asked), 401 otherwise; the token is never
logged. Binds to ``http.host`` (127.0.0.1 by default: put a reverse proxy in front to
expose it).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import structlog

from node.config import HttpSettings
from node.errors import NodeError
from node.http.actions import perform
from node.http.health import check_health
from node.http.metrics import CONTENT_TYPE, render_metrics
from node.http.pages import render_status_page
from node.http.study import picture_file, render_study_page
from node.http.view import NodeView

__all__ = ["MonitoringServer"]

log = structlog.get_logger(__name__)

_UID = r"([0-9][0-9.]{0,63})"
_STUDY_ROUTE = re.compile(rf"/studies/{_UID}")
_PICTURE_ROUTE = re.compile(rf"/studies/{_UID}/pictures/([0-9]{{1,6}})/([^/]+)")
_ACTION_ROUTE = re.compile(rf"/studies/{_UID}/(retry|reprocess)")
#: Largest POST body read, bytes (the forms carry one short field).
_MAX_FORM = 4096


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
        path = unquote(self.path.split("?", 1)[0])
        if not self._authorised():
            self._refuse()
            return
        try:
            self._get(path)
        except Exception:
            log.exception("http.failed", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"error\n")

    def _get(self, path: str) -> None:
        view = self.server.view
        if path == "/healthz":
            healthy, checks = check_health(view)
            body = json.dumps({"healthy": healthy, "checks": checks}, indent=2)
            status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, "application/json", body.encode())
        elif path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE, render_metrics(view).encode())
        elif path in ("/", "/index.html"):
            self._html(render_status_page(view))
        elif (picture := _PICTURE_ROUTE.fullmatch(path)) is not None:
            study_uid, generation, name = picture.groups()
            data = picture_file(view, study_uid, int(generation), name)
            if data is None:
                self._not_found()
            else:
                # a generation's pictures never change: let the browser keep them
                cache = {"Cache-Control": "private, max-age=86400, immutable"}
                self._send(HTTPStatus.OK, "image/png", data, cache)
        elif (study := _STUDY_ROUTE.fullmatch(path)) is not None:
            page = render_study_page(view, study.group(1))
            self._html(page) if page is not None else self._not_found()
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = unquote(self.path.split("?", 1)[0])
        if not self._authorised():
            self._refuse()
            return
        secret = self.server.token
        action = _ACTION_ROUTE.fullmatch(path)
        if action is None:
            self._not_found()
            return
        if not secret:
            body = b"read-only: actions need http.token\n"
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8", body)
            return
        study_uid, name = action.groups()
        try:
            form = self._form()
            actor = f"http {self.client_address[0]}"
            view = self.server.view
            done = perform(view.session_factory, secret, name, study_uid, form, actor)
        except PermissionError as exc:
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8", f"{exc}\n".encode())
            return
        except (NodeError, ValueError) as exc:
            self._send(HTTPStatus.CONFLICT, "text/plain; charset=utf-8", f"{exc}\n".encode())
            return
        except Exception:
            log.exception("http.failed", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"error\n")
            return
        log.info("http.action", action=name, study_uid=study_uid, result=done)
        page = render_study_page(self.server.view, study_uid, message=done)
        self._html(page or done)

    def _form(self) -> str:
        """The ``csrf`` field of a small urlencoded form body."""
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= _MAX_FORM:
            raise ValueError("form too large")
        fields = parse_qs(self.rfile.read(length).decode("ascii", "replace"))
        return (fields.get("csrf") or [""])[0]

    def _html(self, page: str) -> None:
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _refuse(self) -> None:
        # one challenge per header: browsers answer the Basic one by asking once
        self._send(
            HTTPStatus.UNAUTHORIZED,
            "text/plain; charset=utf-8",
            b"bearer token required\n",
            challenges=('Bearer realm="breast-node"', 'Basic realm="breast-node"'),
        )

    def _authorised(self) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(given, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return False
            given = decoded.partition(":")[2]  # any user name; the token is the password
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        challenges: tuple[str, ...] = (),
    ) -> None:
        headers = {"Cache-Control": "no-store", **(headers or {})}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        for challenge in challenges:
            self.send_header("WWW-Authenticate", challenge)
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
