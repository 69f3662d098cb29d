"""Multi-process training with DistributedDataParallel, launched by `torchrun` or by
`spadegan train --gpu_ids 0,1,...` (`launch.py`).

`torchrun --nproc_per_node N -m spadegan.train.cli ...` (or `spadegan train ...` under
torchrun) sets RANK / WORLD_SIZE / LOCAL_RANK; `setup_distributed` reads them and joins the
process group: gloo on CPU, nccl on CUDA (one GPU per process, cuda:LOCAL_RANK). Processes
started by spadegan's own launcher get the same variables plus SPADEGAN_RANK_DEVICE, their
device (the GPU of their --gpu_ids entry, or the CPU).

`--batchSize` stays the *global* batch, as with the official DataParallel training: each of
the N processes takes batchSize/N samples of every global batch, so a 2-process run sees the
same samples per step as a 1-process run with the same batchSize and seed.

PyTorch's nn.SyncBatchNorm only synchronises CUDA tensors (and DDP refuses to wrap a CPU
module holding one); on CPU (gloo) the `syncbatch` norms are switched to
`CPUSyncBatchNorm`, which all-reduces the batch statistics with a differentiable
all_reduce. It has the same parameters and buffers, so state_dict keys stay those of the
official checkpoints.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import SpadeganError
from ..options import Options


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: Set by spadegan's launcher (`launch.py`) in each process it starts: that process's device.
RANK_DEVICE_ENV = "SPADEGAN_RANK_DEVICE"


def launched_device() -> torch.device | None:
    """The device spadegan's launcher gave this process, None when it did not start it."""
    value = os.environ.get(RANK_DEVICE_ENV)
    return torch.device(value) if value else None


def rank_device(opt: Options) -> torch.device:
    """The device to give `setup_distributed`: the launcher's for its processes; under torchrun
    with several --gpu_ids "cuda" (each process then takes cuda:LOCAL_RANK, so the ids do not
    pick it and "runs on the first id only" would be wrong); else `opt.torch_device`."""
    given = launched_device()
    if given is not None:
        return given
    if env_world_size() > 1 and not opt.device and len(opt.gpu_id_list) > 1 and torch.cuda.is_available():
        return torch.device("cuda")
    return opt.torch_device


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's environment, or return a 1-process info.

    `device` is the device the options ask for; under DDP on CUDA each process takes
    cuda:LOCAL_RANK instead, or, when spadegan's launcher started it, the device it was given.
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    given = launched_device()
    if given is not None:
        device = given
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpadeganError("--device cuda under torchrun, but CUDA is not available")
        if given is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup_distributed(finished: bool = True) -> None:
    """Leave the process group. `finished`: this rank ended normally, so every rank is here.

    The ranks meet at a barrier first so that no gloo / nccl work is still in flight when
    the group is torn down (a peer closing its connections mid-teardown aborted a gloo
    process with "terminate called without an active exception"). After a failure the
    other ranks may never arrive, so there is no barrier then.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `t` over the processes (a copy; `t` itself is untouched)."""
    if not info.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every process if `flag` is true on any (e.g. one of them got SIGINT)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the processes: the gradient of a sum is the summed gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_autograd(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm synchronised over the process group for CPU tensors (gloo).

    Same parameters and buffers as nn.SyncBatchNorm; not a subclass of it, because DDP
    rejects any SyncBatchNorm in a CPU module.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        syncing = (self.training and dist.is_available() and dist.is_initialized()
                   and dist.get_world_size() > 1)
        if not syncing:  # plain batch norm (in eval mode, or in one process)
            return super().forward(x)
        all_reduce = all_reduce_sum_autograd
        c = x.shape[1]
        xf = x if x.dtype == torch.float64 else x.float()
        dims = [0] + list(range(2, x.dim()))
        n_local = torch.tensor([xf.numel() // c], dtype=xf.dtype, device=x.device)
        # two passes (mean, then centred squares): the same accuracy as one-process BatchNorm
        s = all_reduce(torch.cat([xf.sum(dim=dims), n_local]))
        n = s[-1]
        mean = s[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dim=dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / torch.clamp(n - 1, min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(unbiased * m)
        return y.to(x.dtype)


def use_cpu_sync_batchnorm(net: nn.Module) -> int:
    """Switch every nn.SyncBatchNorm in `net` to CPUSyncBatchNorm in place; returns how many."""
    n = 0
    for m in net.modules():
        if type(m) is nn.SyncBatchNorm:
            m.__class__ = CPUSyncBatchNorm  # same attributes, only forward differs
            n += 1
    return n
