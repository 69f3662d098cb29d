"""HTTP server behind ``spadegan paint``: a GauGAN-style painting app.

The server is model-agnostic: it talks to a :class:`SynthesisBackend` (see below),
so the web layer can be tested with a fake backend and the real model adapter can be
plugged in later via :func:`create_app`.

Endpoints
---------
``GET /``                 the painting page (plain HTML/CSS/JS from ``static/``, no build step)
``GET /static/...``       the page's assets
``GET /healthz``          ``{"status": "ok"}``
``GET /api/info``         model name, resolution, ``label_kind`` (``classes``, or ``image`` for
                          models conditioned on label images, ``--label_nc 0``), ``input_nc``
                          (their channels: 1 greyscale, 3 RGB; 0 for class ids), ``label_nc``,
                          palette ``classes``, ``common`` (ids of common scene classes, most
                          common first), ``background`` (id the eraser paints; None for
                          label images), ``use_vae``, ``previews`` (whether ``painter`` requests get stroke
                          previews), ``region_seeds`` (whether
                          ``region_seeds`` re-roll single classes), limits
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
        For a model conditioned on label images (``label_kind`` ``image``) the label is
        instead a greyscale (``input_nc`` 1) or RGB (``input_nc`` 3) PNG, used as the image
        it is and resized bilinearly; another channel count is a 400 naming both counts.
    ``style`` (file, optional)  any image Pillow reads; only for VAE models; resized
        (bicubic) to the model size.
    ``seed`` (optional)  integer in ``0..2**32-1``; a random one is drawn when absent.
    ``region_seeds`` (optional, text)  only for models whose ``/api/info`` says
        ``region_seeds: true`` (3D noise: OASIS, spadegan's ``--use_3d_noise``): a JSON object
        ``{"<class id>": seed, ...}`` giving those classes noise of their own (per-class
        noise: the noise vector is constant over each class's pixels). To re-roll the
        appearance of one region, send the same ``seed`` and label with a new seed for its
        class: only that class's noise changes. Ids are the label's (for an official OASIS
        run the dataset's own ids); at most 256 classes.
    ``painter`` (optional, text)  an id (1-64 of ``A-Za-z0-9-_.``) the page draws once: the
        server keeps that painter's last full pass and answers with a *stroke preview*
        computed around the changed pixels (header ``X-Preview: 1``), or a full pass
        (``X-Preview: 0``, ``X-Paint-Reason`` saying why: first request, edit too large,
        evicted from the byte-bounded painters' cache, ...). Without it nothing changes.
    ``final`` (optional, ``0``/``1``, with ``painter``)  ``1``: the exact image (what a request
        without ``painter`` gives), sent by the page when the painter pauses; it refreshes
        that painter's cache.
    Response: the PNG, with header ``X-Seed`` (the seed used, so the result can be
    reproduced), ``X-Region-Seeds`` (the region seeds used, compact JSON, when given) and
    ``X-Batch-Size`` (how many requests shared the model call).

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
raises, each job is retried alone so one bad request cannot fail its neighbours. Requests
with a ``painter`` id are never batched: each is one ``backend.paint`` call (that painter's
stroke-preview session, `spadegan.synthesize.session`), admitted and bounded like any other;
the sessions share one byte budget (`AppBackend`, ``--paint_cache_mb``).
A client that goes away does not block anyone: if its future was cancelled before the
batch is formed the job is skipped, otherwise the result is simply dropped. A backend that
hangs does not hang its clients: each request waits at most ``timeout_s`` for its result
and then gets 504; the stuck job still counts as pending, so once ``queue_size`` jobs are
stuck new requests are refused at once with 503.
"""

import json
import logging
import secrets
import socket
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # the 'app' extra; create_app says how to install it when it is missing
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    _MISSING_EXTRA: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - depends on the install
    Request = Any  # type: ignore[misc,assignment]
    _MISSING_EXTRA = _exc

from ..errors import SpadeganError

from .backend import SynthesisBackend, check_backend, common_class_ids, label_image_channels, pick_background_id
from .inputs import (MAX_SEED, HTTPError, decode_label, decode_label_image, decode_style, encode_png,
                     parse_region_seeds, parse_seed)
from .worker import InferenceWorker, QueueFullError

