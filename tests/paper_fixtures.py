"""Released-format weight files rebuilt from the fixtures' fill rule (../shared/fixtures/*/spec.json).

The papers' segmenter and FID fixtures store no weights: each spec.json lists the released
file(s) with every key, shape and dtype, and a rule rebuilds the values from the key names.
`write_released(fixture_dir, out_dir)` writes the files as users download them (plain
state_dicts saved with torch.save) so tests load them through the public loaders.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64,
           "float16": torch.float16, "int32": torch.int32}


def fill_tensor(key: str, shape: list[int], dtype: str, seed: int, gain: float) -> torch.Tensor:
    """The fixtures' fill rule for one entry (see any of their README.md)."""
    torch_dtype = _DTYPES[dtype.removeprefix("torch.")]  # the FID spec writes "torch.float32"
    if not torch_dtype.is_floating_point:
        return torch.zeros(shape, dtype=torch_dtype)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) + seed)
    if len(shape) >= 2:
        numel = math.prod(shape)
        value = torch.randn(shape, generator=g) * gain / math.sqrt(numel / shape[0])
    elif key.endswith("running_var"):
        value = 0.5 + torch.rand(shape, generator=g)
    elif len(shape) == 1 and key.endswith(".weight"):
        value = 1 + 0.1 * torch.randn(shape, generator=g)
    else:
        value = 0.1 * torch.randn(shape, generator=g)
    return value.to(torch_dtype)


def fill_state_dicts(spec: dict, exceptions: dict[str, Callable[[list[int]], torch.Tensor]] | None = None,
                     drop_suffixes: tuple[str, ...] = ()) -> dict[str, dict[str, torch.Tensor]]:
    """{file name: state_dict} for every file in spec["files"], in the listed key order."""
    exceptions = exceptions or {}
    seed, gain = int(spec.get("seed", 0)), float(spec.get("gain", 1.0))
    files = {}
    for name, entries in spec["files"].items():
        state = {}
        for key, shape, dtype in entries:
            if drop_suffixes and key.endswith(drop_suffixes):
                continue
            state[key] = exceptions[key](shape) if key in exceptions else fill_tensor(key, shape, dtype, seed, gain)
        files[name] = state
    return files


def write_released(fixture_dir: Path, out_dir: Path,
                   exceptions: dict[str, Callable[[list[int]], torch.Tensor]] | None = None,
                   drop_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Write the fixture's released file(s) into out_dir; their paths in spec order."""
    spec = json.loads((fixture_dir / "spec.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, state in fill_state_dicts(spec, exceptions, drop_suffixes).items():
        path = out_dir / name
        torch.save(state, path)
        paths.append(path)
    return paths
