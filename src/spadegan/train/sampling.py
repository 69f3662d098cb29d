"""The order of the training data: per-epoch permutations and per-sample seeds.

An item depends only on (run seed, epoch, index), never on the number of loader workers,
the process, or what was loaded before; so a resumed run and a DDP run see exactly the
data an uninterrupted single-process run sees.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from ..data.loader import SignalSafeDataLoader, ignore_stop_signals
from ..errors import SpadeganError
from .state import mix_seed


class SeededItems(Dataset):
    """Wraps a dataset so that each item depends only on (run seed, epoch, index).

    The sampler hands out (index, epoch) keys. Datasets that take such keys themselves
    (`spadegan.data.datasets.PairedDataset`, which draws its crop/flip from its `seed`,
    the epoch and the index) get them as they are, with their `seed` set to the run's; any
    other dataset gets `dataset[index]` with python/numpy/torch seeded from (seed, epoch,
    index). Either way the same in a resumed run, with any number of loader workers, on
    any rank. In the main process (nThreads 0) the global RNG states are restored
    afterwards, so loading data never disturbs the training RNG.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        self.keyed = callable(getattr(dataset, "rng", None)) and hasattr(dataset, "seed")
        if self.keyed:
            dataset.seed = self.seed  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        in_worker = get_worker_info() is not None
        if not in_worker:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        s = mix_seed(self.seed, 2, epoch, index)
        random.seed(s)
        np.random.seed(s % 2 ** 32)
        torch.manual_seed(s)
        try:
            return self.dataset[(index, epoch)] if self.keyed else self.dataset[index]
        finally:
            if not in_worker:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class EpochBatchSampler(Sampler):
    """Global batches of a per-epoch permutation; each rank takes its slice of every batch.

    The permutation of epoch e is drawn from (seed, e) alone, so an epoch can be re-entered
    at any batch (`set_epoch(e, start_batch)`). The last incomplete batch is dropped, as in
    the official training loader. Rank r takes the r-th contiguous slice of each global
    batch. Yields lists of (dataset index, epoch) keys.
    """

    def __init__(self, n: int, global_batch: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise SpadeganError(f"--batchSize {global_batch} must be a multiple of the number of "
                                f"processes ({world_size})")
        self.n, self.global_batch, self.seed, self.shuffle = n, global_batch, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.epoch, self.start_batch = 1, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(mix_seed(self.seed, 1, epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch)
        for b in range(self.start_batch, self.batches_per_epoch):
            lo = b * self.global_batch + self.rank * self.local_batch
            yield [(i, self.epoch) for i in perm[lo:lo + self.local_batch]]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)


def make_train_loader(dataset: Dataset, opt: Any, seed: int,
                      dist: Any = None) -> tuple[EpochBatchSampler, SignalSafeDataLoader]:
    """The training loader: this process's slice of every global batch, `--nThreads` workers.

    `dist` is the process's DistInfo (rank, world size, device; None: one CPU process).
    Batches come from `EpochBatchSampler` (call `sampler.set_epoch(e, start_batch)` before
    each epoch), items from `SeededItems`; workers ignore SIGINT/SIGTERM so that Ctrl-C
    reaches the trainer, which saves `latest` (see `SignalSafeDataLoader`).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n < opt.batchSize:
        raise SpadeganError(f"the dataset has {n} sample(s), fewer than --batchSize {opt.batchSize}: "
                            "lower --batchSize or add data")
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world_size)
    cuda = dist is not None and dist.device.type == "cuda"
    sampler = EpochBatchSampler(n, opt.batchSize, seed, shuffle=not opt.serial_batches, rank=rank,
                                world_size=world)
    workers = max(0, int(opt.nThreads))
    loader = SignalSafeDataLoader(SeededItems(dataset, seed), batch_sampler=sampler, num_workers=workers,
                                  pin_memory=cuda, persistent_workers=workers > 0,
                                  worker_init_fn=ignore_stop_signals)
    return sampler, loader
