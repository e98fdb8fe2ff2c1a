"""The stock OHIF viewer against Orthanc's DICOMweb, in headless Debian Chromium.

What a radiologist using OHIF would see of the node's results, checked by the tests
(``tests/e2e/test_ohif.py``) and pictured for ``docs/outputs.md``
(``bench/output_pictures.py``):

* a throwaway Orthanc with the DICOMweb plugin (Debian ``orthanc-dicomweb``), loopback
  only, the files uploaded over REST;
* the prebuilt OHIF app (npm ``@ohif/app``, :data:`OHIF_VERSION`, unpacked by
  ``make ohif`` under ``var/ohif/``) served from a small threaded HTTP server with a
  generated ``app-config.js`` and a same-origin proxy to Orthanc's ``/dicom-web``;
* Debian's ``chromium`` driven by Playwright's Python package, launched with
  ``executable_path`` (no browser is ever downloaded).

:func:`ohif_viewer` starts all three and yields a :class:`Viewer`; everything stops
when the ``with`` block ends (also on errors). OHIF 3.13 exposes its services and
cornerstone3D as ``window.services``, ``window.cornerstone`` and
``window.cornerstoneTools``, which is how the page's state is read.
"""

from __future__ import annotations

import http.client
import http.server
import json
import mimetypes
import shutil
import socket
import socketserver
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deploy.demo.orthanc import LocalOrthanc

__all__ = [
    "CHROMIUM",
    "DICOMWEB_PLUGIN",
    "OHIF_DIST",
    "OHIF_VERSION",
    "SrView",
    "StudyView",
    "Viewer",
    "missing",
    "ohif_viewer",
]

ROOT = Path(__file__).resolve().parents[2]
#: The OHIF release the node is checked against (``make ohif`` unpacks it).
OHIF_VERSION = "3.13.2"
OHIF_DIST = ROOT / "var" / "ohif" / OHIF_VERSION / "package" / "dist"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
]
#: Colour OHIF 3.13 draws the active SR measurement in (DICOMSRDisplayTool).
ACTIVE_COLOUR = (0, 255, 0)


def missing(dist: Path = OHIF_DIST) -> str | None:
    """Why the viewer cannot run here (``None`` when it can)."""
    if not (dist / "index.html").is_file():
        return f"no OHIF app at {dist} (make ohif)"
    if not Path(CHROMIUM).exists():
        return "Debian package chromium is not installed"
    if not DICOMWEB_PLUGIN.exists():
        return "Debian package orthanc-dicomweb is not installed"
    if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists():
        return "Debian package orthanc is not installed"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Python package playwright is not installed (test extras)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _orthanc(folder: Path) -> LocalOrthanc:
    """Orthanc with DICOMweb on loopback; files come over REST (no DICOM port)."""
    config = {
        "Name": "ohif-check",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": _free_port(),
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "DicomAet": "OHIFCHECK",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        # no "Host": BulkDataURIs then follow the request's Host, the proxy's origin
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }
    return LocalOrthanc(folder, config)


