"""`spadegan paint` on an official checkpoint folder: the real backend behind the HTTP API."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from spadegan.app.cli import build_backend  # noqa: E402
from spadegan.app.server import create_app  # noqa: E402


def test_paint_serves_an_official_checkpoint(parity_dir):
    backend = build_backend(str(parity_dir), device="cpu", precision="fp32")
    client = TestClient(create_app(backend))
    info = client.get("/api/info").json()
    assert (info["width"], info["height"]) == (64, 64) and info["label_nc"] == 13
    label = np.zeros((64, 64), np.uint8)
    label[32:] = 5
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format="PNG")
    files = {"label": ("l.png", buf.getvalue(), "image/png")}
    r1 = client.post("/api/synthesize", files=files, data={"seed": "3"})
    r2 = client.post("/api/synthesize", files=files, data={"seed": "3"})
    assert r1.status_code == 200 and r1.headers["content-type"] == "image/png"
    assert r1.content == r2.content
    img = np.asarray(Image.open(io.BytesIO(r1.content)))
    assert img.shape == (64, 64, 3) and img.std() > 0
    bad = np.full((64, 64), 40, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(bad).save(buf, format="PNG")
    r = client.post("/api/synthesize", files={"label": ("b.png", buf.getvalue(), "image/png")})
    assert r.status_code == 400 and "40" in r.json()["error"]
