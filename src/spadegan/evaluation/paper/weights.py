"""Released weight files -> modules: every key used, shapes checked, errors naming the file.

The references load their files with `load_state_dict`, some with `strict=False`; here every
key that affects the output is required and checked, and only the references' bookkeeping
entries (batch-norm counters, SyncBN's temporary statistics) may be absent or present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ...errors import SpadeganError
from ...fileio import key_differences, read_state_dict

__all__ = ["BN_COUNTER", "load_released", "check_files"]

#: Batch-norm's step counter: unused in eval mode, absent from files saved before PyTorch 0.4.
BN_COUNTER = ("num_batches_tracked",)

_SHOWN = 5  # keys named in an error message


def check_files(files: Sequence[str | Path], expected: Sequence[str], segmenter: str) -> list[Path]:
    """The given paths, checked against the released file names (count, existence)."""
    paths = [Path(f) for f in files]
    names = " + ".join(expected)
    if len(paths) != len(expected):
        raise SpadeganError(
            f"segmenter {segmenter} takes {len(expected)} weight file(s) ({names}), got {len(paths)}"
        )
    for path, name in zip(paths, expected):
        if not path.is_file():
            raise SpadeganError(
                f"segmenter weights {path} do not exist; {segmenter} expects the released file {name}"
            )
    return paths


def _keys(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def load_released(module: nn.Module, path: str | Path, expected_name: str,
                  ignore_suffixes: Sequence[str] = BN_COUNTER, strip_prefix: str = "") -> None:
    """Load the released file `path` into `module` (in place).

    Keys ending in one of `ignore_suffixes` are dropped from both sides; every other key of the
    module must be in the file with the same shape, and the file may hold nothing else.
    `strip_prefix` is removed from the file's keys first (e.g. DeepLab's `base.`), and only
    where every key carries it. Read with `weights_only=True` (`fileio.read_state_dict`).
    """
    path = Path(path)
    state = read_state_dict(path, f"segmenter weights ({expected_name})")
    if strip_prefix and state and all(key.startswith(strip_prefix) for key in state):
        state = {key[len(strip_prefix):]: value for key, value in state.items()}

    def used(key: str) -> bool:
        return not key.endswith(tuple(ignore_suffixes))

    state = {key: value for key, value in state.items() if used(key)}
    own = {key: value for key, value in module.state_dict().items() if used(key)}
    diff = key_differences(own, state)
    hint = f"; expected the released file {expected_name}"
    if diff.missing or diff.unexpected:
        parts = ([f"lacks {len(diff.missing)} key(s): {_keys(diff.missing)}"] if diff.missing else []) + \
                ([f"has {len(diff.unexpected)} unknown key(s): {_keys(diff.unexpected)}"] if diff.unexpected else [])
        raise SpadeganError(f"{path} {'; '.join(parts)}{hint}")
    wrong = {key: theirs for key, theirs, _ in diff.shapes} | {key: type(state[key]).__name__
                                                                  for key in diff.not_tensors}
    first = next((key for key in own if key in wrong), None)  # in the network's order
    if first is not None:
        raise SpadeganError(f"{path}: {first} has shape {wrong[first]}, expected {tuple(own[first].shape)}{hint}")
    module.load_state_dict(state, strict=False)
