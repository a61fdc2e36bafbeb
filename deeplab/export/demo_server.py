"""The local demo: one page and a small JSON API over a loaded model (``python -m deeplab.serve``).

Built on the standard library's ``http.server.ThreadingHTTPServer`` (CONVENTIONS.md says why no
framework) around one :class:`deeplab.export.loading.Segmenter`:

====================  =======================================================================
``GET /``             the page (``demo_page/index.html``, shipped in the package)
``GET /static/NAME``  a file of the package's ``demo_page`` folder: the names are read once at
                      start and looked up as they are, so no request path ever reaches the file
                      system (``/static/../../etc/passwd`` and its encodings are a 404)
``GET /healthz``      ``{"status": "ok", ...}`` with the queue's state and counters
``GET /v1/model``     the model: its card's summary line, classes and colours, the server's
                      limits, and the model card itself (``card``, null when it has none)
``POST /v1/segment``  the image file's bytes as the body (any content type; the bytes decide)
                      -> ``{"width", "height", "format", "label_map_png", "classes",
                      "background", "timings_ms", "notes"}``: ``label_map_png`` is a base64
                      8-bit palette PNG whose pixel values are the class indices (its palette
                      holds the classes' colours, so a viewer shows the colour map; 16-bit
                      grayscale when a model has more than 256 classes); ``classes`` lists the
                      classes found, most pixels first, with ``pixels`` and ``share``
====================  =======================================================================

Safe by default: every refusal is one JSON line ``{"status", "error", "message"}`` (never a
traceback); the body is capped (413 ``body_too_large``, refused from Content-Length before it is
read); the pixels are capped (413 ``too_many_pixels``) from the image's header before anything
is decoded (:func:`declared_image_size`); the bytes must be a JPEG, PNG, WebP or BMP file (415
otherwise, whatever the name or content type says); at most ``queue_size`` segment requests are
held at once (one on the model, the rest read and waiting), and one more is refused with 503
``busy`` and ``Retry-After``; at most ``max_connections`` connections are open (the rest get a
503 line and are closed without a thread); reading a request and waiting for the model are
bounded by ``request_timeout`` (408 / 503). One request per connection (``Connection: close``).
"""

import base64
import http
import http.server
import importlib.resources
import io
import ipaddress
import json
import socket
import sys
import threading
import time
import urllib.parse

import numpy as np

from deeplab.common.errors import UserError
from deeplab.data import images as image_io

# The formats the endpoint takes, by their leading bytes. GIF is refused on purpose: a GIF is an
# animation or a 256-colour drawing, not a photo, and its first frame alone would mislead.
ACCEPTED_FORMATS = ("jpeg", "png", "webp", "bmp")
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 4
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 64
RETRY_AFTER_S = 1
PAGE_FOLDER = "demo_page"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
# The page loads nothing from elsewhere (it runs offline) and no inline script.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RequestError(Exception):
    """A refusal: HTTP ``status``, a short ``code`` and a one-line ``message``."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = int(status), code, message
        self.headers = dict(headers or {})


# -------------------------------------------------------------------------------------------
# Image headers: format and declared size, read before decoding anything.
# -------------------------------------------------------------------------------------------


def image_format(data):
    """The format named by a file's leading bytes ("jpeg", "png", "webp", "bmp", "gif", "tiff"),
    or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


_ACCEPTED_KINDS = ("jpeg", "png", "webp", "bmp")


def declared_image_size(data):
    """(format, width, height) that an image file's header declares, read from its first
    bytes without decoding: PNG's IHDR, JPEG's first frame header (SOFn), WebP's VP8 / VP8L /
    VP8X header, BMP's info header. The server checks the pixel cap on these numbers, so a
    small file that declares 30000 x 30000 pixels is refused before any pixel is made.

    (The one header reader, :func:`deeplab.data.images.image_size`, as every reader's cap.)

    Raises:
      RequestError: 415 for bytes that are not one of :data:`ACCEPTED_FORMATS` (GIF and TIFF
        are named), 400 for a header that is cut short or declares no pixels.
    """
    kind = image_format(data)
    if kind not in _ACCEPTED_KINDS:
        what = f"a {kind.upper()} file" if kind else "not an image file"
        raise RequestError(
            415,
            "unsupported_image",
            f"the body is {what} (judged by its bytes, not its name or content type): send "
            "the bytes of a JPEG, PNG, WebP or BMP photo",
        )
    size = image_io.image_size(data)
    if size is None:
        raise RequestError(
            400,
            "bad_image",
            f"the {kind.upper()} file's header is cut short or damaged: no image size found",
        )
    height, width = size
    if width < 1 or height < 1:
        raise RequestError(
            400, "bad_image", f"the {kind.upper()} header declares {width} x {height} pixels"
        )
    return kind, width, height


