"""Load benchmark for the ``spadegan paint`` server (loopback only, bounded).

Starts the real app with uvicorn in-process on 127.0.0.1 (a free port), then runs two
scenarios with N concurrent httpx clients (threads), each a fixed number of requests:

* ``within``: clients <= queue_size. Every request must succeed (0 errors).
* ``overload``: more clients than queue slots. Some requests must get 503 + Retry-After
  (load shedding), none may fail otherwise, and the server must still answer /healthz.

By default the model is a fake backend that sleeps ``--base-ms + --item-ms * batch`` per
batch (so micro-batching pays off, as with a real network) and returns palette colours.
``--backend MODULE:CALLABLE`` benchmarks any real backend instead (the callable is
called without arguments and must return a ``SynthesisBackend``).

Prints a table and one JSON line; exits 1 if an expectation above is violated.
Client and server share one process (and the GIL), so absolute latencies are pessimistic;
compare runs with the same settings.

    python benchmarks/bench_app.py --clients 8 --requests 200
    python benchmarks/bench_app.py --model builtin --clients 1 --requests 40 --overload-clients 0
"""

import argparse
import importlib
import io
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from spadegan.app.server import SynthesisBackend, create_app
from spadegan.errors import SpadeganError

MAX_CLIENTS = 64
MAX_REQUESTS = 5000


class SleepyBackend:
    """Fake model: palette colours + seeded noise after a batch-size dependent sleep."""

    def __init__(self, width: int, height: int, base_ms: float, item_ms: float) -> None:
        self.label_nc, self.width, self.height = 8, width, height
        names = ["unlabeled", "sky", "sea", "mountain", "grass", "tree", "sand", "snow"]
        rng = np.random.default_rng(0)
        self.classes = [{"id": i, "name": n, "color": [int(v) for v in rng.integers(0, 256, 3)]}
                        for i, n in enumerate(names)]
        self.use_vae = False
        self.name = f"sleepy-fake({base_ms:g}+{item_ms:g}ms/item)"
        self.base, self.item = base_ms / 1000, item_ms / 1000
        self._lut = np.array([c["color"] for c in self.classes], np.uint8)

    def synthesize_batch(self, labels, seeds, styles):
        time.sleep(self.base + self.item * len(labels))  # sleep releases the GIL, like torch ops
        return [self._lut[lab] for lab in labels]


@dataclass
class Outcome:
    latencies_ok: list[float] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    retry_after_missing: int = 0

    def add(self, key: str) -> None:
        self.status_counts[key] = self.status_counts.get(key, 0) + 1


