"""python -m deeplab.serve: the JSON API over a tiny model, bad input, limits, static files,
the binary's start and clean stop (the page in a real browser: test_serve_browser.py).

Run with ``-s`` to see each bad input's status and JSON line."""

import ast
import base64
import fnmatch
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

import deeplab
import demo_samples
import export_fixtures as fx
import harness
from deeplab.export import demo_server

MAX_BODY = 300_000


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    return deeplab.load(fx.shared_tiny_run(tmp_path_factory)["run_dir"])


def _start(segmenter, **limits):
    server = demo_server.DemoServer(("127.0.0.1", 0), segmenter, **limits)
    return server, demo_server.serve_forever_in_thread(server)


@pytest.fixture(scope="module")
def server(segmenter):
    server, thread = _start(segmenter, max_request_bytes=MAX_BODY, queue_size=2, request_timeout=20)
    yield server
    assert demo_server.stop(server, thread, grace=10)


def call(server, method, path, body=None, headers=None, chunked=False):
    """(status, headers, body bytes) of one request on the loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def one_json_line(body):
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body[:300]
    return json.loads(body)


def png_bytes(pixels, **options):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo():
    return fx.structured_images(1, (45, 37), seed=7)[0]


def test_segment_answers_the_label_map_classes_and_timings(server, segmenter, photo):
    # A PNG sent as "text/plain" named .jpg: the bytes decide, not the name or content type.
    status, headers, body = call(
        server,
        "POST",
        "/v1/segment",
        png_bytes(photo),
        {"Content-Type": "text/plain", "Content-Disposition": 'attachment; filename="x.jpg"'},
    )
    assert status == 200 and headers["Content-Type"] == "application/json", body[:300]
    result = one_json_line(body)
    assert (result["width"], result["height"], result["format"]) == (37, 45, "png")
    label_map = Image.open(io.BytesIO(base64.b64decode(result["label_map_png"])))
    assert label_map.mode == "P" and label_map.size == (37, 45)
    np.testing.assert_array_equal(np.asarray(label_map), segmenter.predict(photo))
    palette = np.asarray(label_map.getpalette()[: 3 * fx.NUM_CLASSES]).reshape(-1, 3)
    np.testing.assert_array_equal(palette, fx.PALETTE)  # a viewer shows the colour map
    found = segmenter.classes_found(np.asarray(label_map))
    assert [c["name"] for c in result["classes"]] == [c["name"] for c in found]
    assert sum(c["pixels"] for c in result["classes"]) == 37 * 45
    for entry in result["classes"]:
        assert entry["color"] == fx.PALETTE[entry["index"]]
        assert entry["share"] == pytest.approx(entry["pixels"] / (37 * 45), abs=1e-6)
    assert set(result["timings_ms"]) == {"decode", "queue", "model", "encode", "total"}
    assert 0 < result["timings_ms"]["model"] <= result["timings_ms"]["total"]
    assert result["background"] is None and result["notes"] == []


def test_exif_orientation_is_applied_and_noted(server, photo):
    # A JPEG stored sideways with orientation 6: the map has the upright (turned) size.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = png_bytes(photo, format="JPEG", quality=95, exif=exif.tobytes())
    status, _, body = call(server, "POST", "/v1/segment", data)
    result = one_json_line(body) if status != 200 else json.loads(body)
    assert status == 200 and (result["width"], result["height"]) == (45, 37)
    assert result["format"] == "jpeg" and "EXIF orientation 6" in result["notes"][0]


def test_model_health_and_the_page(server, segmenter):
    status, _, body = call(server, "GET", "/v1/model")
    model = json.loads(body)
    assert status == 200 and model["summary"] == segmenter.summary()
    assert [c["name"] for c in model["classes"]] == fx.CLASS_NAMES
    assert model["card"]["kind"] == "training_run"
    assert model["limits"]["max_request_bytes"] == MAX_BODY
    assert model["limits"]["max_pixels"] == 4096 * 4096  # a run's cap: the SavedModel default
    assert model["samples"] == [f"/static/samples/{n}" for n in sorted(demo_samples.samples())]
    status, _, body = call(server, "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = call(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/static/demo.js"' in body and b"http" not in body.split(b"<body")[0]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for name in ("demo.js", "demo.css", "favicon.svg", "samples/street.png"):
        status, _, _ = call(server, "GET", f"/static/{name}")
        assert status == 200, name


def _declared_jpeg(width, height):
    """A JPEG's first bytes only: SOI, an APP0 (JFIF) segment, a baseline frame header."""
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + height.to_bytes(2, "big")
    sof += width.to_bytes(2, "big") + b"\x03" + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof


def _gif():
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def _bad_inputs(photo):
    good = png_bytes(photo)
    return {
        "empty body": (b"", 400, "empty_body"),
        "truncated PNG": (good[: len(good) // 2], 400, "bad_image"),
        "PNG cut inside its header": (good[:20], 400, "bad_image"),
        "declared 30000x30000 JPEG": (_declared_jpeg(30000, 30000), 413, "too_many_pixels"),
        "GIF": (_gif(), 415, "unsupported_image"),
        "text sent as an image": (b"this is not a picture\n", 415, "unsupported_image"),
        "body over the cap": (good[:64] + bytes(MAX_BODY + 1 - 64), 413, "body_too_large"),
    }


BAD_INPUTS = list(_bad_inputs(np.zeros((9, 9, 3), np.uint8)))


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_one_json_line(server, photo, name):
    body, expected_status, expected_code = _bad_inputs(photo)[name]
    status, headers, answer = call(
        server, "POST", "/v1/segment", body, {"Content-Type": "image/png"}
    )
    error = one_json_line(answer)
    print(f"{name}: {status} {answer.decode().strip()}")  # the figures of the closing note
    assert (status, error["status"], error["error"]) == (
        expected_status,
        expected_status,
        expected_code,
    )
    assert headers["Content-Type"] == "application/json" and error["message"]
    assert b"Traceback" not in answer


def test_protocol_errors_are_json_lines(server):
    status, _, body = call(server, "POST", "/v1/segment", iter([b"abc"]), chunked=True)
    assert status == 411 and one_json_line(body)["error"] == "length_required"
    status, _, body = call(server, "PUT", "/v1/segment", b"x")
    assert status == 501 and one_json_line(body)["error"] == "not_implemented"
    status, _, body = call(server, "GET", "/v1/segment")
    assert status == 405 and one_json_line(body)["error"] == "method_not_allowed"
    with socket.create_connection(server.server_address, timeout=30) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        answer = b"".join(iter(lambda: raw.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and one_json_line(body)["status"] == 400


def test_expect_100_continue_refuses_an_oversized_body_before_it_is_sent(server):
    with socket.create_connection(server.server_address, timeout=30) as raw:
        raw.sendall(
            b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        answer = b"".join(iter(lambda: raw.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and one_json_line(body)["error"] == "body_too_large"
    with socket.create_connection(server.server_address, timeout=30) as raw:  # within the cap
        raw.sendall(
            b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        raw.sendall(b"hello")
        answer = b"".join(iter(lambda: raw.recv(65536), b""))
    assert b"HTTP/1.1 415" in answer and b'"unsupported_image"' in answer


TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/static/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/static/..%5c..%5cetc%5cpasswd",
    "/static/demo.js/../../../../etc/passwd",
    "/static//etc/passwd",
    "/../../etc/passwd",
    "//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../demo_server.py",
    "/static/%00demo.js",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_leaves_the_package_page(server, path):
    status, _, body = call(server, "GET", path)
    error = one_json_line(body)
    print(f"{path}: {status} {body.decode().strip()}")
    assert status == 404 and error["error"] == "not_found" and b"root:" not in body


def test_busy_queue_is_503_with_retry_after(segmenter, photo):
    server, thread = _start(segmenter, queue_size=2, request_timeout=20)
    answers = []
    try:
        server.model_lock.acquire()  # the model is busy: two requests wait in the queue
        waiting = [
            threading.Thread(
                target=lambda: answers.append(call(server, "POST", "/v1/segment", png_bytes(photo)))
            )
            for _ in range(2)
        ]
        for t in waiting:
            t.start()
        with server._state:
            assert server._state.wait_for(lambda: server.counters["held"] == 2, timeout=30)
        status, headers, body = call(server, "POST", "/v1/segment", png_bytes(photo))
        error = one_json_line(body)
        assert (status, error["error"], headers["Retry-After"]) == (503, "busy", "1")
        status, _, body = call(server, "GET", "/healthz")  # other routes still answer
        assert json.loads(body)["queue"] == {"held": 2, "size": 2}
    finally:
        server.model_lock.release()
        for t in waiting:
            t.join(60)
        assert demo_server.stop(server, thread, grace=10)
    assert [a[0] for a in answers] == [200, 200]
    assert server.counters["refused_busy"] == 1


def test_slow_body_times_out_and_connections_are_capped(segmenter):
    server, thread = _start(segmenter, request_timeout=1.0, max_connections=1)
    try:
        with socket.create_connection(server.server_address, timeout=30) as slow:
            slow.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            slow.sendall(b"\x89PNG")
            with server._state:
                assert server._state.wait_for(
                    lambda: server.counters["open_connections"] == 1, timeout=30
                )
            # The one connection allowed is taken: the next one is refused without a thread.
            with socket.create_connection(server.server_address, timeout=30) as other:
                answer = b"".join(iter(lambda: other.recv(65536), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
            assert one_json_line(body)["error"] == "busy"
            answer = b"".join(iter(lambda: slow.recv(65536), b""))  # after request_timeout
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and one_json_line(body)["error"] == (
            "request_timeout"
        )
        with server._state:  # the one connection allowed is free again
            assert server._state.wait_for(
                lambda: server.counters["open_connections"] == 0, timeout=30
            )
        with socket.create_connection(server.server_address, timeout=30) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
            answer = b"".join(iter(lambda: slow.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "headers" in one_json_line(body)["message"]
    finally:
        assert demo_server.stop(server, thread, grace=10)


def test_declared_image_size_reads_headers(photo):
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 200, np.uint8)], -1)
    cases = {
        "png": png_bytes(photo),
        "jpeg": png_bytes(photo, format="JPEG"),
        "jpeg progressive": png_bytes(photo, format="JPEG", progressive=True),
        "bmp": png_bytes(photo, format="BMP"),
        "webp lossy": png_bytes(photo, format="WEBP", quality=80),
        "webp lossless": png_bytes(photo, format="WEBP", lossless=True),
        "webp with alpha": png_bytes(rgba, format="WEBP", quality=80),
    }
    for name, data in cases.items():
        kind, width, height = demo_server.declared_image_size(data)
        assert (kind, width, height) == (name.split()[0], 37, 45), name
    assert demo_server.declared_image_size(_declared_jpeg(30000, 30000)) == ("jpeg", 30000, 30000)
    for bad in (b"", b"\xff\xd8\xff\xd9", _gif(), b"II*\x00rest"):
        with pytest.raises(demo_server.RequestError):
            demo_server.declared_image_size(bad)


def test_label_map_png_keeps_the_indices():
    labels = np.arange(12, dtype=np.int32).reshape(3, 4) % 3
    small = Image.open(io.BytesIO(demo_server.label_map_png(labels, fx.PALETTE)))
    assert small.mode == "P" and small.getpalette()[:9] == sum(fx.PALETTE, [])
    np.testing.assert_array_equal(np.asarray(small), labels)
    many = np.arange(12, dtype=np.int32).reshape(3, 4) * 25  # up to 275: a model of 300 classes
    wide = Image.open(io.BytesIO(demo_server.label_map_png(many, np.zeros((300, 3)))))
    np.testing.assert_array_equal(np.asarray(wide), many)


def test_loopback_hosts():
    assert all(map(demo_server.is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(demo_server.is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.org"]))


def test_the_bundled_samples_are_the_drawn_ones():
    for name, pixels in demo_samples.samples().items():
        stored = np.asarray(Image.open(os.path.join(demo_samples.FOLDER, name)).convert("RGB"))
        np.testing.assert_array_equal(stored, pixels, err_msg=name)


def test_setup_ships_every_page_file():
    tree = ast.parse(open(os.path.join(fx.REPO, "setup.py"), encoding="utf-8").read())
    call_node = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.keywords)
    keywords = {k.arg: k.value for k in call_node.keywords}
    patterns = ast.literal_eval(keywords["package_data"])["deeplab.export"]
    root = os.path.join(fx.REPO, "deeplab", "export")
    files = [
        os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
        for folder, _, names in os.walk(os.path.join(root, demo_server.PAGE_FOLDER))
        for name in names
    ]
    assert files and all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files), files
    assert set(demo_server.read_page_files()) == {
        f[len(demo_server.PAGE_FOLDER) + 1 :] for f in files
    }


@pytest.mark.slow
def test_the_binary_serves_and_stops_on_sigterm(tmp_path_factory):
    run_dir = fx.shared_tiny_run(tmp_path_factory)["run_dir"]
    process = harness.start(
        "deeplab.serve", f"--model={run_dir}", "--port=0", "--access_log", stderr=subprocess.PIPE
    )
    try:
        lines = []
        for line in process.stdout:  # ends when the process does
            lines.append(line)
            if line.startswith("serving http://"):
                break
        assert lines and lines[-1].startswith("serving http://127.0.0.1:"), "".join(lines)
        assert not any("WARNING" in line for line in lines)
        port = int(lines[-1].split(":")[2].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/healthz")
        assert json.loads(connection.getresponse().read())["status"] == "ok"
        connection.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == "stopped (SIGTERM): 0 images segmented"
    assert '"GET /healthz HTTP/1.1" 200' in err and "Traceback" not in err