def app_config() -> str:
    """OHIF's ``app-config.js``: one DICOMweb data source at the same origin."""
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "orthanc",
                "configuration": {
                    "friendlyName": "Orthanc",
                    "name": "orthanc",
                    "qidoRoot": "/dicom-web",
                    "wadoRoot": "/dicom-web",
                    "wadoUriRoot": "/wado",
                    "qidoSupportsIncludeField": False,
                    "supportsReject": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    # OHIF's image-load error listener calls this function; without it every image
    # error becomes "handler is not a function" and hides the real one
    return (
        f"window.config = {json.dumps(config)};\n"
        "window.config.httpErrorHandler = (e) => console.error('OHIF http error', e);\n"
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    """The app's files (SPA fallback to index.html) and a proxy to Orthanc's DICOMweb."""

    protocol_version = "HTTP/1.1"
    dist: Path
    orthanc_port: int
    TYPES: ClassVar[dict[str, str]] = {
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".css": "text/css",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path.startswith(("/dicom-web/", "/dicom-web?", "/wado")):
                self._proxy()
            else:
                self._static()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _proxy(self) -> None:
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("connection", "keep-alive", "accept-encoding")
        }
        connection = http.client.HTTPConnection("127.0.0.1", self.orthanc_port, timeout=120)
        try:
            connection.request("GET", self.path, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in (
                "connection",
                "keep-alive",
                "transfer-encoding",
                "content-length",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _static(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path == "/app-config.js":
            return self._send(200, "text/javascript", app_config().encode())
        target = (self.dist / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.dist) or not target.is_file():
            if "." in path.rsplit("/", 1)[-1]:
                return self._send(404, "text/plain", b"not found")
            target = self.dist / "index.html"  # the app's routes (/viewer, ...)
        kind = self.TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
        return self._send(200, kind or "application/octet-stream", target.read_bytes())

    def _send(self, status: int, kind: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


# --------------------------------------------------------------------------- #
# What the page is asked
# --------------------------------------------------------------------------- #
_JS_IMAGES_READY = """() => {
  if (/Something went wrong/i.test(document.body.innerText)) return true;
  const s = window.services, cs = window.cornerstone;
  if (!s || !cs || !document.querySelector('[data-cy="viewport-grid"]')) return false;
  const grid = s.viewportGridService.getState();
  const all = grid.viewports instanceof Map ? [...grid.viewports.values()]
    : Object.values(grid.viewports || {});
  const filled = all.filter(v => (v.displaySetInstanceUIDs || []).length);
  if (!filled.length) return false;
  const vps = cs.getRenderingEngines().flatMap(re => re.getViewports());
  return filled.every(g => { const v = vps.find(x => x.id === g.viewportId);
    return v && !!v.csImage; });
}"""

_JS_DISPLAY_SETS = """() => window.services.displaySetService.getActiveDisplaySets().map(d => ({
  uid: d.displaySetInstanceUID, modality: d.Modality,
  description: d.SeriesDescription || d.label || '', unsupported: !!d.unsupported,
  isLoaded: !!d.isLoaded, measurementReport: d.isImagingMeasurementReport ?? null,
  measurements: (d.measurements || []).length}))"""

# Pixel statistics of each viewport canvas (cornerstone copies its WebGL render into it)
_JS_CANVASES = """() => [...document.querySelectorAll('[data-cy="viewport-pane"] canvas')]
  .filter(c => c.width > 50 && c.height > 50).map(c => {
    const t = document.createElement('canvas'); t.width = c.width; t.height = c.height;
    const g = t.getContext('2d'); g.drawImage(c, 0, 0);
    const d = g.getImageData(0, 0, t.width, t.height).data;
    const grey = [];
    for (let i = 0; i < d.length; i += 16)
      grey.push(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
    return {width: c.width, height: c.height, grey};
  })"""

# Thumbnails of the study browser: images drawn from the frames (or canvases)
_JS_THUMBNAILS = """() => [...document.querySelectorAll('[data-cy="study-browser-thumbnail"]')]
  .map(t => { const e = t.querySelector('img, canvas'); if (!e) return null;
    const w = e.naturalWidth || e.width, h = e.naturalHeight || e.height;
    if (!w || !h) return null;
    const c = document.createElement('canvas'); c.width = w; c.height = h;
    const g = c.getContext('2d'); g.drawImage(e, 0, 0);
    const d = g.getImageData(0, 0, w, h).data; let s = 0, q = 0, n = 0;
    for (let i = 0; i < d.length; i += 16) { const y = d[i]; s += y; q += y*y; n++; }
    const m = s / n; return {series: t.getAttribute('data-series'), mean: m,
      std: Math.sqrt(Math.max(0, q/n - m*m))}; })"""

_JS_ERRORS = "() => (window.__errs || []).splice(0)"

_JS_SR_READY = """(uid) => {
  if ((window.__errs || []).length) return true;
  const d = window.services.displaySetService.getDisplaySetByUID(uid);
  if (!d || d.unsupported) return true;
  if (d.isLoaded && d.isImagingMeasurementReport === false) return true;
  const vps = window.cornerstone.getRenderingEngines().flatMap(r => r.getViewports());
  return d.isLoaded && vps.some(v => v.csImage) && window.cornerstoneTools.annotation.state
    .getAllAnnotations().some(a => a.metadata?.toolName === 'DICOMSRDisplay');
}"""

# The SR viewport: its image, and the SVG outlines with their points in image pixels
_JS_SR_VIEW = """() => {
  const vps = window.cornerstone.getRenderingEngines().flatMap(r => r.getViewports())
    .filter(v => v.csImage);
  const out = {imageIds: vps.map(v => v.getCurrentImageId()), outlines: [], texts: []};
  const utils = window.cornerstone.utilities;
  for (const svg of document.querySelectorAll('[data-cy="viewport-pane"] svg.svg-layer')) {
    const pane = svg.closest('[data-cy="viewport-pane"]');
    const element = pane.querySelector('.cornerstone-viewport-element');
    const vp = vps.find(v => v.element === element) || vps[0];
    for (const p of svg.querySelectorAll('polyline')) {
      const nums = (p.getAttribute('points') || '').trim().split(/[\\s,]+/).map(Number);
      const pts = [];
      for (let i = 0; i + 1 < nums.length; i += 2) pts.push([nums[i], nums[i + 1]]);
      const image = vp ? pts.map(([x, y]) => utils.worldToImageCoords(vp.getCurrentImageId(),
        vp.canvasToWorld([x, y]))) : [];
      out.outlines.push({colour: p.getAttribute('stroke'), canvas: pts, image});
    }
    out.texts.push(...[...svg.querySelectorAll('text')].map(t => t.textContent).filter(Boolean));
  }
  return out;
}"""

_JS_IMAGE_TO_CANVAS = """([x0, y0, x1, y1]) => {
  const vp = window.cornerstone.getRenderingEngines().flatMap(r => r.getViewports())
    .find(v => v.csImage);
  const id = vp.getCurrentImageId(), u = window.cornerstone.utilities;
  const a = vp.worldToCanvas(u.imageToWorldCoords(id, [x0, y0]));
  const b = vp.worldToCanvas(u.imageToWorldCoords(id, [x1, y1]));
  const r = vp.element.getBoundingClientRect();
  return [r.left + Math.min(a[0], b[0]), r.top + Math.min(a[1], b[1]),
          r.left + Math.max(a[0], b[0]), r.top + Math.max(a[1], b[1])];
}"""


@dataclass
class StudyView:
    """A study as the viewer shows it on opening."""

    display_sets: list[dict[str, Any]]
    canvases: list[dict[str, Any]]
    thumbnails: list[dict[str, Any] | None]
    errors: list[str]
    protocol: str | None = None


@dataclass
class SrView:
    """What double-clicking an SR's thumbnail gave."""

    description: str
    measurement_report: bool | None
    image_ids: list[str]
    outlines: list[dict[str, Any]]
    texts: list[str]
    text: str
    errors: list[str] = field(default_factory=list)


class Viewer:
    """The running viewer: open studies, open SR thumbnails, take pictures."""

    def __init__(self, page: Any, url: str, timeout: float, startup_s: float = 0.0) -> None:
        self.page = page
        self.url = url
        self.timeout = timeout
        self.startup_s = startup_s
        """Seconds from the first request to the study list."""

    def _wait(self, js: str, arg: Any = None, timeout: float | None = None) -> bool:
        try:
            self.page.wait_for_function(
                js, arg=arg, timeout=(timeout or self.timeout) * 1000, polling=250
            )
            return True
        except Exception:  # Playwright's TimeoutError: the caller decides
            return False

    def open_study(self, study_uid: str, *, protocol: str | None = None) -> StudyView:
        """Open a study (optionally with a hanging protocol) and wait for its images."""
        self.page.evaluate(_JS_ERRORS)
        url = f"{self.url}/viewer?StudyInstanceUIDs={study_uid}"
        if protocol:
            url += f"&hangingProtocolId={protocol}"
        self.page.goto(url, wait_until="domcontentloaded")
        self._wait(_JS_IMAGES_READY)
        self._wait(
            '() => document.querySelectorAll(\'[data-cy="study-browser-thumbnail"] img,'
            ' [data-cy="study-browser-thumbnail"] canvas\').length > 0',
            timeout=30,
        )
        self.page.wait_for_timeout(1500)  # the last render and the thumbnails settle
        active = self.page.evaluate(
            "() => window.services.hangingProtocolService.getActiveProtocol?.()?.protocol?.id"
        )
        return StudyView(
            display_sets=self.page.evaluate(_JS_DISPLAY_SETS),
            canvases=self.page.evaluate(_JS_CANVASES),
            thumbnails=self.page.evaluate(_JS_THUMBNAILS),
            errors=self.page.evaluate(_JS_ERRORS),
            protocol=active,
        )

    def open_sr(self, description: str) -> SrView:
        """Double-click the thumbnail of the SR with this Series Description."""
        sets = self.page.evaluate(_JS_DISPLAY_SETS)
        (wanted,) = [d for d in sets if d["modality"] == "SR" and d["description"] == description]
        self.page.evaluate(_JS_ERRORS)
        self.page.locator(f'[id="thumbnail-{wanted["uid"]}"]').dblclick()
        self._wait(_JS_SR_READY, wanted["uid"], timeout=min(self.timeout, 60))
        self.page.wait_for_timeout(1000)
        # OHIF 3.13 sets the SR's tracking UIDs after the first annotation render, so
        # the outline is drawn at the next render: ask for one, as a scroll would
        self.page.evaluate(
            "() => window.cornerstoneTools.utilities.triggerAnnotationRenderForViewportIds("
            "window.cornerstone.getRenderingEngines().flatMap(r => r.getViewports())"
            ".map(v => v.id))"
        )
        self.page.wait_for_timeout(800)
        view = self.page.evaluate(_JS_SR_VIEW)
        state = next(d for d in self.page.evaluate(_JS_DISPLAY_SETS) if d["uid"] == wanted["uid"])
        pane = self.page.locator('[data-cy="viewport-pane"]').first
        return SrView(
            description=description,
            measurement_report=state["measurementReport"],
            image_ids=view["imageIds"],
            outlines=view["outlines"],
            texts=view["texts"],
            text=pane.inner_text()[:3000],
            errors=self.page.evaluate(_JS_ERRORS),
        )

    def screen_box(self, box: Sequence[float]) -> list[float]:
        """An image-pixel box ``(x0, y0, x1, y1)`` of the shown image, in page pixels."""
        return [float(v) for v in self.page.evaluate(_JS_IMAGE_TO_CANVAS, list(box))]

    def screenshot(self, path: Path | None = None) -> bytes:
        data: bytes = self.page.screenshot(path=str(path) if path else None)
        return data


@contextmanager
def ohif_viewer(
    files: Sequence[Path], *, dist: Path = OHIF_DIST, timeout: float = 90.0
) -> Iterator[Viewer]:
    """Orthanc holding ``files``, the OHIF app and a Chromium page on it."""
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="ohif-orthanc-"))
    orthanc = _orthanc(folder)
    server: _Server | None = None
    try:
        orthanc.start()
        plugins = orthanc.get("/plugins")
        if "dicom-web" not in plugins:
            raise RuntimeError(f"Orthanc's DICOMweb plugin is not loaded: {plugins}")
        for path in files:
            orthanc.request("POST", "/instances", path.read_bytes())
        handler = type(
            "Handler",
            (_Handler,),
            {"dist": dist.resolve(), "orthanc_port": int(orthanc.config["HttpPort"])},
        )
        server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
            try:
                context = browser.new_context(
                    viewport={"width": 1600, "height": 1000}, service_workers="block"
                )
                # no onboarding tour over the viewport
                context.add_init_script(
                    "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"
                )
                # OHIF's error boundary swallows unhandled rejections: record them first
                context.add_init_script(
                    "window.__errs = [];"
                    "addEventListener('error', e => __errs.push(String(e.error && e.error.stack"
                    " || e.message).slice(0, 1500)));"
                    "addEventListener('unhandledrejection', e => __errs.push(String(e.reason"
                    " && e.reason.stack || e.reason).slice(0, 1500)));"
                )
                page = context.new_page()
                page.set_default_timeout(timeout * 1000)
                start = time.monotonic()
                page.goto(url + "/", wait_until="domcontentloaded")
                page.wait_for_function(
                    "() => !!document.querySelector('[data-cy=\"study-list-results\"]')"
                    " || /Study List/.test(document.body.innerText)",
                    timeout=timeout * 1000,
                )
                yield Viewer(page, url, timeout, time.monotonic() - start)
            finally:
                browser.close()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
