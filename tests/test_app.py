"""Tests for the ``spadegan paint`` HTTP server (FastAPI TestClient, fake backend, no model)."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from spadegan.app.server import create_app, serve  # noqa: E402
from spadegan.app.worker import InferenceWorker  # noqa: E402
from spadegan.errors import SpadeganError  # noqa: E402

W, H = 64, 48  # deliberately non-square so a transposed axis shows up
CLASSES = [
    {"id": 0, "name": "unlabeled", "color": [0, 0, 0]},
    {"id": 1, "name": "sky-other", "color": [90, 170, 240]},
    {"id": 2, "name": "sea", "color": [30, 80, 200]},
    {"id": 3, "name": "mountain", "color": [120, 100, 80]},
    {"id": 4, "name": "grass", "color": [60, 180, 60]},
    {"id": 5, "name": "tree", "color": [20, 110, 30]},
    {"id": 6, "name": "car", "color": [200, 30, 30]},
    # id 7 is valid but has no palette entry
]
LABEL_NC = 8


class FakeBackend:
    """Colours each class with its palette colour plus seed-dependent noise; records calls."""

    def __init__(self, *, use_vae: bool = False, delay: float = 0.0, gate: threading.Event | None = None,
                 fail: Callable[[list[np.ndarray]], None] | None = None, bad_output: bool = False) -> None:
        self.label_nc, self.width, self.height = LABEL_NC, W, H
        self.classes = [dict(c) for c in CLASSES]
        self.use_vae = use_vae
        self.name = "fake"
        self.delay, self.gate, self.fail, self.bad_output = delay, gate, fail, bad_output
        self.batch_sizes: list[int] = []
        self.labels: list[np.ndarray] = []
        self.seeds: list[int | None] = []
        self.styles: list[np.ndarray | None] = []
        self.entered = threading.Event()
        self._lut = np.zeros((256, 3), np.uint8)
        for c in CLASSES:
            self._lut[c["id"]] = c["color"]

    def synthesize_batch(self, labels, seeds, styles):
        self.entered.set()
        self.batch_sizes.append(len(labels))
        self.labels += labels
        self.seeds += seeds
        self.styles += styles
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            self.fail(labels)
        if self.bad_output:
            return [np.zeros((4, 4), np.float32) for _ in labels]
        out = []
        for lab, seed in zip(labels, seeds):
            noise = np.random.default_rng(seed).integers(-20, 21, size=(*lab.shape, 3))
            out.append(np.clip(self._lut[lab].astype(int) + noise, 0, 255).astype(np.uint8))
        return out


def png_bytes(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG", **save)
    return buf.getvalue()


def label_png(ids: np.ndarray) -> bytes:
    return png_bytes(ids.astype(np.uint8), "L")


def halves(h: int = H, w: int = W, left: int = 2, right: int = 4) -> np.ndarray:
    ids = np.full((h, w), left, np.uint8)
    ids[:, w // 2:] = right
    return ids


def post(client: TestClient, label: bytes | None, *, seed=None, style: bytes | None = None, **extra):
    files = {}
    if label is not None:
        files["label"] = ("label.png", label, "image/png")
    if style is not None:
        files["style"] = ("style.png", style, "image/png")
    data = {} if seed is None else {"seed": str(seed)}
    data.update(extra)
    return client.post("/api/synthesize", files=files or None, data=data or None)


def decode(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend):
    with TestClient(create_app(backend, batch_wait_ms=0)) as c:
        yield c


# ------------------------------------------------------------------------------ basics


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_info(client):
    info = client.get("/api/info").json()
    assert (info["name"], info["width"], info["height"], info["label_nc"]) == ("fake", W, H, LABEL_NC)
    assert info["classes"] == CLASSES
    assert info["use_vae"] is False
    # common scene classes first, in GauGAN order ("sky-other" normalises to "sky"); car is not one
    assert info["common"] == [1, 2, 3, 4, 5]
    assert info["background"] == 0  # "unlabeled"


def test_background_override_and_validation(backend):
    assert create_app(backend, background_id=5).state.paint.info["background"] == 5
    with pytest.raises(SpadeganError, match="background id 9"):
        create_app(backend, background_id=9)


def test_index_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/static/paint.js" in r.text and "/static/style.css" in r.text
    js = client.get("/static/paint.js")
    assert js.status_code == 200 and "window.spadegan" in js.text
    assert client.get("/static/style.css").status_code == 200


def test_unknown_route_is_json_error(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


# ------------------------------------------------------------------------------ synthesis


def test_same_seed_same_bytes(client, backend):
    label = label_png(halves())
    a, b = post(client, label, seed=123), post(client, label, seed=123)
    assert a.status_code == b.status_code == 200
    assert a.headers["x-seed"] == b.headers["x-seed"] == "123"
    assert a.content == b.content
    img = decode(a)
    assert img.shape == (H, W, 3)
    assert np.array_equal(backend.labels[0], halves())
    assert backend.labels[0].dtype == np.uint8
    assert backend.seeds[:2] == [123, 123]


def test_different_seeds_differ_and_random_seed_reported(client, backend):
    label = label_png(halves())
    a, b = post(client, label, seed=1), post(client, label, seed=2)
    assert a.content != b.content
    r = post(client, label)
    seed = int(r.headers["x-seed"])
    assert 0 <= seed < 2**32 and backend.seeds[-1] == seed
    # the reported seed reproduces the image
    assert post(client, label, seed=seed).content == r.content


def test_wrong_size_is_resized_nearest(client, backend):
    big = halves(h=2 * H, w=2 * W, left=3, right=5)
    assert decode(post(client, label_png(big), seed=0)).shape == (H, W, 3)
    got = backend.labels[-1]
    assert got.shape == (H, W)
    assert set(np.unique(got)) == {3, 5}  # nearest neighbour never invents ids
    assert np.array_equal(got, halves(left=3, right=5))


def test_rgb_palette_colours_map_to_ids(client, backend):
    ids = halves(left=1, right=6)
    lut = np.zeros((256, 3), np.uint8)
    for c in CLASSES:
        lut[c["id"]] = c["color"]
    assert post(client, png_bytes(lut[ids], "RGB"), seed=0).status_code == 200
    assert np.array_equal(backend.labels[-1], ids)
    # RGBA palette image: alpha is ignored
    rgba = np.dstack([lut[ids], np.full((H, W), 255, np.uint8)])
    assert post(client, png_bytes(rgba, "RGBA"), seed=0).status_code == 200
    assert np.array_equal(backend.labels[-1], ids)


def test_rgb_gray_is_id_map(client, backend):
    ids = halves(left=2, right=7)  # 7 has no palette colour: only readable as gray ids
    assert post(client, png_bytes(np.dstack([ids] * 3), "RGB"), seed=0).status_code == 200
    assert np.array_equal(backend.labels[-1], ids)


def test_palette_mode_png_index_is_id(client, backend):
    ids = halves(left=4, right=5)
    im = Image.fromarray(ids, "L").convert("P")
    im.putpalette([(i * 37) % 256 for i in range(768)])  # arbitrary palette: the index counts
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert post(client, buf.getvalue(), seed=0).status_code == 200
    assert np.array_equal(backend.labels[-1], ids)


def test_style_image_reaches_vae_backend():
    be = FakeBackend(use_vae=True)
    with TestClient(create_app(be)) as c:
        style = png_bytes(np.full((10, 20, 3), 99, np.uint8), "RGB")
        assert post(c, label_png(halves()), seed=1, style=style).status_code == 200
        assert be.styles[-1].shape == (H, W, 3) and be.styles[-1].dtype == np.uint8
        assert c.get("/api/info").json()["use_vae"] is True


def test_empty_style_and_seed_fields_are_absent(client, backend):
    # what a browser sends for an untouched <input type=file> and an empty text field
    r = client.post("/api/synthesize", files={"label": ("l.png", label_png(halves()), "image/png"),
                                              "style": ("", b"", "application/octet-stream")},
                    data={"seed": ""})
    assert r.status_code == 200, r.text
    assert backend.styles[-1] is None


# ------------------------------------------------------------------------------ bad input


def assert_error(resp, status: int, *needles: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    msg = resp.json()["error"]
    for n in needles:
        assert n in msg, msg
    return msg


def test_too_big_body_413():
    be = FakeBackend()
    with TestClient(create_app(be, max_upload_bytes=4000)) as c:
        noise = np.random.default_rng(0).integers(0, 8, size=(200, 200), dtype=np.uint8)
        assert_error(post(c, label_png(noise)), 413, "4000-byte")

        def chunks():  # no Content-Length: the streaming counter must catch it
            yield b"x" * 3000
            yield b"x" * 3000

        r = c.post("/api/synthesize", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert_error(r, 413, "upload limit")
    assert be.batch_sizes == []


def test_too_many_pixels_413():
    with TestClient(create_app(FakeBackend(), max_pixels=100 * 100)) as c:
        assert_error(post(c, label_png(np.zeros((101, 100), np.uint8))), 413, "101", "10000 pixels")


def test_not_png_400(client):
    assert_error(post(client, b"hello, I am not an image"), 400, "not a PNG")
    buf = io.BytesIO()
    Image.fromarray(halves()).save(buf, format="JPEG")
    assert_error(post(client, buf.getvalue()), 400, "not a PNG")
    assert_error(post(client, b""), 400, "empty")


def test_truncated_and_corrupt_png_400(client):
    data = label_png(np.random.default_rng(1).integers(0, 8, size=(H, W), dtype=np.uint8))
    assert_error(post(client, data[: len(data) // 2]), 400, "label could not be decoded")
    corrupt = bytearray(data)
    corrupt[60:80] = b"\xff" * 20
    assert_error(post(client, bytes(corrupt)), 400, "label")
    assert_error(post(client, data[:8]), 400, "label")  # signature only


def test_ids_out_of_range_named(client, backend):
    ids = halves(left=2, right=9)
    ids[0, 0] = 200
    msg = assert_error(post(client, label_png(ids)), 400, "9 (", "200 (1 px)", "label_nc=8", "0..7")
    assert "2 (" not in msg
    assert backend.batch_sizes == []


def test_rgb_unknown_colours_named(client):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :10] = [255, 0, 255]
    assert_error(post(client, png_bytes(rgb, "RGB")), 400, "#ff00ff", "palette")


@pytest.mark.parametrize("seed", ["abc", "-1", "1.5", str(2**32), "1e3", "9" * 30])
def test_bad_seed_400(client, seed):
    assert_error(post(client, label_png(halves()), seed=seed), 400, "seed")


def test_style_on_non_vae_400(client, backend):
    style = png_bytes(np.zeros((8, 8, 3), np.uint8), "RGB")
    assert_error(post(client, label_png(halves()), style=style), 400, "style", "use_vae")
    assert backend.batch_sizes == []


def test_corrupt_style_400():
    with TestClient(create_app(FakeBackend(use_vae=True))) as c:
        assert_error(post(c, label_png(halves()), style=b"\x89PNG\r\n\x1a\nnope"), 400, "style image")


def test_form_problems_400(client):
    assert_error(post(client, None, seed=1), 400, "missing form field 'label'")
    assert_error(client.post("/api/synthesize", data={"label": "text"}), 400, "'label' must be a file")
    assert_error(post(client, label_png(halves()), sed="1"), 400, "unknown form field", "'sed'")
    assert_error(client.post("/api/synthesize", content=b"{}", headers={"content-type": "application/json"}),
                 400, "multipart/form-data")
    bad = client.post("/api/synthesize", content=b"--zz\r\ngarbage",
                      headers={"content-type": "multipart/form-data; boundary=zz"})
    assert bad.status_code == 400 and "error" in bad.json()


# ------------------------------------------------------------------------------ worker


def test_queue_full_503_with_retry_after():
    gate = threading.Event()
    be = FakeBackend(gate=gate)
    app = create_app(be, queue_size=2, max_batch=1, batch_wait_ms=0)
    worker = app.state.paint.worker
    label = label_png(halves())
    results: list = []
    with TestClient(app) as c:
        threads = [threading.Thread(target=lambda s=s: results.append(post(c, label, seed=s))) for s in (1, 2)]
        for t in threads:
            t.start()
        wait_for(lambda: worker.pending == 2)
        r = post(c, label, seed=3)
        assert_error(r, 503, "busy")
        assert int(r.headers["retry-after"]) >= 1
        gate.set()
        for t in threads:
            t.join(10)
        assert sorted(x.status_code for x in results) == [200, 200]
        assert post(c, label, seed=4).status_code == 200  # recovered
        assert worker.stats()["rejected"] == 1 and worker.pending == 0


def test_hung_backend_gives_504_then_503_not_a_hung_client():
    gate = threading.Event()
    be = FakeBackend(gate=gate)
    app = create_app(be, queue_size=1, max_batch=1, batch_wait_ms=0, timeout_s=0.3)
    worker = app.state.paint.worker
    label = label_png(halves())
    with TestClient(app) as c:
        t0 = time.monotonic()
        assert_error(post(c, label, seed=1), 504, "did not answer within 0.3 s")
        assert time.monotonic() - t0 < 5
        assert_error(post(c, label, seed=2), 503, "busy")  # the stuck job still holds the only slot
        gate.set()  # the model comes back: its late result is dropped, the slot frees up
        wait_for(lambda: worker.pending == 0)
        assert post(c, label, seed=3).status_code == 200
        assert worker.stats()["timed_out"] == 1


def test_micro_batching_batches_queued_requests():
    gate = threading.Event()
    be = FakeBackend(gate=gate)
    app = create_app(be, queue_size=16, max_batch=4, batch_wait_ms=0)
    worker = app.state.paint.worker
    results: dict[int, object] = {}
    with TestClient(app) as c:
        def go(seed: int) -> None:
            ids = halves(left=seed % LABEL_NC, right=(seed + 1) % LABEL_NC)
            results[seed] = post(c, label_png(ids), seed=seed)

        first = threading.Thread(target=go, args=(0,))
        first.start()
        assert be.entered.wait(10)  # the worker is now busy with a batch of one
        rest = [threading.Thread(target=go, args=(s,)) for s in range(1, 7)]
        for t in rest:
            t.start()
        wait_for(lambda: worker.pending == 7)
        gate.set()
        for t in [first, *rest]:
            t.join(10)
    assert be.batch_sizes == [1, 4, 2]
    for seed, r in results.items():  # every client got *its* image back
        assert r.status_code == 200
        assert r.headers["x-seed"] == str(seed)
        assert r.headers["x-batch-size"] in ("1", "4", "2")
        assert r.content == post_alone(seed)


def post_alone(seed: int) -> bytes:
    with TestClient(create_app(FakeBackend())) as c:
        return post(c, label_png(halves(left=seed % LABEL_NC, right=(seed + 1) % LABEL_NC)), seed=seed).content


def test_batch_wait_collects_late_arrivals():
    be = FakeBackend()
    worker = InferenceWorker(be, queue_size=8, max_batch=4, batch_wait_ms=300)

    async def main() -> list:
        async def one(i: int, delay: float):
            await asyncio.sleep(delay)
            return await worker.submit(halves(), i, None)
        return await asyncio.gather(one(0, 0), one(1, 0.02), one(2, 0.04))

    try:
        out = asyncio.run(main())
    finally:
        worker.stop()
    assert be.batch_sizes == [3] and [r.batch_size for r in out] == [3, 3, 3]


def test_cancelled_request_is_skipped():
    gate = threading.Event()
    be = FakeBackend(gate=gate)
    worker = InferenceWorker(be, queue_size=8, max_batch=1, batch_wait_ms=0)

    async def main():
        a = asyncio.create_task(worker.submit(halves(), 1, None))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, be.entered.wait, 10)
        b = asyncio.create_task(worker.submit(halves(), 2, None))  # queued behind a
        await asyncio.sleep(0.01)
        b.cancel()  # the client went away
        await asyncio.sleep(0.01)
        gate.set()
        res = await a
        with pytest.raises(asyncio.CancelledError):
            await b
        return res

    try:
        res = asyncio.run(main())
        wait_for(lambda: worker.pending == 0)
    finally:
        worker.stop()
    assert res.image.shape == (H, W, 3)
    assert be.seeds == [1] and worker.stats()["dropped"] == 1


def test_backend_exception_does_not_kill_server():
    calls = {"n": 0}

    def boom(labels):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (pretend)")

    be = FakeBackend(fail=boom)
    with TestClient(create_app(be)) as c:
        r = post(c, label_png(halves()), seed=1)
        assert_error(r, 503, "model error", "RuntimeError", "out of memory")
        assert "retry-after" not in r.headers
        assert post(c, label_png(halves()), seed=1).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_backend_spadegan_error_is_400_and_bad_output_is_503():
    def reject(labels):
        raise SpadeganError("label has no painted pixels")

    with TestClient(create_app(FakeBackend(fail=reject))) as c:
        assert_error(post(c, label_png(halves())), 400, "no painted pixels")
    with TestClient(create_app(FakeBackend(bad_output=True))) as c:
        assert_error(post(c, label_png(halves())), 503, "model error", "(4, 4)")


def test_one_bad_request_does_not_fail_its_batch():
    gate = threading.Event()

    def poison(labels):  # fails any batch containing a label with class 6 ("car")
        if any((lab == 6).any() for lab in labels):
            raise ValueError("cars are not allowed")

    be = FakeBackend(gate=gate, fail=poison)
    app = create_app(be, queue_size=8, max_batch=4, batch_wait_ms=0)
    results: dict[int, object] = {}
    with TestClient(app) as c:
        def go(i: int, left: int) -> None:
            results[i] = post(c, label_png(halves(left=left)), seed=i)

        t0 = threading.Thread(target=go, args=(0, 1))
        t0.start()
        assert be.entered.wait(10)
        ts = [threading.Thread(target=go, args=(i, left)) for i, left in ((1, 2), (2, 6), (3, 3))]
        for t in ts:
            t.start()
        wait_for(lambda: app.state.paint.worker.pending == 4)
        gate.set()
        for t in [t0, *ts]:
            t.join(10)
    assert {i: r.status_code for i, r in results.items()} == {0: 200, 1: 200, 2: 503, 3: 200}
    assert "cars are not allowed" in results[2].json()["error"]


# ------------------------------------------------------------------------------ config + serve


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"max_batch": 0}, {"max_upload_bytes": 0},
                                    {"batch_wait_ms": -1}, {"timeout_s": 0}])
def test_bad_settings_raise(backend, kwargs):
    with pytest.raises(SpadeganError):
        create_app(backend, **kwargs)


def test_malformed_backend_raises():
    be = FakeBackend()
    be.classes = [{"id": 1, "name": "x", "color": [0, 0, 0]}, {"id": 1, "name": "y", "color": [1, 1, 1]}]
    with pytest.raises(SpadeganError, match="classes\\[1\\] repeats id 1"):
        create_app(be)
    be.classes = [{"id": 1, "name": "x", "color": [0, 0, 300]}]
    with pytest.raises(SpadeganError, match="classes\\[0\\] colour"):
        create_app(be)
    # ids >= label_nc (e.g. COCO's 255 "unlabeled") are just left out of the palette
    be.classes = CLASSES + [{"id": 255, "name": "unlabeled", "color": [9, 9, 9]}]
    assert create_app(be).state.paint.info["classes"] == CLASSES
    be = FakeBackend()
    be.width = 0
    with pytest.raises(SpadeganError, match="width"):
        create_app(be)


def test_serve_busy_port_is_user_error(backend):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        with pytest.raises(SpadeganError, match="cannot listen"):
            serve(backend, port=s.getsockname()[1])
    finally:
        s.close()


def test_16bit_grayscale_ids(client, backend):
    ids = halves(left=3, right=7).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ids).save(buf, format="PNG")
    assert post(client, buf.getvalue(), seed=0).status_code == 200
    assert np.array_equal(backend.labels[-1], ids)


def test_mutated_pngs_never_500(backend):
    """Random byte damage must give 200 or a 4xx JSON error, never a 500."""
    good = label_png(np.random.default_rng(2).integers(0, 8, size=(H, W), dtype=np.uint8))
    rng = np.random.default_rng(3)
    with TestClient(create_app(backend), raise_server_exceptions=False) as c:
        for _ in range(40):
            bad = bytearray(good)
            for pos in rng.integers(8, len(bad), size=int(rng.integers(1, 6))):
                bad[pos] = int(rng.integers(0, 256))
            r = post(c, bytes(bad), seed=0)
            assert r.status_code == 200 or (400 <= r.status_code < 500 and "error" in r.json()), r.text
        assert c.get("/healthz").status_code == 200
