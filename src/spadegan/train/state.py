"""What an exact resume needs besides the networks: seeds, RNG states, the position files.

- `mix_seed`: well-spread seeds from (run seed, purpose, epoch, ...) tuples;
- `rng_state` / `set_rng_state`: python, numpy, torch (and CUDA) RNG states and extra
  generators, as saved in `latest_optim.pth` (`OPTIM_FILE`, format `STATE_FORMAT`);
- `write_iter_file` / `read_iter_file`: the official `iter.txt` (epoch, samples into it).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import SpadeganWarning
from ..fileio import atomic_write_bytes

OPTIM_FILE = "latest_optim.pth"
STATE_FORMAT = 1


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (weights init and anything else drawing from them)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (so (seed, epoch) and (seed, epoch+1) differ a lot)."""
    h = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _np_state() -> dict[str, Any]:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_np_state(s: Mapping[str, Any]) -> None:
    np.random.set_state((s["name"], s["key"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def rng_state(extra: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    for k, g in (extra or {}).items():
        st[k] = g.get_state()
    return st


def _set_cuda_rng_state(states: list[torch.Tensor]) -> None:
    """Restore the per-GPU RNG states; warn (the resume is no longer exact) where that fails."""
    count = torch.cuda.device_count()
    try:
        torch.cuda.set_rng_state_all(states[:count])
        if len(states) != count:
            raise ValueError(f"they were saved for {len(states)} GPU(s), this machine has {count}")
    except (RuntimeError, ValueError) as e:
        warnings.warn(f"the CUDA random number generator states of the resumed run could not all be "
                      f"restored ({e}); training goes on, but the resume is no longer exact", SpadeganWarning, stacklevel=3)


def set_rng_state(st: Mapping[str, Any], extra: Mapping[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(st["torch"])
    _set_np_state(st["numpy"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        _set_cuda_rng_state(st["cuda"])
    for k, g in (extra or {}).items():
        if k in st:
            g.set_state(st[k])


def write_iter_file(path: Path, epoch: int, epoch_iter: int) -> None:
    """iter.txt exactly as the official np.savetxt((epoch, iter), delimiter=',', fmt='%d') writes it."""
    atomic_write_bytes(path, f"{int(epoch)}\n{int(epoch_iter)}\n".encode())


def read_iter_file(path: Path) -> tuple[int, int] | None:
    """(epoch, samples into the epoch) from an official or spadegan iter.txt, None if unusable."""
    try:
        nums = [int(float(x)) for x in path.read_text().replace(",", " ").split()]
    except (OSError, ValueError):
        return None
    return (nums[0], nums[1]) if len(nums) >= 2 else None
