"""Reading and writing files: atomic writes and loading of weight files.

The bottom of the package (it imports only `errors` and third-party libraries), so every
other module writes and reads files the same way:

- `atomic_write_bytes`, `atomic_torch_save`: one file through a temp file in the same
  folder + fsync + rename, so readers never see half a file and a crash keeps the old one;
- `save_file_set`: several `torch.save` files replaced all together or not at all;
- `load_torch_file` / `read_state_dict`: torch files (weights, training states) read with
  `weights_only=True`, `.safetensors` weights with safetensors, onto the CPU, with a clear
  error naming the file; `key_differences`: how a state_dict differs from a network's (the
  strict loaders word their own errors from it); `write_safetensors` /
  `read_safetensors_metadata`: a .safetensors file with string metadata, and that metadata
  read back alone with a size bound;
- `read_limited`: a small file (options, JSON) read whole, refused when over a size bound;
- `load_options_pickle`: the official `opt.pkl` (a pickled argparse.Namespace) read by a
  restricted unpickler that refuses any other object *before* anything is created or
  called, so a checkpoint folder from a stranger cannot run code.
"""

from __future__ import annotations

import argparse
import contextlib
import copyreg
import hashlib
import io
import json
import os
import pickle
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .errors import SpadeganError, UnsafeFileError

#: Options files (opt.txt / opt.json / opt.pkl) are a few kB; anything larger is not one.
MAX_OPTIONS_BYTES = 4 * 2 ** 20
#: A .safetensors header (names, shapes, offsets, metadata) is a few hundred bytes per tensor.
MAX_SAFETENSORS_HEADER_BYTES = 16 * 2 ** 20


