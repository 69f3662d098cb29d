"""End-to-end test of the paint page in headless Chromium (Playwright, real uvicorn server).

Skipped when Playwright or /usr/bin/chromium is missing. The backend is a fake that paints
each class in its palette colour, so what the page shows can be checked pixel by pixel; for
models conditioned on label images (--label_nc 0) a fake returns the label image it got.
"""

import contextlib
import io
import os
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
uvicorn = pytest.importorskip("uvicorn")

from spadegan.app.server import create_app  # noqa: E402

W, H = 128, 96
CLASSES = [
    {"id": 0, "name": "unlabeled", "color": [0, 0, 0]},
    {"id": 1, "name": "sky", "color": [90, 170, 240]},
    {"id": 2, "name": "sea", "color": [30, 80, 200]},
    {"id": 3, "name": "mountain", "color": [120, 100, 80]},
    {"id": 4, "name": "grass", "color": [60, 180, 60]},
    {"id": 5, "name": "tree", "color": [20, 110, 30]},
    {"id": 6, "name": "sand", "color": [220, 200, 140]},
    {"id": 7, "name": "car", "color": [200, 30, 30]},
]
SKY, SEA, TREE, SAND = 1, 2, 5, 6


class RecordingBackend:
    """Palette colour per class plus mild seed noise; remembers every label it received."""

    def __init__(self) -> None:
        self.label_nc, self.width, self.height = 10, W, H
        self.classes = CLASSES
        self.use_vae = False
        self.name = "fake-browser"
        self.labels: list[np.ndarray] = []
        self._lut = np.zeros((256, 3), np.uint8)
        for c in CLASSES:
            self._lut[c["id"]] = c["color"]

    def synthesize_batch(self, labels, seeds, styles):
        self.labels += [lab.copy() for lab in labels]
        out = []
        for lab, seed in zip(labels, seeds):
            noise = np.random.default_rng(seed).integers(-8, 9, size=(*lab.shape, 3))
            out.append(np.clip(self._lut[lab].astype(int) + noise, 0, 255).astype(np.uint8))
        return out


