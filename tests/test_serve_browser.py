"""The demo page of python -m deeplab.serve in a real browser: headless Chromium (Debian's
``chromium`` package) driven by Playwright's Python API. Skips with one line where either is
missing (the README's test command installs chromium where apt-get can). The screenshot is
saved in the test's tmp_path; ``DEEPLAB_DEMO_SCREENSHOT=PATH`` copies it there too."""

import base64
import http.client
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import deeplab
import demo_samples
import export_fixtures as fx
from deeplab.export import demo_server

CAMVID_VAL = os.path.join(fx.REPO, "..", "shared", "data", "camvid", "val")
TIMEOUT_MS = 90_000  # a busy 2-core machine; every wait below ends on an event


def _chromium():
    return os.environ.get("DEEPLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(_chromium()):
        pytest.skip("browser test skipped: no chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    segmenter = deeplab.load(fx.shared_tiny_run(tmp_path_factory)["run_dir"])
    server = demo_server.DemoServer(("127.0.0.1", 0), segmenter, request_timeout=60)
    thread = demo_server.serve_forever_in_thread(server)
    yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    assert demo_server.stop(server, thread, grace=10)


def _photo(tmp_path):
    """A CamVid frame when ../shared has them, else the drawn street sample."""
    if os.path.isdir(CAMVID_VAL):
        names = sorted(n for n in os.listdir(CAMVID_VAL) if n.endswith(".png"))
        if names:
            return os.path.join(CAMVID_VAL, names[0])
    path = tmp_path / "street.png"
    Image.fromarray(demo_samples.street()).save(path)
    return str(path)


def _post(server, data):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=120)
    try:
        connection.request("POST", "/v1/segment", body=data)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def _pixels(page, points):
    """RGB of the view canvas at (x, y) points."""
    return page.evaluate(
        """(points) => {
          const canvas = document.querySelector('#view-canvas');
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
          return points.map(([x, y]) => {
            const i = 4 * (y * canvas.width + x);
            return [data.data[i], data.data[i + 1], data.data[i + 2]];
          });
        }""",
        points,
    )


def _show(page, view):
    page.click(f"#view-switch button[data-view={view}]")
    page.wait_for_selector(f"#view-canvas[data-view={view}]", timeout=TIMEOUT_MS)
    pressed = page.get_attribute(f"#view-switch button[data-view={view}]", "aria-pressed")
    assert pressed == "true"


@pytest.mark.slow
def test_the_page_segments_a_photo_in_a_browser(browser, served, tmp_path):
    server, url = served
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-state=idle]")  # the model answered, samples listed
    assert page.inner_text("#model-summary") == server.segmenter.summary()
    assert page.locator("#samples button").count() == len(demo_samples.samples())

    # A bundled sample, then the user's photo.
    with page.expect_response("**/v1/segment"):
        page.click("#samples button[data-sample$='street.png']")
    page.wait_for_selector("body[data-state=ready]")
    photo_path = _photo(tmp_path)
    # What the page received from the API, as its "segmented" event carries it.
    page.evaluate(
        "window.answers = []; "
        "document.addEventListener('segmented', (e) => window.answers.push(e.detail))"
    )
    page.set_input_files("#file-input", photo_path)
    page.wait_for_selector(f"body[data-state=ready][data-image='{os.path.basename(photo_path)}']")
    result = page.evaluate("window.answers[0]")
    # The same photo sent to the API directly gets the same classes.
    with open(photo_path, "rb") as handle:
        direct = _post(server, handle.read())
    assert [c["name"] for c in direct["classes"]] == [c["name"] for c in result["classes"]]
    assert direct["label_map_png"] == result["label_map_png"]

    # The legend names the classes the API returned, with their shares, in its order.
    assert page.locator("#legend .name").all_inner_texts() == [c["name"] for c in result["classes"]]
    shares = page.locator("#legend .share").all_inner_texts()
    for text, entry in zip(shares, result["classes"]):
        assert float(text.rstrip("%")) == pytest.approx(100 * entry["share"], abs=0.051)
    # The page rounds with JavaScript's toFixed (a half away from zero), Python's format to even:
    # compare the number, not the string (48.5 ms is "49" there and "48" here).
    shown = re.match(r"model (\d+) ms", page.inner_text("#timings"))
    assert shown and abs(int(shown.group(1)) - result["timings_ms"]["model"]) <= 0.5 + 1e-9

    photo = np.asarray(Image.open(photo_path).convert("RGB"))
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["label_map_png"]))))
    assert labels.shape == photo.shape[:2] == (result["height"], result["width"])
    rng = np.random.default_rng(0)
    points = [[int(rng.integers(labels.shape[1])), int(rng.integers(labels.shape[0]))]]
    points += [[int(x), int(y)] for y, x in zip(*(rng.integers(0, s, 40) for s in labels.shape))]
    colors = np.asarray(fx.PALETTE)

    _show(page, "colors")  # the colour map: each pixel its class's colour, exactly
    expected = [colors[labels[y, x]].tolist() for x, y in points]
    assert _pixels(page, points) == expected
    _show(page, "photo")  # the photo as sent (a PNG: exact)
    assert _pixels(page, points) == [photo[y, x].tolist() for x, y in points]
    _show(page, "overlay")  # blended: between the photo and the class colour
    blended = np.asarray(_pixels(page, points), np.float64)
    lower = (
        np.minimum(
            photo[tuple(np.array(points)[:, ::-1].T)],
            colors[labels[tuple(np.array(points)[:, ::-1].T)]] * 0.45,
        )
        - 2
    )
    assert (blended >= lower).all()
    screenshot = tmp_path / "demo_page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    copy_to = os.environ.get("DEEPLAB_DEMO_SCREENSHOT")
    if copy_to:
        shutil.copyfile(screenshot, copy_to)
    print(f"screenshot: {screenshot}")

    # Text sent as a photo: the page says what the server said.
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not a picture")
    page.set_input_files("#file-input", str(text_file))
    page.wait_for_selector("body[data-state=error]")
    assert "JPEG, PNG, WebP or BMP" in page.inner_text("#status")
    assert not problems, problems
    page.close()
