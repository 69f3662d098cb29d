"""HTTP server behind ``spadegan paint``: a GauGAN-style painting app.

The server is model-agnostic: it talks to a :class:`SynthesisBackend` (see below),
so the web layer can be tested with a fake backend and the real model adapter can be
plugged in later via :func:`create_app`.

Endpoints
---------
``GET /``                 the painting page (plain HTML/CSS/JS from ``static/``, no build step)
``GET /static/...``       the page's assets
``GET /healthz``          ``{"status": "ok"}``
``GET /api/info``         model name, resolution, ``label_nc``, palette ``classes``,
                          ``common`` (ids of common scene classes, most common first),
                          ``background`` (id the eraser paints), ``use_vae``, limits
``GET /api/stats``        worker counters (pending, batches, rejected, ...) for debugging/benchmarks
``POST /api/synthesize``  multipart form -> ``image/png``; see below

``POST /api/synthesize`` form fields
    ``label`` (file, required)  PNG label map of class ids. Accepted encodings:
        * mode ``L`` / ``I;16`` / ``I`` (grayscale): the gray value *is* the class id;
        * mode ``P`` (palette-indexed): the palette *index* is the class id;
        * ``RGB``/``RGBA``: if every colour is a palette colour of ``classes`` the colours
          are mapped to their ids; otherwise, if every pixel has R == G == B, the gray
          value is the id (what a canvas-built "gray id" PNG looks like); otherwise 400
          naming unknown colours. Alpha is ignored. (An RGB image that is *both* a valid
          palette image and a valid gray-id image is read as palette colours; send mode
          ``L`` to be unambiguous -- the web page always does.)
        A label whose size differs from the model's is resized with nearest neighbour.
    ``style`` (file, optional)  any image Pillow reads; only for VAE models; resized
        (bicubic) to the model size.
    ``seed`` (optional)  integer in ``0..2**32-1``; a random one is drawn when absent.
    Response: the PNG, with header ``X-Seed`` (the seed used, so the result can be
    reproduced) and ``X-Batch-Size`` (how many requests shared the model call).

Errors are always JSON ``{"error": "..."}`` naming the problem:
    400 bad input (not a PNG, truncated/corrupt data, id >= label_nc, bad seed, style
        for a non-VAE model, unknown form field, ...); also a ``SpadeganError`` raised by
        the backend (user-caused by the project's convention).
    413 request body larger than ``max_upload_bytes``, or image larger than ``max_pixels``.
    503 queue full (with ``Retry-After``), or the model raised an unexpected exception
        ("model error"). We deliberately use 503, not 500, for backend failures: the
        HTTP server itself is healthy and keeps serving, and the failure is logged with
        a traceback server-side. 503 for model errors has no ``Retry-After`` because
        retrying the same input will most likely fail the same way.

Concurrency model
-----------------
All inference runs in ONE worker thread (models are not thread-safe and the CPU has
few cores). Request handlers decode the upload in Starlette's thread pool, then put a
job on the worker's queue and ``await`` an asyncio future. Admission is bounded: at most
``queue_size`` requests may be pending (queued or being computed); beyond that the
request is rejected immediately with 503 + ``Retry-After`` instead of piling up.
The worker micro-batches: it takes the oldest job, then keeps collecting queued jobs
until it has ``max_batch`` or ``batch_wait_ms`` have passed since that oldest job
arrived, and calls ``backend.synthesize_batch`` once for the batch. If a batched call
raises, each job is retried alone so one bad request cannot fail its neighbours.
A client that goes away does not block anyone: if its future was cancelled before the
batch is formed the job is skipped, otherwise the result is simply dropped. A backend that
hangs does not hang its clients: each request waits at most ``timeout_s`` for its result
and then gets 504; the stuck job still counts as pending, so once ``queue_size`` jobs are
stuck new requests are refused at once with 503.
"""

import asyncio
import io
import logging
import math
import queue
import re
import secrets
import socket
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from spadegan.data.palettes import grey_ids
from spadegan.errors import SpadeganError