@contextlib.contextmanager
def serving(backend):
    """The app over `backend` on a free port in a uvicorn thread; yields the page's URL."""
    app = create_app(backend, batch_wait_ms=0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server():
    backend = RecordingBackend()
    with serving(backend) as url:
        yield url, backend


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


@contextlib.contextmanager
def open_page(browser, url):
    """The page at `url`, once ready and its initial picture is shown; no JavaScript errors allowed."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(url)
        pg.wait_for_function("window.spadegan && window.spadegan.ready && window.spadegan.imageVersion >= 1",
                             timeout=15000)
        yield pg
    finally:
        ctx.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser, server):
    url, _ = server
    # ready + the initial sky-over-sea picture has been synthesized and shown
    with open_page(browser, url) as pg:
        yield pg


def shown_image(pg) -> tuple[bytes, np.ndarray]:
    data = pg.evaluate("""async () => {
        const r = await fetch(document.getElementById('result').src);
        return Array.from(new Uint8Array(await r.arrayBuffer()));
    }""")
    raw = bytes(data)
    return raw, np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def wait_new_image(pg, version: int) -> None:
    pg.wait_for_function(f"window.spadegan.imageVersion > {version}", timeout=15000)


def canvas_point(pg, fx: float, fy: float) -> tuple[float, float]:
    """Page coordinates of the point at fractions (fx, fy) of the label canvas."""
    box = pg.locator("#label-canvas").bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def stroke(pg, points: list[tuple[float, float]]) -> None:
    pg.mouse.move(*canvas_point(pg, *points[0]))
    pg.mouse.down()
    for p in points[1:]:
        pg.mouse.move(*canvas_point(pg, *p), steps=8)
    pg.mouse.up()


def test_paint_sea_stroke_updates_image(page, server, tmp_path):
    _, backend = server
    info = page.evaluate("window.spadegan.info")
    assert info["width"] == W and info["common"][:2] == [SKY, SEA]
    assert np.array_equal(np.unique(backend.labels[-1]), [SKY, SEA])  # initial sky over sea
    before_bytes, before = shown_image(page)

    # pick "sea" via the search box + palette list
    page.fill("#class-search", "se")
    assert page.locator("#all-classes .swatch[data-name='car']").is_hidden()
    page.click("#all-classes .swatch[data-name='sea']")
    assert page.evaluate("window.spadegan.currentClass") == SEA
    page.fill("#class-search", "")

    version = page.evaluate("window.spadegan.imageVersion")
    sent = page.evaluate("window.spadegan.requestsSent")
    stroke(page, [(0.1, 0.25), (0.5, 0.3), (0.9, 0.25)])  # across the sky
    wait_new_image(page, version)
    assert page.evaluate("window.spadegan.requestsSent") == sent + 1  # debounced: one request

    # the server got the painted class where the stroke went
    label = backend.labels[-1]
    assert label.shape == (H, W)
    y, x = int(0.25 * H), int(0.1 * W) + 2
    assert label[y, x] == SEA and label[int(0.05 * H), x] == SKY
    counts = page.evaluate("window.spadegan.lastSentLabel.counts")
    assert int(counts[str(SEA)]) == int((label == SEA).sum())

    # and the shown image changed accordingly (fake backend = palette colour + small noise)
    after_bytes, after = shown_image(page)
    assert after_bytes != before_bytes
    assert after.shape == (H, W, 3)
    assert np.abs(after[y, x].astype(int) - CLASSES[SEA]["color"]).max() <= 8
    assert np.abs(before[y, x].astype(int) - CLASSES[SKY]["color"]).max() <= 8

    # the label canvas shows palette colours of the id buffer
    px = page.evaluate(f"Array.from(document.getElementById('label-canvas').getContext('2d')"
                       f".getImageData({x}, {y}, 1, 1).data)")
    assert px[:3] == CLASSES[SEA]["color"]

    shot = tmp_path / "paint.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_tools_fill_eraser_undo_redo_and_seed(page, server):
    _, backend = server
    ids = lambda: np.array(page.evaluate("Array.from(window.spadegan.ids)")).reshape(H, W)  # noqa: E731

    page.click("#common-classes .swatch[data-name='sand']")
    page.click("button[data-tool='fill']")
    page.mouse.click(*canvas_point(page, 0.5, 0.9))  # fill the sea
    assert set(np.unique(ids())) == {SKY, SAND}

    page.keyboard.press("e")  # eraser paints the background ("unlabeled" = 0)
    stroke(page, [(0.2, 0.1), (0.3, 0.1)])
    assert 0 in np.unique(ids())

    page.keyboard.press("Control+z")
    assert set(np.unique(ids())) == {SKY, SAND}
    page.keyboard.press("Control+z")
    assert set(np.unique(ids())) == {SKY, SEA}
    page.keyboard.press("Control+y")
    assert set(np.unique(ids())) == {SKY, SAND}

    # after the debounce the server sees the final state
    page.wait_for_function(f"window.spadegan.lastSentLabel.counts['{SAND}'] > 0 && "
                           "!window.spadegan.lastSentLabel.counts['0']", timeout=15000)
    page.wait_for_function("document.getElementById('busy').hidden", timeout=15000)
    assert set(np.unique(backend.labels[-1])) == {SKY, SAND}

    # an explicit seed is sent and reported back; "new style" changes it
    version = page.evaluate("window.spadegan.imageVersion")
    page.fill("#seed", "4242")
    page.press("#seed", "Enter")
    page.wait_for_function("window.spadegan.lastSeed === 4242", timeout=15000)
    page.click("#new-style")
    page.wait_for_function(f"window.spadegan.imageVersion > {version} && window.spadegan.lastSeed !== 4242",
                           timeout=15000)
    assert page.locator("#style-controls").is_hidden()  # not a VAE model


def test_label_upload_and_download_roundtrip(page, server, tmp_path):
    _, backend = server
    # an id PNG of a different size: left tree, right sand
    ids = np.full((H // 2, W // 2), TREE, np.uint8)
    ids[:, W // 4:] = SAND
    up = tmp_path / "up.png"
    Image.fromarray(ids, "L").save(up)
    version = page.evaluate("window.spadegan.imageVersion")
    page.set_input_files("#label-file", str(up))
    wait_new_image(page, version)
    expect = np.asarray(Image.fromarray(ids, "L").resize((W, H), Image.Resampling.NEAREST))
    assert np.array_equal(backend.labels[-1], expect)

    # a palette-colour PNG maps colours to ids
    lut = np.zeros((256, 3), np.uint8)
    for c in CLASSES:
        lut[c["id"]] = c["color"]
    Image.fromarray(lut[expect[::-1]], "RGB").save(up)
    version = page.evaluate("window.spadegan.imageVersion")
    page.set_input_files("#label-file", str(up))
    wait_new_image(page, version)
    assert np.array_equal(backend.labels[-1], expect[::-1])

    # colours that are neither palette nor gray are refused with a message
    Image.fromarray(np.full((8, 8, 3), [255, 0, 255], np.uint8), "RGB").save(up)
    page.set_input_files("#label-file", str(up))
    page.wait_for_function("(window.spadegan.lastError || '').includes('#ff00ff')", timeout=5000)

    # "Save label" downloads a grayscale PNG of ids identical to the buffer
    with page.expect_download() as dl:
        page.click("#download-label")
    path = tmp_path / "label.png"
    dl.value.save_as(path)
    saved = Image.open(path)
    assert saved.mode == "L" and saved.size == (W, H)
    assert np.array_equal(np.asarray(saved), expect[::-1])


# ---- a model conditioned on label images (--label_nc 0): the free colour brush -----------------
class ImageBackend:
    """A label-image model (input_nc 1 or 3) whose "synthesized" image is the label it got."""

    def __init__(self, channels: int) -> None:
        self.label_nc, self.width, self.height, self.input_nc = 0, W, H, channels
        self.classes: list[dict] = []
        self.use_vae = False
        self.name = f"fake-image-{channels}"
        self.labels: list[np.ndarray] = []

    def synthesize_batch(self, labels, seeds, styles):
        self.labels += [lab.copy() for lab in labels]
        return [np.repeat(np.round(lab * 255).astype(np.uint8), 3 // lab.shape[-1], axis=-1) for lab in labels]


@pytest.mark.parametrize("channels", [3, 1])
def test_free_colour_brush_for_label_image_models(browser, channels, tmp_path):
    backend = ImageBackend(channels)
    with serving(backend) as url, open_page(browser, url) as pg:
        assert pg.evaluate("window.spadegan.kind") == "image"
        assert pg.locator("#colour-controls").is_visible() and pg.locator("#class-search").is_hidden()
        assert pg.locator("#brush-colour").is_visible() == (channels == 3)
        assert pg.locator("#brush-grey").is_visible() == (channels == 1)
        first = backend.labels[-1]
        assert first.shape == (H, W, channels) and first.dtype == np.float32 and not first.any()  # black

        colour = [255, 128, 0] if channels == 3 else [200, 200, 200]
        if channels == 3:
            pg.fill("#brush-colour", "#ff8000")
        else:
            pg.fill("#brush-grey", "200")
        version = pg.evaluate("window.spadegan.imageVersion")
        stroke(pg, [(0.1, 0.5), (0.5, 0.5), (0.9, 0.5)])
        wait_new_image(pg, version)
        label = backend.labels[-1]
        y, x = int(0.5 * H), int(0.5 * W)
        assert np.allclose(label[y, x] * 255, colour[:channels]) and not label[5, 5].any()
        _, shown = shown_image(pg)
        assert shown[y, x].tolist() == colour and shown[5, 5].tolist() == [0, 0, 0]
        px = pg.evaluate(f"Array.from(document.getElementById('label-canvas').getContext('2d')"
                         f".getImageData({x}, {y}, 1, 1).data)")
        assert px[:3] == colour

        with pg.expect_download() as dl:  # "Save label" gives the label image as the model reads it
            pg.click("#download-label")
        dl.value.save_as(tmp_path / "label.png")
        saved = Image.open(tmp_path / "label.png")
        assert saved.mode == ("RGB" if channels == 3 else "L") and saved.size == (W, H)
        assert np.allclose(np.asarray(saved, dtype=np.float32).reshape(H, W, channels) / 255, label)

        # the eraser paints the background colour
        pg.fill("#background-colour" if channels == 3 else "#background-grey", "#0000ff" if channels == 3 else "60")
        background = 0x0000FF if channels == 3 else 0x3C3C3C
        pg.click("button[data-tool='eraser']")
        stroke(pg, [(0.2, 0.5), (0.3, 0.5)])
        ids = np.array(pg.evaluate("Array.from(window.spadegan.ids)")).reshape(H, W)
        assert ids[y, int(0.25 * W)] == background and pg.evaluate("window.spadegan.background") == background

        # "Load label": an image of another size, scaled to the model's; colours refused for 1-channel models
        up = tmp_path / "up.png"
        Image.new("RGB", (W // 2, H // 2), (10, 20, 30)).save(up)
        version = pg.evaluate("window.spadegan.imageVersion")
        pg.set_input_files("#label-file", str(up))
        if channels == 3:
            wait_new_image(pg, version)
            assert np.allclose(backend.labels[-1] * 255, [10, 20, 30])
        else:
            pg.wait_for_function("(window.spadegan.lastError || '').includes('reads greyscale label images')",
                                 timeout=5000)
            Image.new("L", (W // 2, H // 2), 90).save(up)
            pg.set_input_files("#label-file", str(up))
            wait_new_image(pg, version)
            assert np.allclose(backend.labels[-1] * 255, 90)
