"""The monitoring HTTP server: standard library ``http.server`` in background threads.

Routes: ``GET /healthz`` (JSON; 200 healthy, 503 not), ``GET /metrics`` (Prometheus
text), ``GET /`` (status page), ``GET /studies/<uid>`` (study page) and its pictures
(``GET /studies/<uid>/pictures/<generation>/<name>.png``), and, with a token only,
``POST /studies/<uid>/retry|reprocess`` (:mod:`node.http.actions`). With ``http.token``
set every route requires ``Authorization: Bearer <token>``, or HTTP Basic with the token
as password (what a browser sends once it has asked), 401 otherwise; the token is never
logged. Binds to ``http.host`` (127.0.0.1 by default: put a reverse proxy in front to
expose it).

A request is read in full by one thread before any other is given to it
(:mod:`node.http.intake`): a client that sends slowly or not at all holds no request
thread, and is closed after ``http.request_timeout`` seconds; at most
``http.max_connections`` requests are read at once. Complete requests are handled by a
fixed set of ``http.threads`` threads, each answer within ``http.request_timeout`` (a
socket timeout on each write, and a deadline on the whole).
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import structlog

from node.config import HttpSettings
from node.deadlines import SocketDeadlines
from node.errors import NodeError
from node.http.actions import perform
from node.http.health import check_health
from node.http.intake import RequestIntake, answer_busy
from node.http.metrics import CONTENT_TYPE, Metrics
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


class _Server(HTTPServer):
    """An HTTP server that reads each request in full (:class:`RequestIntake`) and then
    handles it on one of ``settings.threads`` threads within ``settings.request_timeout``."""

    request_queue_size = 64

    def __init__(self, view: NodeView, settings: HttpSettings) -> None:
        # everything server_close() needs exists before the bind, which may fail (a port
        # in use): HTTPServer closes the server then, and the bind's OSError must surface
        self.view = view
        self.token = settings.token
        self.request_timeout = settings.request_timeout
        self.metrics = Metrics(view)
        self._threads = settings.threads
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._limit = settings.max_connections
        self._pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="http-request")
        self._deadlines = SocketDeadlines("http-deadlines")
        self._request = threading.local()
        self._intake = RequestIntake(
            self._complete, timeout=settings.request_timeout, limit=settings.max_connections
        )
        super().__init__((settings.host, settings.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # on the accepting thread: the request is read on the intake's thread
        self._intake.add(request, client_address)

    def _complete(self, request: socket.socket, client_address: Any, data: bytes) -> None:
        # on the intake's thread: a whole request, for the next free request thread
        with self._waiting_lock:
            busy = self._waiting >= self._threads + self._limit
            if not busy:
                self._waiting += 1
        if busy:
            answer_busy(request)
            return
        try:
            self._pool.submit(self._handle, request, client_address, data)
        except RuntimeError:  # shutting down
            request.close()

    def _handle(self, request: socket.socket, client_address: Any, data: bytes) -> None:
        with self._waiting_lock:
            self._waiting -= 1
        address = str(client_address[0])
        token = self._deadlines.add(
            request,
            self.request_timeout,
            lambda: log.warning(
                "http.dropped",
                client=address,
                reason=f"answer not sent within {self.request_timeout:g} s (http.request_timeout)",
            ),
        )
        self._request.data = data
        try:
            self.finish_request(request, client_address)
        except OSError as exc:  # the client went away, or its deadline shut it down
            log.debug("http.closed", client=address, reason=str(exc))
        except Exception:
            log.exception("http.failed", client=address)
        finally:
            self._deadlines.cancel(token)
            self.shutdown_request(request)

    def request_bytes(self) -> bytes:
        """The request the current thread is handling, as read by the intake."""
        data: bytes = self._request.data
        return data

    def server_close(self) -> None:
        super().server_close()
        self._intake.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._deadlines.close()


class _SocketWriter(io.BufferedIOBase):
    """The response side of a connection: every write sent whole (``sendall``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "breast-node"
    sys_version = ""

    def setup(self) -> None:
        # the request was read in full by the intake; the answer goes straight out
        self.connection = self.request
        self.connection.settimeout(self.server.request_timeout)
        self.rfile = io.BytesIO(self.server.request_bytes())
        self.wfile = _SocketWriter(self.connection)

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
            self._send(HTTPStatus.OK, CONTENT_TYPE, self.server.metrics.render().encode())
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
        self._server = _Server(self.view, self.settings)
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