# -------------------------------------------------------------------------------------------
# Responses.
# -------------------------------------------------------------------------------------------


def label_map_png(labels, colors):
    """PNG bytes of a label map: 8-bit palette image (pixel = class index, palette = the
    classes' colours) for up to 256 classes, else 16-bit grayscale."""
    # PIL: only the PNG writer needs it (as in deeplab.data.images)
    from PIL import Image  # pylint: disable=import-outside-toplevel

    labels = np.asarray(labels)
    buffer = io.BytesIO()
    if len(colors) <= 256 and labels.min(initial=0) >= 0 and labels.max(initial=0) <= 255:
        image = Image.fromarray(labels.astype(np.uint8)).convert("P")
        table = np.zeros((256, 3), np.uint8)
        table[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)[:256]
        image.putpalette(table.reshape(-1).tolist())
    else:
        image = Image.fromarray(labels.astype(np.uint16))  # I;16
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def error_line(status, code, message):
    """The one JSON line of a refusal (with its newline), as bytes."""
    body = {"status": int(status), "error": code, "message": str(message)}
    return (json.dumps(body, ensure_ascii=True) + "\n").encode("ascii")


def _raw_response(status, code, message, headers=None):
    """A whole HTTP/1.1 response with a JSON error line, for a socket no handler reads."""
    body = error_line(status, code, message)
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *[f"{k}: {v}" for k, v in (headers or {}).items()],
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def read_page_files():
    """{relative name: (bytes, content type)} of the package's demo_page folder (read once)."""
    root = importlib.resources.files("deeplab.export").joinpath(PAGE_FOLDER)
    files = {}

    def walk(folder, prefix):
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                walk(entry, name + "/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1].lower() if "." in entry.name else ""
            if suffix in _CONTENT_TYPES:
                files[name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])

    if root.is_dir():
        walk(root, "")
    return files


def sample_names(page_files):
    """The bundled sample photos (``samples/*.png``), sorted."""
    return sorted(n for n in page_files if n.startswith("samples/") and n.endswith(".png"))


# -------------------------------------------------------------------------------------------
# The server.
# -------------------------------------------------------------------------------------------


def model_pixel_cap(segmenter):
    """The pixel cap of a loaded model: its card's ``input.max_pixels`` (an export's serving
    cap), else the SavedModel default (4096 x 4096)."""
    card = segmenter.card or {}
    cap = (card.get("input") or {}).get("max_pixels")
    return int(cap) if cap else image_io.DEFAULT_MAX_PIXELS


class DemoServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer over one segmenter, with the limits of the module docstring."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address,
        segmenter,
        *,
        max_request_bytes=DEFAULT_MAX_REQUEST_BYTES,
        max_pixels=0,
        queue_size=DEFAULT_QUEUE_SIZE,
        request_timeout=DEFAULT_REQUEST_TIMEOUT,
        max_connections=DEFAULT_MAX_CONNECTIONS,
        access_log=None,
    ):
        if queue_size < 1 or max_connections < 1 or max_request_bytes < 1:
            raise ValueError("queue_size, max_connections and max_request_bytes must be >= 1")
        self.segmenter = segmenter
        self.max_request_bytes = int(max_request_bytes)
        self.max_pixels = int(max_pixels) if max_pixels else model_pixel_cap(segmenter)
        self.queue_size = int(queue_size)
        self.request_timeout = float(request_timeout)
        self.access_log = access_log
        self.page_files = read_page_files()
        self.started = time.time()
        self.model_lock = threading.Lock()
        self._admitted = threading.BoundedSemaphore(self.queue_size)
        self._connections = threading.BoundedSemaphore(int(max_connections))
        self._state = threading.Condition()
        self.counters = {"open_connections": 0, "held": 0, "segmented": 0, "refused_busy": 0}
        if ":" in str(address[0]):  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, DemoRequestHandler)

    # --- connections: bounded, no thread for one over the cap ---------------------------

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            self.count("refused_busy")
            try:
                request.settimeout(1.0)
                request.sendall(
                    _raw_response(
                        503,
                        "busy",
                        "too many open connections; retry shortly",
                        {"Retry-After": str(RETRY_AFTER_S)},
                    )
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.count("open_connections", 1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.count("open_connections", -1)
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.count("open_connections", -1)
            self._connections.release()

    def handle_error(self, request, client_address):
        # One line, never a traceback (a client that went away mid-request lands here).
        error = sys.exc_info()[1]
        self.log(f"{client_address[0]} connection error: {type(error).__name__}: {error}")

    # --- the queue of segment requests ---------------------------------------------------

    def admit(self):
        """Holds a queue place for a segment request; False when the queue is full."""
        if not self._admitted.acquire(blocking=False):
            self.count("refused_busy")
            return False
        self.count("held", 1)
        return True

    def release(self):
        self.count("held", -1)
        self._admitted.release()

    def count(self, name, delta=1):
        with self._state:
            self.counters[name] += delta
            self._state.notify_all()

    def wait_idle(self, timeout):
        """Waits until no connection is open (after shutdown()); True when none is."""
        with self._state:
            return self._state.wait_for(
                lambda: self.counters["open_connections"] == 0, timeout=timeout
            )

    def log(self, line):
        """One line of the access log: written to the ``access_log`` stream the caller gave
        (``python -m deeplab.serve --access_log``: standard error), nothing without one."""
        if self.access_log is not None:
            self.access_log.write(f"{line}\n")
            self.access_log.flush()

    # --- what the endpoints return -------------------------------------------------------

    def limits(self):
        return {
            "max_request_bytes": self.max_request_bytes,
            "max_pixels": self.max_pixels,
            "queue_size": self.queue_size,
            "request_timeout_s": self.request_timeout,
            "formats": list(ACCEPTED_FORMATS),
        }

    def model_info(self):
        seg = self.segmenter
        card = seg.card or None
        return {
            "summary": seg.summary(),
            "name": (card or {}).get("name") or seg.path,
            "kind": seg.kind,
            "classes": [
                {"index": i, "name": name, "color": [int(c) for c in seg.colors[i]]}
                for i, name in enumerate(seg.classes)
            ],
            "background": seg.background,
            "ignore_label": seg.ignore_label,
            "samples": ["/static/" + name for name in sample_names(self.page_files)],
            "limits": self.limits(),
            "card": card,
        }

    def health(self):
        with self._state:
            counters = dict(self.counters)
        return {
            "status": "ok",
            "model": self.segmenter.summary(),
            "uptime_s": round(time.time() - self.started, 1),
            "queue": {"held": counters["held"], "size": self.queue_size},
            "segmented": counters["segmented"],
            "refused_busy": counters["refused_busy"],
        }

    def segment(self, body, received):
        """The response of POST /v1/segment for the body's bytes (``received``: when the
        request's first byte was read, for the total time)."""
        kind, width, height = declared_image_size(body)
        if width * height > self.max_pixels:
            raise RequestError(
                413,
                "too_many_pixels",
                f"the {kind.upper()} header declares {width} x {height} = {width * height:,} "
                f"pixels; this model takes at most {self.max_pixels:,} (send a smaller image)",
            )
        start = time.perf_counter()
        try:
            pixels, note = image_io.read_rgb(body, path="request body")
        except image_io.ImageError as error:
            raise RequestError(400, "bad_image", str(error)) from None
        if pixels.shape[0] * pixels.shape[1] > self.max_pixels:  # the header lied
            raise RequestError(413, "too_many_pixels", "the decoded image exceeds the pixel cap")
        decoded = time.perf_counter()
        remaining = max(0.0, self.request_timeout - (decoded - received))
        if not self.model_lock.acquire(timeout=remaining):
            self.count("refused_busy")
            raise RequestError(
                503,
                "busy",
                f"the model stayed busy for the request timeout ({self.request_timeout:g} s)",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            on_model = time.perf_counter()
            labels = self.segmenter.predict(pixels)
            done = time.perf_counter()
        except UserError as error:  # the model refused these pixels (its own checks)
            raise RequestError(400, "bad_image", str(error).splitlines()[0]) from None
        finally:
            self.model_lock.release()
        png = label_map_png(labels, self.segmenter.colors)
        total = np.bincount(labels.reshape(-1).clip(0), minlength=1)
        classes = []
        for found in self.segmenter.classes_found(labels):
            index = found["index"]
            color = self.segmenter.colors[index] if index < len(self.segmenter.colors) else (0,) * 3
            classes.append(
                {
                    "index": index,
                    "name": found["name"],
                    "color": [int(c) for c in color],
                    "pixels": int(total[index]),
                    "share": round(float(found["share"]), 6),
                }
            )
        encoded = time.perf_counter()
        self.count("segmented")
        return {
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "format": kind,
            "label_map_png": base64.b64encode(png).decode("ascii"),
            "classes": classes,
            "background": self.segmenter.background,
            "timings_ms": {
                "decode": round(1000 * (decoded - start), 2),
                "queue": round(1000 * (on_model - decoded), 2),
                "model": round(1000 * (done - on_model), 2),
                "encode": round(1000 * (encoded - done), 2),
                "total": round(1000 * (encoded - received), 2),
            },
            "notes": [note.split(": ", 1)[-1]] if note else [],
        }


_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
    503: "busy",
    505: "http_version_not_supported",
}


class DemoRequestHandler(http.server.BaseHTTPRequestHandler):
    """One request per connection; every error one JSON line."""

    server_version = "deeplab-serve"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every response closes anyway
    # A request line that cannot be parsed still gets a status line and headers (HTTP/0.9's
    # default would send the bare body).
    default_request_version = "HTTP/1.0"

    def version_string(self):
        return self.server_version

    def setup(self):
        self.timeout = self.server.request_timeout  # socket timeout for every read
        super().setup()
        self._started = time.perf_counter()

    # --- output ----------------------------------------------------------------------

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in {**_PAGE_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _send_json(self, status, payload, headers=None):
        body = (json.dumps(payload, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        self._send(status, body, "application/json", headers)

    def _send_error_line(self, error):
        self._send(
            error.status,
            error_line(error.status, error.code, error.message),
            "application/json",
            error.headers,
        )

    def send_error(self, code, message=None, explain=None):
        # The base class's own refusals (bad request line, unknown method, headers too long):
        # one JSON line like every other error.
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        text = message or phrase
        if code == 501:
            text = f"method {self.command!r} is not served: use GET or POST"
        try:
            self._send_error_line(RequestError(code, _ERROR_CODES.get(code, "error"), text))
        except OSError:
            self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002  (the base class's signature)
        self.server.log(f"{self.client_address[0]} {format % args}")

    def log_request(self, code="-", size="-"):
        elapsed = 1000 * (time.perf_counter() - self._started)
        line = getattr(self, "requestline", "")
        self.server.log(f'{self.client_address[0]} "{line}" {code} {elapsed:.0f} ms')

    # --- input -----------------------------------------------------------------------

    def _content_length(self):
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(
                411, "length_required", "chunked bodies are not taken: send Content-Length"
            )
        value = self.headers.get("Content-Length")
        if value is None:
            raise RequestError(411, "length_required", "send the body with a Content-Length")
        if not value.strip().isdigit():
            raise RequestError(400, "bad_request", f"Content-Length {value!r} is not a number")
        length = int(value)
        if length > self.server.max_request_bytes:
            raise RequestError(
                413,
                "body_too_large",
                f"the body has {length:,} bytes; this server takes at most "
                f"{self.server.max_request_bytes:,} (--max_request_mb)",
            )
        return length

    def _read_body(self, length):
        chunks, left = [], length
        deadline = time.monotonic() + self.server.request_timeout
        try:
            while left:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = self.rfile.read1(min(left, 1 << 20))
                if not chunk:
                    raise RequestError(
                        400,
                        "bad_request",
                        f"the body ended after {length - left:,} of its {length:,} bytes",
                    )
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            raise RequestError(
                408,
                "request_timeout",
                f"the body did not arrive within {self.server.request_timeout:g} s",
            ) from None
        return b"".join(chunks)

    def parse_request(self):
        # Headers that stop arriving: a 408 line (the base class would close without a word).
        try:
            return super().parse_request()
        except TimeoutError:
            self.command = self.command or "GET"
            self._send_error_line(
                RequestError(
                    408,
                    "request_timeout",
                    f"the headers did not arrive within {self.server.request_timeout:g} s",
                )
            )
            return False

    def handle_expect_100(self):
        # Refuse an oversized body before the client sends it.
        try:
            self._content_length()
        except RequestError as error:
            if error.status == 413:
                self._send_error_line(error)
                return False
        return super().handle_expect_100()

    def _linger(self):
        """After a refusal that left the body unread: stop writing, then read and drop what
        the client is still sending for a short while, so it reads the answer instead of a
        reset connection."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            dropped = 0
            while time.monotonic() < deadline and dropped < 64 * 1024 * 1024:
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass

    # --- routes ----------------------------------------------------------------------

    def _route(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if self.command in ("GET", "HEAD"):
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/healthz":
                return self._send_json(200, self.server.health())
            if path == "/v1/model":
                return self._send_json(200, self.server.model_info())
            if path == "/v1/segment":
                raise RequestError(405, "method_not_allowed", "POST the image bytes here")
        elif self.command == "POST":
            if path == "/v1/segment":
                return self._segment()
            raise RequestError(
                405 if path in ("/", "/healthz", "/v1/model") else 404,
                "method_not_allowed" if path in ("/", "/healthz", "/v1/model") else "not_found",
                f"POST {path[:200]!r}: only /v1/segment takes a POST",
            )
        raise RequestError(404, "not_found", f"no such page: {path[:200]!r}")

    def _static(self, name):
        entry = self.server.page_files.get(name)
        if entry is None:
            raise RequestError(404, "not_found", f"no such page: {('/static/' + name)[:200]!r}")
        body, content_type = entry
        self._send(200, body, content_type)

    def _segment(self):
        received = time.perf_counter()
        length = self._content_length()
        if length == 0:
            raise RequestError(
                400, "empty_body", "the body is empty: send the image file's bytes as the body"
            )
        if not self.server.admit():
            raise RequestError(
                503,
                "busy",
                f"{self.server.queue_size} requests are already queued; retry in {RETRY_AFTER_S} s",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            body = self._read_body(length)
            self._body_read = True
            result = self.server.segment(body, received)
        finally:
            self.server.release()
        self._send_json(200, result)

    def _dispatch(self):
        self._body_read = False
        try:
            self._route()
        except RequestError as error:
            self._send_error_line(error)
            if self.command == "POST" and not self._body_read:
                self._linger()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001  (one JSON line, never a traceback)
            self.server.log(f"internal error: {type(error).__name__}: {error}")
            try:
                self._send_error_line(
                    RequestError(500, "internal", f"{type(error).__name__}: {error}")
                )
            except OSError:
                self.close_connection = True

    do_GET = do_HEAD = do_POST = _dispatch


def is_loopback(host):
    """Whether ``host`` is an address of this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_forever_in_thread(server):
    """Starts ``server.serve_forever`` in a daemon thread and returns the thread."""
    thread = threading.Thread(target=server.serve_forever, name="deeplab-serve", daemon=True)
    thread.start()
    return thread


def stop(server, thread, grace=None):
    """Stops accepting, lets the requests in flight finish (up to ``grace`` seconds, default
    the request timeout) and closes the socket. Returns True when none was cut off."""
    server.shutdown()
    thread.join()
    idle = server.wait_idle(server.request_timeout if grace is None else grace)
    server.server_close()
    return idle


__all__ = [
    "ACCEPTED_FORMATS",
    "DemoServer",
    "RequestError",
    "declared_image_size",
    "error_line",
    "image_format",
    "is_loopback",
    "label_map_png",
    "model_pixel_cap",
    "read_page_files",
    "sample_names",
    "serve_forever_in_thread",
    "stop",
]
