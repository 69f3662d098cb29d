"""DataLoader worker processes that leave SIGINT/SIGTERM to the trainer (see
`SignalSafeDataLoader`), so Ctrl-C or `kill` on the process group still saves `latest`;
`handling_stop_signals`, how the trainer (and the multi-GPU launcher) take them."""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
import weakref
from typing import Callable, Iterator

from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter  # subclassed: see SignalSafeDataLoader


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


_LIVE_ITERS: "weakref.WeakSet[_SignalSafeIter]" = weakref.WeakSet()  # for the exit hook


@contextlib.contextmanager
def handling_stop_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """`handler(signum, frame)` for SIGINT and SIGTERM inside the block, the previous handlers
    after it. Python takes signals in the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in sorted(_STOP_SIGNALS)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: leave SIGINT/SIGTERM to the main process.

    Ctrl-C in a terminal or ``kill``/``timeout`` on the process group reach the workers
    too; if they died of it, the trainer could not fetch the batch it needs to finish its
    step and save ``latest``. So workers ignore both (the main process shuts them down when
    it exits). They start with the signals blocked (see :class:`SignalSafeDataLoader`), so
    one sent while a worker was starting is discarded here rather than killing it.
    """
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class _SignalSafeIter(_MultiProcessingDataLoaderIter):
    """Workers started with SIGINT/SIGTERM blocked; stopped with SIGKILL if they linger."""

    def __init__(self, loader: DataLoader) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            super().__init__(loader)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _LIVE_ITERS.add(self)

    def _shutdown_workers(self) -> None:
        super()._shutdown_workers()
        # torch's last resort is SIGTERM, which these workers ignore
        for w in getattr(self, "_workers", []):
            if w.is_alive():
                w.kill()
                w.join(timeout=5)


class SignalSafeDataLoader(DataLoader):
    """A DataLoader whose worker processes leave SIGINT/SIGTERM to the main process.

    Workers are started with the signals blocked: between a worker's start and its
    ``worker_init_fn`` (:func:`ignore_stop_signals`, which ignores and unblocks them)
    PyTorch's own handler would let a SIGTERM kill it. The main process still gets the
    signals: its mask is restored as soon as the workers exist, and a signal that arrived
    meanwhile is delivered then. Because the workers ignore SIGTERM, the usual last resort
    for a worker that does not stop (SIGTERM, from PyTorch and from multiprocessing at
    interpreter exit, the latter followed by a join that would then wait forever) is
    replaced: SIGKILL after the regular shutdown, and an exit hook that shuts live workers
    down before multiprocessing's hook runs.
    """

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return super()._get_iterator()
        self.check_worker_number_rationality()
        return _SignalSafeIter(self)


@atexit.register
def _shutdown_live_workers() -> None:
    # registered after multiprocessing's and torch's exit hooks, so it runs before them
    for it in list(_LIVE_ITERS):
        try:
            it._shutdown_workers()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