# ---- writing ---------------------------------------------------------------------------------
def _temp_beside(path: Path) -> tuple[int, str]:
    """A new, uniquely named temp file in `path`'s folder, opened for writing.

    Created with mode 0o666 so the system applies the umask as for any new file (mkstemp's
    owner-only 0o600 would be carried over to the user's file by the rename); O_EXCL with a
    random name makes it as safe as mkstemp.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write via a temp file in the same folder + fsync + rename.

    Readers never see half a file, and a crash mid-write keeps the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
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
            fd, tmp = _temp_beside(path)
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


def files_sha256(paths: Sequence[Path]) -> str:
    """One sha256 over the bytes of the given files, in order (cache keys, metrics.json, the
    encoder a style bank was built with)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SpadeganError(f"{what} {path} does not exist")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise SpadeganError(f"reading {path} needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise SpadeganError(f"cannot read {what} {path}: {e}") from None


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (copied to contiguous CPU tensors) as a .safetensors file, atomically.

    `metadata` values must be strings (the format's rule); read them with `read_safetensors_metadata`.
    """
    try:
        from safetensors.torch import save
    except ImportError:
        raise SpadeganError(f"writing {path} needs the safetensors package: pip install safetensors") from None
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise SpadeganError(f"safetensors metadata values must be strings; {bad[0]!r} is not")
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` (str -> str) of a .safetensors file, without reading any tensor.

    The header is an 8-byte little-endian length and that many bytes of JSON; headers over
    MAX_SAFETENSORS_HEADER_BYTES, truncated files, non-JSON headers and non-string metadata
    raise a SpadeganError naming the file. A file without metadata gives {}.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 <= size <= MAX_SAFETENSORS_HEADER_BYTES:
                raise ValueError("no safetensors header" if size < 0 else
                                 f"a header of {size} bytes (more than {MAX_SAFETENSORS_HEADER_BYTES})")
            raw = fh.read(size)
        if len(raw) != size:
            raise ValueError(f"the header is cut short ({len(raw)} of {size} bytes)")
        header = json.loads(raw)
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ValueError("its metadata is not a table of strings")
    except OSError as e:
        raise SpadeganError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
        raise SpadeganError(f"cannot read checkpoint {path}: {e}") from None
    return meta


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A state_dict file (official or ours, `.pth` or `.safetensors`) on the CPU.

    `.safetensors` files are read with the safetensors package (tensors only, by design),
    anything else with `load_torch_file`; unreadable files raise a SpadeganError naming the
    file. Also accepts `{"state_dict": ...}` wrappers and keys saved from a DataParallel wrapper.
    """
    path = Path(path)
    sd = _load_safetensors(path, what) if path.suffix == ".safetensors" else load_torch_file(path, what)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SpadeganError(f"{path} does not hold a state_dict")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


@dataclass(frozen=True)
class KeyDifferences:
    """How a state_dict differs from a network's: keys it lacks, keys the network does not
    have, values that are not tensors, and (key, file shape, network shape) where shapes differ.
    Lists follow the network's key order (`unexpected` and `not_tensors`: the file's). False
    when the two fit."""

    missing: list[str]
    unexpected: list[str]
    not_tensors: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.not_tensors or self.shapes)


def key_differences(own: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> KeyDifferences:
    """Compare a network's state_dict `own` with `given` (a file's); the loaders word the error."""
    return KeyDifferences(
        missing=[k for k in own if k not in given],
        unexpected=[k for k in given if k not in own],
        not_tensors=[k for k, v in given.items() if not isinstance(v, torch.Tensor)],
        shapes=[(k, tuple(given[k].shape), tuple(v.shape)) for k, v in own.items()
                if k in given and isinstance(given[k], torch.Tensor) and given[k].shape != v.shape])


def read_safetensors_json(path: str | os.PathLike, key: str, limit: int,
                          what: str = "the metadata") -> dict[str, Any] | None:
    """The JSON object stored under `key` in a .safetensors file's metadata; None when the key
    is absent; a SpadeganError "cannot read <what> in <path> (metadata <key>): ..." when it is
    over `limit` characters or not a JSON object."""
    text = read_safetensors_metadata(path).get(key)
    if text is None:
        return None
    try:
        if len(text) > limit:
            raise ValueError(f"{len(text)} characters, more than it ever takes")
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"a JSON {type(value).__name__}, not an object")
    except (ValueError, RecursionError) as e:
        raise SpadeganError(f"cannot read {what} in {path} (metadata {key!r}): {e}") from None
    return value


def read_limited(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a small file, or a SpadeganError when it is missing or over `limit` bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise SpadeganError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise SpadeganError(f"{what} {path} is larger than {limit // 2 ** 20} MB; it is not one "
                            f"(they are a few kB)")
    return data


# ---- the restricted unpickler for opt.pkl -----------------------------------------------------
# What an options pickle may reference. The official opt.pkl (protocol 2+) holds one global,
# argparse.Namespace, created by NEWOBJ and filled by BUILD with a dict of plain values;
# protocol 0/1 pickles of a Namespace go through copyreg._reconstructor(Namespace, object,
# None) instead (also under their Python 2 names).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("argparse", "Namespace"): argparse.Namespace,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
}
#: The only callables an options pickle may call (REDUCE), and the classes it may create.
_CALLABLE = (copyreg._reconstructor,)
_CLASSES = (argparse.Namespace, object)
_PLAIN = (str, int, float, bool, type(None))


class _OptionsUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so REDUCE can be checked
    """Unpickles an argparse.Namespace of plain values; refuses every other global or call."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def refuse(self, what: str) -> None:
        raise UnsafeFileError(
            f"refusing to read options file {self.path}: it {what}, which an options file "
            "(an argparse.Namespace of plain values) never holds; it may have been made to run code "
            "on your machine. Delete it (official checkpoint folders also hold the options as "
            "opt.txt) or get the checkpoint from a source you trust")

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            self.refuse(f"references {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        self.refuse(f"references a persistent id ({type(pid).__name__})")

    def _check_callable(self, func: Any, allowed: tuple) -> None:
        if not any(func is a for a in allowed):
            name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"
            self.refuse(f"calls {name}")

    def load_reduce(self) -> None:
        self._check_callable(self.stack[-2], _CALLABLE)
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_callable(self.stack[-2], _CLASSES)
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_callable(self.stack[-3], _CLASSES)
        super().load_newobj_ex()

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def _check_plain(value: Any, key: str, path: Path) -> None:
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, key, path)
    elif not isinstance(value, _PLAIN):
        raise UnsafeFileError(f"refusing to read options file {path}: option {key!r} holds a "
                              f"{type(value).__name__}, not a plain value")


def load_options_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The options in an `opt.pkl` (the official format: a pickled argparse.Namespace) as a dict.

    Read by a restricted unpickler: only argparse.Namespace (and, for protocol 0/1 pickles,
    `copyreg._reconstructor` and `object`) may be referenced, only `_reconstructor` called;
    anything else (e.g. `posix.system`, `builtins.exec`) raises UnsafeFileError naming the
    file and the refused object before it is imported or called. The values must be plain
    (str, int, float, bool, None, lists of them). Files over MAX_OPTIONS_BYTES are refused.
    """
    path = Path(path)
    data = read_limited(path, MAX_OPTIONS_BYTES, "options file")
    try:
        obj = _OptionsUnpickler(data, path).load()
    except SpadeganError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise SpadeganError(f"cannot read options file {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise SpadeganError(f"options file {path} holds a {type(obj).__name__}, not an argparse.Namespace")
    for key, value in obj.items():
        _check_plain(value, key, path)
    return dict(obj)