log = logging.getLogger("spadegan.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Seeds are limited to 32 bits: every RNG (numpy legacy, torch) accepts them and they are
#: exact in JavaScript numbers, so the page can display and edit them losslessly.
MAX_SEED = 2**32 - 1

#: Class names shown at the top of the palette, in this order (GauGAN demo style). Matched
#: against normalised class names (lower case, "-other"/"-merged"/"-stuff" suffixes dropped).
COMMON_CLASS_NAMES: tuple[str, ...] = (
    "sky", "clouds", "cloud", "sea", "water", "river", "mountain", "hill", "rock", "stone",
    "grass", "tree", "bush", "flower", "sand", "snow", "dirt", "gravel", "mud", "road",
    "house", "building", "bridge", "fog", "fence", "field", "plant", "wall",
)

#: Names that mark the "nothing painted" class the eraser paints with.
BACKGROUND_CLASS_NAMES: tuple[str, ...] = ("background", "unlabeled", "unlabelled", "void", "none", "other")

_FIELDS = ("label", "style", "seed")


@runtime_checkable
class SynthesisBackend(Protocol):
    """What the app needs from a model. The real adapter wraps a ``Synthesizer``.

    Attributes
    ----------
    label_nc: number of class ids accepted (ids ``0..label_nc-1``); larger ids are
        rejected by the server with a 400 before they reach the backend.
    width, height: model resolution; labels (and styles) are resized to it.
    classes: palette entries ``{"id": int, "name": str, "color": [r, g, b]}``; ids must be
        unique; entries with ids ``>= label_nc`` are left out of the palette (with a logged
        warning). Ids without an entry are valid but unnamed.
    use_vae: whether a style image is supported (``styles`` entries may be non-None).
    name: shown in the page header.

    ``synthesize_batch(labels, seeds, styles)`` gets equally long lists: label maps of
    shape ``(height, width)`` (``uint8`` when ``label_nc <= 256``, else ``int64``), seeds
    (the server always passes ints, drawing random ones itself so ``X-Seed`` reproduces
    a result; ``None`` is allowed by the type for other callers) and style images
    ``(height, width, 3) uint8`` or ``None``. It returns one ``(H, W, 3) uint8`` image per
    input, in order. It is only ever called from the single worker thread. A
    ``SpadeganError`` it raises is reported to the client as a 400; anything else as a
    503 "model error".
    """

    label_nc: int
    width: int
    height: int
    classes: list[dict]
    use_vae: bool
    name: str

    def synthesize_batch(
        self,
        labels: list[np.ndarray],
        seeds: list[int | None],
        styles: list[np.ndarray | None],
    ) -> list[np.ndarray]: ...


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class QueueFullError(Exception):
    """Admission refused because ``queue_size`` requests are already pending."""


# --------------------------------------------------------------------------------------
# Input decoding (pure functions, run in the thread pool)
# --------------------------------------------------------------------------------------


def _open_image(data: bytes, what: str, *, max_pixels: int, require_png: bool) -> Image.Image:
    """Open and fully decode ``data``; map every Pillow failure to a 400 naming ``what``."""
    if not data:
        raise HTTPError(400, f"{what} is empty (0 bytes)")
    if require_png and not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise HTTPError(400, f"{what} is not a PNG file (PNG signature missing)")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is stricter; silence Pillow's bomb *warning*.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            # Check before load(): a tiny file can declare a gigantic image.
            if w * h > max_pixels:
                raise HTTPError(413, f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels")
            if require_png and im.format != "PNG":
                raise HTTPError(400, f"{what} is not a PNG file (it is {im.format})")
            im.load()
    except HTTPError:
        raise
    except Image.DecompressionBombError as exc:
        raise HTTPError(413, f"{what} is too large to decode: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # OSError covers "image file is truncated", bad CRCs and unknown formats.
        raise HTTPError(400, f"{what} could not be decoded (truncated or corrupt image?): {exc}") from exc
    except Exception as exc:  # Pillow plugins raise assorted types on hostile input
        raise HTTPError(400, f"{what} could not be decoded: {type(exc).__name__}: {exc}") from exc
    return im


def _palette_lookup(classes: Sequence[dict]) -> dict[int, int]:
    """Packed 0xRRGGBB colour -> class id (first class wins on duplicate colours)."""
    lut: dict[int, int] = {}
    for c in classes:
        r, g, b = (int(v) for v in c["color"])
        lut.setdefault((r << 16) | (g << 8) | b, int(c["id"]))
    return lut


def _fmt_colors(keys: np.ndarray, counts: np.ndarray, limit: int = 5) -> str:
    order = np.argsort(-counts)[:limit]
    parts = [f"#{int(keys[i]):06x} ({int(counts[i])} px)" for i in order]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more


def decode_label(
    data: bytes, *, label_nc: int, classes: Sequence[dict], width: int, height: int, max_pixels: int
) -> np.ndarray:
    """Decode a label PNG (see module docstring for the accepted encodings).

    Returns a ``(height, width)`` id map (``uint8`` if ``label_nc <= 256`` else ``int64``),
    nearest-neighbour resized to the model size. Raises :class:`HTTPError` on bad input.
    """
    im = _open_image(data, "label", max_pixels=max_pixels, require_png=True)
    mode = im.mode
    if mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "LA", "PA"):
        if mode in ("LA", "PA"):
            im = im.getchannel(0)  # alpha is not part of a label
        ids = np.asarray(im).astype(np.int64)
    elif mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        keys, inverse = np.unique(packed.ravel(), return_inverse=True)
        lut = _palette_lookup(classes)
        mapped = [lut.get(int(k), -1) for k in keys]
        if all(m >= 0 for m in mapped):
            ids = np.asarray(mapped, dtype=np.int64)[inverse].reshape(packed.shape)
        elif (grey := grey_ids(rgb)) is not None:
            ids = grey
        else:
            unknown = np.asarray([k for k, m in zip(keys, mapped) if m < 0])
            counts = np.bincount(inverse.ravel(), minlength=len(keys))[[i for i, m in enumerate(mapped) if m < 0]]
            raise HTTPError(
                400,
                "label is an RGB image with colours that are not palette colours and it is not "
                f"gray (R==G==B) either; unknown colours: {_fmt_colors(unknown, counts)}. "
                "Send a grayscale PNG of class ids or use exactly the palette colours from /api/info.",
            )
    else:
        raise HTTPError(400, f"label PNG has unsupported mode {mode!r}; use 8-bit grayscale (L) class ids")

    if ids.ndim != 2:
        raise HTTPError(400, f"label must be a single-channel id map, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= label_nc):
        bad, counts = np.unique(ids[(ids < 0) | (ids >= label_nc)], return_counts=True)
        listed = ", ".join(f"{int(b)} ({int(n)} px)" for b, n in zip(bad[:8], counts[:8]))
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise HTTPError(
            400,
            f"label contains class id(s) {listed}{more}, but this model accepts ids 0..{label_nc - 1} "
            f"(label_nc={label_nc})",
        )
    if ids.shape != (height, width):
        # Mode "I" keeps ids > 255 intact through the resize; NEAREST never invents ids.
        ids = np.asarray(
            Image.fromarray(ids.astype(np.int32), mode="I").resize((width, height), Image.Resampling.NEAREST)
        ).astype(np.int64)
    return ids.astype(np.uint8 if label_nc <= 256 else np.int64)


def decode_style(data: bytes, *, width: int, height: int, max_pixels: int) -> np.ndarray:
    """Decode a style image (any Pillow format) to ``(height, width, 3) uint8``."""
    im = _open_image(data, "style image", max_pixels=max_pixels, require_png=False)
    try:
        im = im.convert("RGB")
    except Exception as exc:
        raise HTTPError(400, f"style image could not be converted to RGB: {exc}") from exc
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def parse_seed(value: str | None) -> int | None:
    """Parse the ``seed`` form field; ``None``/empty means "draw a random seed"."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not re.fullmatch(r"[+]?\d{1,20}", text):
        raise HTTPError(400, f"seed must be an integer in 0..{MAX_SEED}, got {value[:40]!r}")
    seed = int(text)
    if seed > MAX_SEED:
        raise HTTPError(400, f"seed must be an integer in 0..{MAX_SEED}, got {seed}")
    return seed


def encode_png(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3) uint8`` image; low compression because latency matters more."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# The single inference worker
# --------------------------------------------------------------------------------------


@dataclass
class _Job:
    label: np.ndarray
    seed: int
    style: np.ndarray | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class _Result:
    image: np.ndarray
    batch_size: int


def _deliver(fut: asyncio.Future, value: Any, is_error: bool) -> None:
    """Runs on the event loop: complete ``fut`` unless its client already went away."""
    if fut.done():
        return
    if is_error:
        fut.set_exception(value)
    else:
        fut.set_result(value)


class InferenceWorker:
    """One background thread that runs ``backend.synthesize_batch`` on micro-batches.

    Admission control counts *pending* requests (queued + being computed) so that at most
    ``queue_size`` clients wait at any time; :meth:`submit` raises :class:`QueueFullError`
    beyond that instead of letting latency grow without bound.
    """

    def __init__(self, backend: SynthesisBackend, *, queue_size: int, max_batch: int, batch_wait_ms: float,
                 timeout_s: float | None = None) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        # Unbounded queue: the bound is enforced by the `pending` counter, which also
        # covers jobs being computed, and a stop sentinel must always fit.
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.pending = 0
        self.batches = 0
        self.processed = 0
        self.rejected = 0
        self.dropped = 0
        self.errors = 0
        self.timed_out = 0
        self.batch_sizes: list[int] = []  # last few, for /api/stats
        self._ema_batch_s: float | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="spadegan-inference", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopped = True
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
        # Fail whatever is still queued so no handler waits forever.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, HTTPError(503, "server is shutting down"), is_error=True)
        if thread is not None and thread.is_alive():
            self._queue.put(None)  # still inside a slow backend call: let it exit afterwards

    # -- request side (event loop) -----------------------------------------------------
    def retry_after_s(self) -> int:
        """Rough time until a queue slot frees up, for the ``Retry-After`` header."""
        per_batch = self._ema_batch_s if self._ema_batch_s is not None else 1.0
        return max(1, math.ceil(per_batch * self.queue_size / self.max_batch))

    async def submit(self, label: np.ndarray, seed: int, style: np.ndarray | None) -> _Result:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._stopped:
                raise HTTPError(503, "server is shutting down")
            if self.pending >= self.queue_size:
                self.rejected += 1
                raise QueueFullError()
            self.pending += 1
        self.start()  # lazily, so apps used without lifespan events still work
        fut: asyncio.Future = loop.create_future()
        self._queue.put(_Job(label, seed, style, fut, loop))
        # If this coroutine is cancelled (client gone, server shutting down) or times out,
        # awaiting cancels `fut` too; the worker then skips or drops the job.
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            with self._lock:
                self.timed_out += 1
            raise HTTPError(504, f"the model did not answer within {self.timeout_s:g} s; it may be stuck or "
                                 "overloaded (see the server log)") from None

    def stats(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "queue_size": self.queue_size,
            "max_batch": self.max_batch,
            "batch_wait_ms": self.batch_wait * 1000.0,
            "batches": self.batches,
            "processed": self.processed,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "timed_out": self.timed_out,
            "errors": self.errors,
            "recent_batch_sizes": self.batch_sizes[-32:],
            "mean_batch_seconds": self._ema_batch_s,
        }

    # -- worker thread -----------------------------------------------------------------
    def _finish(self, job: _Job, value: Any, is_error: bool) -> None:
        with self._lock:
            self.pending -= 1
        try:
            job.loop.call_soon_threadsafe(_deliver, job.future, value, is_error)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting any more

    def _collect(self, first: _Job) -> list[_Job] | None:
        """Gather up to max_batch jobs that arrive within batch_wait of the first one."""
        batch = [first]
        deadline = first.arrived + self.batch_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # stop sentinel: finish this batch, then exit
                self._queue.put(None)
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = self._collect(job)
            live = []
            for j in batch:
                if j.future.cancelled():  # client went away before we started: skip work
                    self.dropped += 1
                    self._finish(j, None, is_error=False)
                else:
                    live.append(j)
            if live:
                self._process(live)

    def _call_backend(self, jobs: list[_Job]) -> list[np.ndarray]:
        out = self.backend.synthesize_batch([j.label for j in jobs], [j.seed for j in jobs], [j.style for j in jobs])
        if not isinstance(out, (list, tuple)) or len(out) != len(jobs):
            raise RuntimeError(f"backend returned {type(out).__name__} of length "
                               f"{len(out) if hasattr(out, '__len__') else '?'} for {len(jobs)} inputs")
        images = []
        for img in out:
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise RuntimeError(f"backend returned an image of shape {arr.shape} dtype {arr.dtype}; "
                                   "expected (H, W, 3) uint8")
            images.append(arr)
        return images

    def _process(self, jobs: list[_Job]) -> None:
        t0 = time.monotonic()
        try:
            images = self._call_backend(jobs)
        except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if len(jobs) > 1:
                # Find the culprit: one bad request must not fail the whole batch.
                for j in jobs:
                    self._process([j])
                return
            self.errors += 1
            self._finish(jobs[0], self._map_backend_error(exc), is_error=True)
            return
        dt = time.monotonic() - t0
        self._ema_batch_s = dt if self._ema_batch_s is None else 0.8 * self._ema_batch_s + 0.2 * dt
        self.batches += 1
        self.processed += len(jobs)
        self.batch_sizes.append(len(jobs))
        del self.batch_sizes[:-256]
        for j, img in zip(jobs, images):
            self._finish(j, _Result(img, len(jobs)), is_error=False)

    @staticmethod
    def _map_backend_error(exc: BaseException) -> HTTPError:
        if isinstance(exc, SpadeganError):
            return HTTPError(400, str(exc))
        log.error("model error during synthesis", exc_info=exc)
        return HTTPError(503, f"model error: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# The FastAPI app
# --------------------------------------------------------------------------------------


def _normalise_name(name: str) -> str:
    n = name.strip().lower()
    for suffix in ("-other", "-merged", "-stuff", " other"):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    return n


def _check_backend(backend: SynthesisBackend) -> list[dict]:
    """Validate the backend's static attributes; return a cleaned copy of ``classes``."""
    for attr in ("label_nc", "width", "height", "classes", "use_vae", "name", "synthesize_batch"):
        if not hasattr(backend, attr):
            raise SpadeganError(f"synthesis backend {type(backend).__name__} lacks attribute {attr!r}")
    for attr in ("label_nc", "width", "height"):
        value = getattr(backend, attr)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise SpadeganError(f"synthesis backend: {attr} must be a positive int, got {value!r}")
    classes: list[dict] = []
    seen: set[int] = set()
    for i, c in enumerate(backend.classes):
        try:
            cid, name, color = int(c["id"]), str(c["name"]), [int(v) for v in c["color"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SpadeganError(f"synthesis backend: classes[{i}] must be {{id, name, color}}: {exc}") from exc
        if not 0 <= cid < backend.label_nc:
            # e.g. COCO-Stuff's 255 "unlabeled": it cannot be painted (the server rejects
            # ids >= label_nc), so leave it out of the palette instead of failing.
            log.warning("palette class %r has id %d outside 0..%d; not offered in the palette",
                        name, cid, backend.label_nc - 1)
            continue
        if cid in seen:
            raise SpadeganError(f"synthesis backend: classes[{i}] repeats id {cid}")
        if len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise SpadeganError(f"synthesis backend: classes[{i}] colour {color} is not [r, g, b] in 0..255")
        seen.add(cid)
        classes.append({"id": cid, "name": name, "color": color})
    return classes


def _common_ids(classes: Sequence[dict]) -> list[int]:
    by_name: dict[str, int] = {}
    for c in classes:
        by_name.setdefault(_normalise_name(c["name"]), c["id"])
    out: list[int] = []
    for n in COMMON_CLASS_NAMES:
        cid = by_name.get(n)
        if cid is not None and cid not in out:
            out.append(cid)
    return out


def _background_id(backend: SynthesisBackend, classes: Sequence[dict], override: int | None) -> int:
    bg = override if override is not None else getattr(backend, "background_id", None)
    if bg is not None:
        if not 0 <= int(bg) < backend.label_nc:
            raise SpadeganError(f"background id {bg} is not in 0..{backend.label_nc - 1}")
        return int(bg)
    for c in classes:
        if _normalise_name(c["name"]) in BACKGROUND_CLASS_NAMES:
            return c["id"]
    return classes[0]["id"] if classes else 0


def create_app(
    backend: SynthesisBackend,
    *,
    max_upload_bytes: int = 10 * 2**20,
    max_pixels: int = 4096 * 4096,
    queue_size: int = 8,
    max_batch: int = 4,
    batch_wait_ms: float = 10,
    background_id: int | None = None,
    timeout_s: float | None = 120.0,
) -> Any:
    """Build the FastAPI app serving the painting page and the synthesis API.

    ``max_upload_bytes`` bounds the whole request body; ``max_pixels`` bounds each decoded
    image; ``queue_size`` bounds pending requests (more get 503 + Retry-After);
    ``max_batch``/``batch_wait_ms`` control micro-batching (see module docstring).
    ``timeout_s`` bounds how long a request waits for the model (then 504; None: no bound).
    ``background_id`` is the id the page's eraser and "clear" paint; by default the
    backend's ``background_id`` attribute if it has one, else a class named
    background/unlabeled/void/..., else the first class.
    Raises :class:`SpadeganError` on invalid settings or a malformed backend.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.exceptions import HTTPException as StarletteHTTPException
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SpadeganError(f"the paint app needs the 'app' extra: pip install 'spadegan[app]' ({exc})") from exc

    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels),
                        ("queue_size", queue_size), ("max_batch", max_batch)):
        if int(value) < 1:
            raise SpadeganError(f"{name} must be >= 1, got {value}")
    if batch_wait_ms < 0:
        raise SpadeganError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if timeout_s is not None and not timeout_s > 0:
        raise SpadeganError(f"timeout_s must be > 0 (or None for no timeout), got {timeout_s}")
    classes = _check_backend(backend)
    label_nc, width, height = int(backend.label_nc), int(backend.width), int(backend.height)
    use_vae = bool(backend.use_vae)
    bg = _background_id(backend, classes, background_id)
    info = {
        "name": str(backend.name),
        "width": width,
        "height": height,
        "label_nc": label_nc,
        "classes": classes,
        "use_vae": use_vae,
        "common": _common_ids(classes),
        "background": bg,
        "max_upload_bytes": int(max_upload_bytes),
        "max_seed": MAX_SEED,
    }
    worker = InferenceWorker(backend, queue_size=int(queue_size), max_batch=int(max_batch), batch_wait_ms=batch_wait_ms,
                             timeout_s=timeout_s)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Any):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPI(title="spadegan paint", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.spadegan_worker = worker
    app.state.spadegan_info = info

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_exc(_req: Request, exc: StarletteHTTPException) -> Any:
        # 404/405 etc. in the same {"error": ...} shape as ours.
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(HTTPError)
    async def _our_exc(_req: Request, exc: HTTPError) -> Any:
        return error(exc.status, exc.message, exc.headers)

    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=no_cache)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/api/info")
    async def api_info() -> dict:
        return info

    @app.get("/api/stats")
    async def api_stats() -> dict:
        return worker.stats()

    async def read_body(request: Request) -> bytes:
        """Read the body but stop (413) as soon as it exceeds max_upload_bytes."""
        declared = request.headers.get("content-length")
        too_big = f"request body is larger than the {max_upload_bytes}-byte upload limit"
        if declared is not None:
            try:
                if int(declared) > max_upload_bytes:
                    raise HTTPError(413, f"{too_big} (Content-Length: {declared})")
            except ValueError:
                raise HTTPError(400, f"bad Content-Length header {declared[:40]!r}") from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:  # chunked uploads have no Content-Length
                raise HTTPError(413, too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse_form(request: Request, body: bytes) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        # url-encoded forms are parsed too, only so that "label is missing" gets named.
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise HTTPError(400, f"expected a multipart/form-data body with a 'label' PNG file, got Content-Type {ctype[:60]!r}")
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=8)
        except Exception as exc:  # malformed multipart of any kind is the client's problem
            detail = getattr(exc, "detail", None) or str(exc)
            raise HTTPError(400, f"could not parse the multipart form: {detail}") from exc
        fields: dict[str, Any] = {}
        try:
            unknown = sorted({k for k in form.keys() if k not in _FIELDS})
            if unknown:
                raise HTTPError(400, f"unknown form field(s) {', '.join(map(repr, unknown))}; accepted: label, style, seed")
            for key in _FIELDS:
                values = form.getlist(key)
                if len(values) > 1:
                    raise HTTPError(400, f"form field {key!r} was given {len(values)} times")
                if not values:
                    continue
                v = values[0]
                if isinstance(v, str):
                    # Browsers send an untouched file input as an empty, filename-less part,
                    # which Starlette parses as the text "": treat it (and seed="") as absent.
                    if v != "":
                        fields[key] = v
                else:
                    data = await v.read()
                    # An <input type=file> left empty is sent as a nameless 0-byte part.
                    if data or v.filename:
                        fields[key] = data
        finally:
            await form.close()
        return fields

    @app.post("/api/synthesize")
    async def synthesize(request: Request) -> Any:
        body = await read_body(request)
        fields = await parse_form(request, body)
        label_data = fields.get("label")
        if label_data is None:
            raise HTTPError(400, "missing form field 'label' (a PNG file of class ids)")
        if isinstance(label_data, str):
            raise HTTPError(400, "form field 'label' must be a file upload (PNG), not a text value")
        seed_value = fields.get("seed")
        if seed_value is not None and not isinstance(seed_value, str):
            raise HTTPError(400, "form field 'seed' must be a text value, not a file")
        seed = parse_seed(seed_value)
        style_data = fields.get("style")
        if isinstance(style_data, str):
            raise HTTPError(400, "form field 'style' must be an image file upload, not a text value")
        if style_data is not None and not use_vae:
            raise HTTPError(400, f"model {info['name']!r} has no style encoder (use_vae is false); "
                                 "omit the 'style' field")
        label = await run_in_threadpool(
            decode_label, label_data, label_nc=label_nc, classes=classes, width=width, height=height,
            max_pixels=max_pixels,
        )
        style = None
        if style_data is not None:
            style = await run_in_threadpool(decode_style, style_data, width=width, height=height, max_pixels=max_pixels)
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        try:
            result = await worker.submit(label, seed, style)
        except QueueFullError:
            retry = worker.retry_after_s()
            raise HTTPError(503, f"server busy: {queue_size} requests already pending; retry in ~{retry} s",
                            {"Retry-After": str(retry)}) from None
        png = await run_in_threadpool(encode_png, result.image)
        return Response(png, media_type="image/png", headers={
            "X-Seed": str(seed), "X-Batch-Size": str(result.batch_size), "Cache-Control": "no-store",
        })

    return app


# --------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SpadeganError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            "is another server running there? pick another --port") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    backend: SynthesisBackend,
    host: str = "127.0.0.1",
    port: int = 7860,
    open_browser: bool = False,
    **app_kwargs: Any,
) -> None:
    """Serve the paint app with uvicorn until Ctrl+C; prints the URL.

    Listens on loopback by default. Anything else (e.g. ``0.0.0.0``) exposes the model to
    the network, so a warning is printed. ``port=0`` picks a free port.
    ``app_kwargs`` are passed to :func:`create_app`.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SpadeganError(f"the paint app needs the 'app' extra: pip install 'spadegan[app]' ({exc})") from exc
    app = create_app(backend, **app_kwargs)
    # Bind ourselves so a busy port becomes a one-line SpadeganError and port=0 works.
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    url = f"http://{shown_host}:{actual_port}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: listening on {host}: anyone who can reach this machine can use the model. "
              "Use the default 127.0.0.1 unless you mean it.", file=sys.stderr)
    print(f"spadegan paint: serving {backend.name!r} at {url}  (Ctrl+C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    if open_browser:
        def _open() -> None:
            import webbrowser
            for _ in range(100):  # wait up to 10 s for the server to accept connections
                if server.started:
                    webbrowser.open(url)
                    return
                time.sleep(0.1)
        threading.Thread(target=_open, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