log = logging.getLogger("spadegan.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"


_FIELDS = ("label", "style", "seed", "region_seeds", "painter", "final")

#: a painter id: what the page sends to keep its stroke-preview cache (1-64 of these characters)
_PAINTER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _painter_fields(fields: dict[str, Any]) -> tuple[str | None, bool]:
    """(painter id or None, final) from the form, or a 400 naming the bad value."""
    painter, final = fields.get("painter"), fields.get("final")
    if painter is not None and (not isinstance(painter, str) or not 1 <= len(painter) <= 64
                                or not set(painter) <= _PAINTER_CHARS):
        shown = painter[:80] if isinstance(painter, str) else "a file"
        raise HTTPError(400, f"form field 'painter' must be 1-64 characters of letters, digits, '-', '_' "
                             f"or '.', got {shown!r}")
    if final is not None and final not in ("0", "1", "true", "false"):
        raise HTTPError(400, f"form field 'final' must be 0, 1, true or false, got {str(final)[:40]!r}")
    if final in ("1", "true") and painter is None:
        raise HTTPError(400, "form field 'final' needs a 'painter' (the final image replaces that painter's preview)")
    return painter, final in ("1", "true")


# --------------------------------------------------------------------------------------
# The FastAPI app
# --------------------------------------------------------------------------------------


@dataclass
class _Paint:
    """What the routes read from `app.state.paint`: the model's info, the worker and the limits."""

    info: dict[str, Any]
    classes: list[dict]
    worker: InferenceWorker
    max_upload_bytes: int
    max_pixels: int
    queue_size: int


def _paint(request: Request) -> _Paint:
    return request.app.state.paint


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _starlette_error(_request: Request, exc: Any) -> Any:
    # 404/405 etc. in the same {"error": ...} shape as ours.
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _our_error(_request: Request, exc: HTTPError) -> Any:
    return _error(exc.status, exc.message, exc.headers)


async def _index() -> Any:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


async def _healthz() -> dict:
    return {"status": "ok"}


async def _api_info(request: Request) -> dict:
    return _paint(request).info


async def _api_stats(request: Request) -> dict:
    st = _paint(request)
    stats = st.worker.stats()
    sessions = getattr(st.worker.backend, "sessions", None)
    if sessions is not None:  # the painters' preview caches (AppBackend)
        stats["painters"] = sessions.stats()
    return stats


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body but stop (413) as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    too_big = f"request body is larger than the {limit}-byte upload limit"
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPError(413, f"{too_big} (Content-Length: {declared})")
        except ValueError:
            raise HTTPError(400, f"bad Content-Length header {declared[:40]!r}") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked uploads have no Content-Length
            raise HTTPError(413, too_big)
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_form(request: Request, body: bytes) -> dict[str, Any]:
    """The known form fields (file parts as bytes, text as str); empty parts count as absent."""
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
            raise HTTPError(400, f"unknown form field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(_FIELDS)}")
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


def _check_fields(fields: dict[str, Any], info: dict[str, Any]
                  ) -> tuple[bytes, int | None, bytes | None, dict[int, int] | None]:
    """(label PNG bytes, seed or None, style bytes or None, region seeds or None), or a 400
    naming the bad field."""
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
    if style_data is not None and not info["use_vae"]:
        raise HTTPError(400, f"model {info['name']!r} has no style encoder (use_vae is false); "
                             "omit the 'style' field")
    regions_value = fields.get("region_seeds")
    if regions_value is not None and not isinstance(regions_value, str):
        raise HTTPError(400, "form field 'region_seeds' must be a text value (JSON), not a file")
    regions = parse_region_seeds(regions_value, info["label_nc"])
    if regions and not info["region_seeds"]:
        raise HTTPError(400, f"model {info['name']!r} draws no per-class noise (region_seeds is false in "
                             "/api/info); omit the 'region_seeds' field")
    return label_data, seed, style_data, regions


async def _synthesize(request: Request) -> Any:
    """POST /api/synthesize: decode the form, queue the job, answer with the PNG."""
    st = _paint(request)
    info = st.info
    fields = await _parse_form(request, await _read_body(request, st.max_upload_bytes))
    label_data, seed, style_data, regions = _check_fields(fields, info)
    painter, final = _painter_fields(fields)
    if info["input_nc"]:  # a label image
        label = await run_in_threadpool(decode_label_image, label_data, channels=info["input_nc"],
                                        width=info["width"], height=info["height"], max_pixels=st.max_pixels)
    else:
        label = await run_in_threadpool(decode_label, label_data, label_nc=info["label_nc"], classes=st.classes,
                                        width=info["width"], height=info["height"], max_pixels=st.max_pixels)
    style = None
    if style_data is not None:
        style = await run_in_threadpool(decode_style, style_data, width=info["width"], height=info["height"],
                                        max_pixels=st.max_pixels)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    try:
        result = await st.worker.submit(label, seed, style, regions, painter=painter, final=final)
    except QueueFullError:
        retry = st.worker.retry_after_s()
        raise HTTPError(503, f"server busy: {st.queue_size} requests already pending; retry in ~{retry} s",
                        {"Retry-After": str(retry)}) from None
    png = await run_in_threadpool(encode_png, result.image)
    headers = {"X-Seed": str(seed), "X-Batch-Size": str(result.batch_size), "Cache-Control": "no-store"}
    if painter is not None:
        # X-Preview 1: an approximation the page replaces with the final image (X-Preview 0)
        headers["X-Preview"] = "1" if result.preview else "0"
        if result.preview is None:
            headers["X-Paint-Reason"] = "this model backend has no stroke previews"
        elif result.reason:
            headers["X-Paint-Reason"] = result.reason.encode("ascii", "replace").decode()
    if regions:
        headers["X-Region-Seeds"] = json.dumps({str(k): v for k, v in sorted(regions.items())}, separators=(",", ":"))
    return Response(png, media_type="image/png", headers=headers)


def _check_settings(max_upload_bytes: int, max_pixels: int, queue_size: int, max_batch: int,
                    batch_wait_ms: float, timeout_s: float | None) -> None:
    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels),
                        ("queue_size", queue_size), ("max_batch", max_batch)):
        if int(value) < 1:
            raise SpadeganError(f"{name} must be >= 1, got {value}")
    if batch_wait_ms < 0:
        raise SpadeganError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if timeout_s is not None and not timeout_s > 0:
        raise SpadeganError(f"timeout_s must be > 0 (or None for no timeout), got {timeout_s}")


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
    The routes are the module's `_index`, `_healthz`, `_api_info`, `_api_stats` and
    `_synthesize`, reading the app's state (`app.state.paint`).
    """
    if _MISSING_EXTRA is not None:  # pragma: no cover - depends on the install
        raise SpadeganError(f"the paint app needs the 'app' extra: pip install 'spadegan[app]' ({_MISSING_EXTRA})")
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    _check_settings(max_upload_bytes, max_pixels, queue_size, max_batch, batch_wait_ms, timeout_s)
    classes = check_backend(backend)
    input_nc = label_image_channels(backend)
    if input_nc and background_id is not None:
        raise SpadeganError("background_id is a class id; this backend reads label images (input_nc "
                            f"{input_nc}), where the page's eraser paints a background colour")
    info = {
        "name": str(backend.name),
        "width": int(backend.width),
        "height": int(backend.height),
        "label_kind": "image" if input_nc else "classes",
        "input_nc": input_nc,
        "label_nc": int(backend.label_nc),
        "classes": classes,
        "use_vae": bool(backend.use_vae),
        "region_seeds": bool(getattr(backend, "supports_region_seeds", False)) and not input_nc,
        # stroke previews: the backend answers `painter` requests (AppBackend over the engine)
        "previews": bool(getattr(backend, "supports_previews", False)) and callable(getattr(backend, "paint", None)),
        "common": common_class_ids(classes),
        "background": None if input_nc else pick_background_id(backend, classes, background_id),
        "max_upload_bytes": int(max_upload_bytes),
        "max_seed": MAX_SEED,
    }
    worker = InferenceWorker(backend, queue_size=int(queue_size), max_batch=int(max_batch), batch_wait_ms=batch_wait_ms,
                             timeout_s=timeout_s)

    @asynccontextmanager
    async def lifespan(_app: Any):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPI(title="spadegan paint", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.paint = _Paint(info, classes, worker, int(max_upload_bytes), int(max_pixels), int(queue_size))
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_exception_handler(HTTPError, _our_error)
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    app.add_api_route("/api/info", _api_info, methods=["GET"])
    app.add_api_route("/api/stats", _api_stats, methods=["GET"])
    app.add_api_route("/api/synthesize", _synthesize, methods=["POST"])
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
