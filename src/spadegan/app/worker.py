"""The single inference thread behind the paint app: admission control and micro-batching.

See the "Concurrency model" section of `spadegan.app.server`.
"""

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SpadeganError
from .backend import SynthesisBackend
from .inputs import HTTPError

log = logging.getLogger("spadegan.app")


class QueueFullError(Exception):
    """Admission refused because ``queue_size`` requests are already pending."""


@dataclass
class _Job:
    label: np.ndarray
    seed: int
    style: np.ndarray | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    region_seeds: dict[int, int] | None = None
    painter: str | None = None  # a painter id: the backend's `paint` (stroke previews), alone
    final: bool = False  # with a painter: the exact image wanted, not a preview


@dataclass
class _Result:
    image: np.ndarray
    batch_size: int
    preview: bool | None = None  # painter requests: whether the image is a preview
    reason: str = ""  # painter requests: why a full pass ran (empty for a preview)


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
        """Start the inference thread (nothing to do while it runs).

        Raises SpadeganError while a thread that `stop` asked to end is still inside a model
        call: a second thread beside it would run the model twice at once and share its queue.
        """
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                if self._stopped:
                    raise SpadeganError("cannot start the paint app's inference thread: the one stopped before is "
                                        "still inside a model call (the model may be stuck); it ends when that "
                                        "call returns, or restart the process")
                return
            self._stopped = False
            self._thread = threading.Thread(target=self._run, name="spadegan-inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Fail the queued requests and end the thread, waiting up to `timeout` seconds for a
        model call in progress; a call that does not return by then is logged, and the thread
        ends after it (until then `start` refuses)."""
        with self._lock:
            thread = self._thread  # kept while alive: start() must not run a second one beside it
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
            log.warning("the inference thread is still inside a model call %g s after stop(); it ends when the "
                        "call returns, and the worker cannot start again until then", timeout)
        else:
            with self._lock:
                if self._thread is thread:
                    self._thread = None

    # -- request side (event loop) -----------------------------------------------------
    def retry_after_s(self) -> int:
        """Rough time until a queue slot frees up, for the ``Retry-After`` header."""
        per_batch = self._ema_batch_s if self._ema_batch_s is not None else 1.0
        return max(1, math.ceil(per_batch * self.queue_size / self.max_batch))

    async def submit(self, label: np.ndarray, seed: int, style: np.ndarray | None,
                     region_seeds: dict[int, int] | None = None, painter: str | None = None,
                     final: bool = False) -> _Result:
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
        self._queue.put(_Job(label, seed, style, fut, loop, region_seeds=region_seeds, painter=painter, final=final))
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
            painting = [j for j in live if j.painter is not None and hasattr(self.backend, "paint")]
            for j in painting:  # stroke previews: one painter's cache per call, never batched
                self._process([j])
            live = [j for j in live if j not in painting]
            if live:
                self._process(live)

    def _call_backend(self, jobs: list[_Job]) -> list[np.ndarray | _Result]:
        if len(jobs) == 1 and jobs[0].painter is not None and hasattr(self.backend, "paint"):
            j = jobs[0]
            image, preview, reason = self.backend.paint(j.painter, j.label, j.seed, j.style, final=j.final)
            return [_Result(self._check_image(image), 1, bool(preview), str(reason))]
        args = ([j.label for j in jobs], [j.seed for j in jobs], [j.style for j in jobs])
        if any(j.region_seeds for j in jobs):  # only backends that support_region_seeds get them
            out = self.backend.synthesize_batch(*args, region_seeds=[j.region_seeds for j in jobs])
        else:
            out = self.backend.synthesize_batch(*args)
        if not isinstance(out, (list, tuple)) or len(out) != len(jobs):
            raise RuntimeError(f"backend returned {type(out).__name__} of length "
                               f"{len(out) if hasattr(out, '__len__') else '?'} for {len(jobs)} inputs")
        return [self._check_image(img) for img in out]

    @staticmethod
    def _check_image(img: Any) -> np.ndarray:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise RuntimeError(f"backend returned an image of shape {arr.shape} dtype {arr.dtype}; "
                               "expected (H, W, 3) uint8")
        return arr

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
            self._finish(j, img if isinstance(img, _Result) else _Result(img, len(jobs)), is_error=False)

    @staticmethod
    def _map_backend_error(exc: BaseException) -> HTTPError:
        if isinstance(exc, SpadeganError):
            return HTTPError(400, str(exc))
        log.error("model error during synthesis", exc_info=exc)
        return HTTPError(503, f"model error: {type(exc).__name__}: {exc}")
