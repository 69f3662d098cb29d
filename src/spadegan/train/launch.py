"""`spadegan train --gpu_ids 0,1,...` without torchrun: one DDP process per listed GPU.

`launch_devices(opt)` decides whether this `spadegan train` is a launcher: several
`--gpu_ids` on a CUDA machine, not under torchrun (which starts the processes itself) and not
already one of our processes. `launch(entry, argv, devices)` then starts one process per
device with PyTorch's own launcher (`torch.multiprocessing.start_processes`, spawn), each
with the environment torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT on a free local port) plus `SPADEGAN_RANK_DEVICE`, the GPU of its id in the list;
each runs `entry(argv)` (`train_main`), which joins the group through
`distributed.setup_distributed` exactly as under torchrun: nccl on CUDA, gloo on the CPU,
`--batchSize` the global batch, rank 0 alone writes.

Signals: the processes run in their own process groups, so a terminal's Ctrl-C or a
`kill` of the launcher reaches them once, forwarded by the launcher (SIGINT / SIGTERM): the
trainers finish the step and rank 0 saves `latest`, as in one process; a second Ctrl-C
stops them without saving. If the launcher dies, PyTorch's launcher sends them SIGINT.

Errors: a SpadeganError in a process is passed back to the launcher, which reports each
distinct message once (every rank usually fails alike, e.g. on a bad dataset path).

`SPADEGAN_CPU_PROCESSES=N` (hidden, for tests and CPU-only checks) launches N gloo processes
on the CPU through the same code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.loader import handling_stop_signals
from ..errors import SpadeganError, run_command
from ..options import Options
from .distributed import RANK_DEVICE_ENV, env_world_size, launched_device

#: Hidden: this many gloo processes on the CPU through the launcher (tests, CPU checks).
CPU_PROCESSES_ENV = "SPADEGAN_CPU_PROCESSES"
#: Seconds the other processes get to stop by themselves after one failed.
GRACE_SECONDS = 20.0


def _cpu_processes() -> int:
    value = os.environ.get(CPU_PROCESSES_ENV, "").strip()
    if not value:
        return 0
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise SpadeganError(f"{CPU_PROCESSES_ENV}={value!r}: give a number of processes (1 or more)")
    return n


def launch_devices(opt: Options) -> list[torch.device] | None:
    """The devices to start one training process each on, or None to train in this process.

    None under torchrun, inside a launched process, with an explicit --device, with at most
    one GPU id, or without CUDA (then `device.resolve_device` says it runs on the CPU).
    """
    if env_world_size() > 1 or launched_device() is not None:
        return None
    n_cpu = _cpu_processes()
    if n_cpu:
        devices = [torch.device("cpu")] * n_cpu
    else:
        ids = opt.gpu_id_list
        if opt.device or len(ids) < 2 or not torch.cuda.is_available():
            return None
        shown = ",".join(str(i) for i in ids)
        if len(set(ids)) != len(ids):
            raise SpadeganError(f"--gpu_ids {shown} lists a GPU twice; list each GPU once")
        count = torch.cuda.device_count()
        missing = [i for i in ids if i >= count]
        if missing:
            raise SpadeganError(f"--gpu_ids {shown} asks for GPU {missing[0]}, but this machine has "
                                f"{count} CUDA GPU(s) (0..{count - 1})")
        devices = [torch.device("cuda", i) for i in ids]
    if len(devices) > 1 and opt.batchSize % len(devices):
        raise SpadeganError(f"--batchSize {opt.batchSize} is the global batch and must be a multiple of "
                            f"the number of processes ({len(devices)})")
    return devices if len(devices) > 1 else None


def free_port() -> int:
    """A TCP port free on this machine right now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(rank: int, entry: Callable[[list[str]], int], argv: list[str], devices: list[str],
           port: int, error_dir: str) -> None:
    """One launched process: torchrun's environment, then `entry(argv)` (see the module docstring)."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # signals come from the launcher only, never twice
    # until the trainer takes over the signals, a forwarded SIGTERM stops this process as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    world = len(devices)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), **{RANK_DEVICE_ENV: devices[rank]})
    os.environ.pop(CPU_PROCESSES_ENV, None)
    if "OMP_NUM_THREADS" not in os.environ and devices[rank] == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the cores shared out

    def reporting(args: list[str]) -> int:
        try:
            return entry(args)
        except SpadeganError as e:  # the launcher prints it, once for all ranks
            Path(error_dir, f"rank{rank}.txt").write_text(str(e))
            return 2
    code = run_command("train", reporting, argv)
    # Everything is written (atomically) and the group is left: end here rather than in the
    # interpreter's teardown, where the communication library's threads can still abort the
    # process (seen with gloo) and turn a finished run into a reported failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _forwarding_signals(processes: Sequence):
    """While the processes run, pass SIGINT / SIGTERM on to each of them (every time)."""
    def forward(signum, frame):
        for p in processes:
            if p.is_alive() and p.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)
    return handling_stop_signals(forward)


def _reported_errors(error_dir: Path, devices: list[str]) -> str | None:
    """The SpadeganErrors the processes reported: one message, or one per distinct message."""
    found: dict[str, list[int]] = {}
    for rank in range(len(devices)):
        f = error_dir / f"rank{rank}.txt"
        if f.is_file():
            found.setdefault(f.read_text(), []).append(rank)
    if not found:
        return None
    if len(found) == 1 and len(next(iter(found.values()))) == len(devices):
        return next(iter(found))
    return "; ".join(f"process {ranks[0]} ({devices[ranks[0]]}): {msg}" for msg, ranks in found.items())


def launch(entry: Callable[[list[str]], int], argv: list[str], devices: Sequence[torch.device]) -> int:
    """Run `entry(argv)` in one process per device (DDP ranks 0..N-1); returns the exit code.

    `entry` must be importable by name (a module-level function, or a functools.partial of
    one): the processes are started with the spawn method.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

    names = [str(d) for d in devices]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="spadegan-launch-") as tmp:
        ctx = mp.start_processes(_child, args=(entry, list(argv), names, port, tmp), nprocs=len(names),
                                 join=False, start_method="spawn")
        try:
            with _forwarding_signals(ctx.processes):
                while not ctx.join(grace_period=GRACE_SECONDS):
                    pass
        except ProcessException as e:
            message = _reported_errors(Path(tmp), names)
            if message is not None:
                raise SpadeganError(message) from None
            if not isinstance(e, ProcessExitedException):
                raise  # a bug: the process's traceback is in the message
            if e.exit_code == 130:
                return 130
            raise SpadeganError(f"training process {e.error_index} ({names[e.error_index]}) "
                                + (f"was killed by {e.signal_name}" if e.signal_name else
                                   f"exited with code {e.exit_code}")
                                + "; the other processes were stopped") from None
    return 0