def start_server(app) -> tuple[str, object, threading.Thread, socket.socket]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # loopback only, free port
    sock.listen(256)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SpadeganError("benchmark server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", srv, thread, sock


def make_label(width: int, height: int, label_nc: int) -> bytes:
    """A plausible landscape-ish id map: horizontal bands."""
    ids = (np.arange(height)[:, None] * min(label_nc, 4) // height).repeat(width, 1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ids, "L").save(buf, format="PNG")
    return buf.getvalue()


def run_scenario(url: str, label: bytes, clients: int, requests: int, time_limit: float) -> tuple[Outcome, float]:
    import httpx

    out = Outcome()
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + time_limit

    def client(idx: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as c:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/api/synthesize", files={"label": ("l.png", label, "image/png")},
                               data={"seed": str(idx)})
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key, r = f"exception:{type(exc).__name__}", None
                dt = time.perf_counter() - t0
                with lock:
                    out.add(key)
                    if key == "200":
                        out.latencies_ok.append(dt)
                    elif key == "503" and r is not None and "retry-after" not in r.headers:
                        out.retry_after_missing += 1
                if key == "503":
                    time.sleep(0.05)  # a polite client backs off a little instead of spinning

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 65)
    return out, time.perf_counter() - t0


def summarise(name: str, clients: int, out: Outcome, wall: float, stats: dict) -> dict:
    lat = np.asarray(out.latencies_ok) * 1000
    ok = out.status_counts.get("200", 0)
    shed = out.status_counts.get("503", 0)
    other = sum(v for k, v in out.status_counts.items() if k not in ("200", "503"))
    sizes = stats.get("recent_batch_sizes") or [0]
    return {
        "scenario": name, "clients": clients, "requests": sum(out.status_counts.values()),
        "ok": ok, "rejected_503": shed, "other_errors": other, "status_counts": out.status_counts,
        "retry_after_missing": out.retry_after_missing,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
        "max_ms": float(lat.max()) if lat.size else None,
        "throughput_rps": ok / wall if wall > 0 else 0.0,
        "mean_recent_batch": float(np.mean(sizes)),
        "wall_s": wall,
    }


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def load_backend(spec: str) -> SynthesisBackend:
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise SpadeganError(f"--backend must look like MODULE:CALLABLE, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpadeganError(f"--backend {spec!r}: {exc}") from exc
    return factory()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="clients in the 'within' scenario (<= queue size)")
    ap.add_argument("--overload-clients", type=int, default=None, help="clients in the 'overload' scenario "
                    "(default: 3 x queue size, capped at %d; 0 skips it)" % MAX_CLIENTS)
    ap.add_argument("--requests", type=int, default=120, help="requests per scenario")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per scenario at most")
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--size", default="256x256", help="fake model WIDTHxHEIGHT")
    ap.add_argument("--base-ms", type=float, default=40.0, help="fake model: fixed cost per batch")
    ap.add_argument("--item-ms", type=float, default=10.0, help="fake model: extra cost per image in a batch")
    ap.add_argument("--backend", default=None, help="MODULE:CALLABLE returning a real SynthesisBackend")
    ap.add_argument("--model", default=None, metavar="CHECKPOINT",
                    help="a real model as `spadegan paint` serves it: 'builtin' or a checkpoint folder")
    args = ap.parse_args(argv)

    try:
        if not 1 <= args.clients <= MAX_CLIENTS:
            raise SpadeganError(f"--clients must be in 1..{MAX_CLIENTS}")
        if not 1 <= args.requests <= MAX_REQUESTS:
            raise SpadeganError(f"--requests must be in 1..{MAX_REQUESTS}")
        overload = args.overload_clients if args.overload_clients is not None else min(MAX_CLIENTS, 3 * args.queue_size)
        if not 0 <= overload <= MAX_CLIENTS:
            raise SpadeganError(f"--overload-clients must be in 0..{MAX_CLIENTS}")
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise SpadeganError(f"--size must look like 256x256, got {args.size!r}") from None
        if args.model:
            from spadegan.app.cli import build_backend
            backend = build_backend(None if args.model == "builtin" else args.model)
        elif args.backend:
            backend = load_backend(args.backend)
        else:
            backend = SleepyBackend(w, h, args.base_ms, args.item_ms)
        app = create_app(backend, queue_size=args.queue_size, max_batch=args.max_batch,
                         batch_wait_ms=args.batch_wait_ms)
        url, srv, thread, sock = start_server(app)
    except SpadeganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import httpx

    label = make_label(backend.width, backend.height, backend.label_nc)
    results, problems = [], []
    try:
        scenarios = [("within", args.clients)] + ([("overload", overload)] if overload else [])
        for name, n in scenarios:
            out, wall = run_scenario(url, label, n, args.requests, args.time_limit)
            stats = httpx.get(url + "/api/stats").json()
            res = summarise(name, n, out, wall, stats)
            res["healthy_after"] = httpx.get(url + "/healthz").status_code == 200
            results.append(res)
            if not res["healthy_after"]:
                problems.append(f"{name}: server unhealthy afterwards")
            if res["other_errors"]:
                problems.append(f"{name}: {res['other_errors']} non-503 errors {res['status_counts']}")
            if res["retry_after_missing"]:
                problems.append(f"{name}: 503 without Retry-After")
            if name == "within" and n <= args.queue_size and res["rejected_503"]:
                problems.append(f"within: {res['rejected_503']} requests rejected below the queue bound")
            if name == "overload" and n > args.queue_size and res["rejected_503"] == 0:
                problems.append("overload: no 503 although clients exceed the queue size")
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()

    cols = ["scenario", "clients", "requests", "ok", "rejected_503", "other_errors", "p50_ms", "p95_ms",
            "max_ms", "throughput_rps", "mean_recent_batch"]
    print(f"backend={backend.name} queue_size={args.queue_size} max_batch={args.max_batch} "
          f"batch_wait_ms={args.batch_wait_ms:g}")
    print("  ".join(f"{c:>14}" for c in cols))
    for r in results:
        print("  ".join(f"{fmt(r[c]):>14}" for c in cols))
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(json.dumps({"bench": "app", "backend": backend.name, "queue_size": args.queue_size,
                      "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
                      "results": results, "ok": not problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
