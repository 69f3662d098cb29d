"""Reading and writing files: atomic writes and loading of weight files.

The bottom of the package (it imports only `errors` and third-party libraries), so every
other module writes and reads files the same way:

- `atomic_write_bytes`, `atomic_torch_save`: one file through a temp file in the same
  folder + fsync + rename, so readers never see half a file and a crash keeps the old one;
- `save_file_set`: several `torch.save` files replaced all together or not at all;
- `read_state_dict`: a state_dict file (official or spadegan) onto the CPU, with a clear
  error naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .errors import SpadeganError


# ---- writing ---------------------------------------------------------------------------------
def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write via a temp file in the same folder + fsync + rename.

    Readers never see half a file, and a crash mid-write keeps the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    _atomic_write(path, lambda fh: fh.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def save_file_set(items: list[tuple[Path, Any]]) -> None:
    """torch.save several files so that either all of them are replaced or none is.

    Each object goes to a temp file in its folder first; only when every one has been
    written and fsynced are they renamed over the old files. A failure (disk full, a kill
    during torch.save, ...) leaves the previous files untouched and no temp files behind.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, obj in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


# ---- reading ---------------------------------------------------------------------------------
def load_torch_file(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """`torch.load(path, weights_only=True)` onto the CPU: tensors and plain containers only.

    The one way spadegan reads a torch file it did not just write itself (weights, training
    states, segmenters): `weights_only=True` refuses pickled code, and any failure becomes a
    SpadeganError "cannot read <what> <path>: <reason><hint>".
    """
    path = Path(path)
    if not path.is_file():
        raise SpadeganError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpadeganError(f"cannot read {what} {path}: {e}{hint}") from None


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A state_dict file (official or ours) on the CPU, with a clear error if unreadable.

    Also accepts `{"state_dict": ...}` wrappers and keys saved from a DataParallel wrapper.
    """
    sd = load_torch_file(path, what)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SpadeganError(f"{path} does not hold a state_dict")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd
