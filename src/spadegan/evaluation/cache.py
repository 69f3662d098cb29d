"""The real images' statistics kept between evaluations, so a second model is scored quickly.

Scoring the real photos of a split (Inception features for FID/KID, the paper segmenter's
scores of the real row) costs as much as scoring a model, and it does not depend on the
model. `StatsCache` keeps them under a key made of everything they depend on: the split's
pixels and label ids, the protocol (segmenter, preprocessing, resolution, ...) and the
weight files' sha256. Entries are written atomically and read without pickle
(`numpy.load(allow_pickle=False)`, JSON); a corrupt entry is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import say_once
from ..fileio import atomic_write_bytes

__all__ = ["StatsCache", "default_cache_dir", "files_sha256", "split_digest"]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/spadegan/eval` (default `~/.cache/spadegan/eval`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spadegan" / "eval"


def split_digest(*tensors: torch.Tensor | None) -> str:
    """sha256 over the shapes, dtypes and bytes of the given tensors (an eval split's identity)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


class StatsCache:
    """Cached arrays and JSON records of real-image statistics (`folder` None: off)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits: list[str] = []

    @staticmethod
    def key(kind: str, **parts: Any) -> str:
        blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"

    def _path(self, key: str, suffix: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}{suffix}"

    def _unreadable(self, path: Path, error: Exception) -> None:
        say_once(f"evaluation cache entry {path} is unreadable ({error}); recomputing it")

    def array(self, key: str) -> np.ndarray | None:
        path = self._path(key, ".npy")
        if path is None or not path.is_file():
            return None
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            self._unreadable(path, error)
            return None
        self.hits.append(str(path))
        return value

    def put_array(self, key: str, value: np.ndarray) -> None:
        path = self._path(key, ".npy")
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        atomic_write_bytes(path, buffer.getvalue())

    def record(self, key: str) -> dict[str, Any] | None:
        path = self._path(key, ".json")
        if path is None or not path.is_file():
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            self._unreadable(path, error)
            return None
        self.hits.append(str(path))
        return value

    def put_record(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key, ".json")
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(value, allow_nan=True).encode())
