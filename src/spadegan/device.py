"""Where spadegan runs and in which precision: the one policy for train, test, synthesize, eval
and paint.

Devices (`resolve_device`):

1. An explicit device (`--device cpu|cuda|cuda:N`, or a torch.device) wins. Asking for CUDA
   where there is none, or for a GPU index the machine does not have, is a SpadeganError.
2. Otherwise the official `--gpu_ids`: `-1` (or nothing) is the CPU; ids without CUDA fall
   back to the CPU, saying so once; several ids run this process on the first one, saying
   so once (`spadegan train` instead starts one process per GPU: `train/launch.py`).
3. With neither, CUDA when there is a GPU, else the CPU.

Reduced precision (`precision_policy`), chosen where it is known to be faster than fp32:

- CUDA, compute capability >= 8.0 (Ampere and later): bf16;
- CUDA, compute capability < 8.0: fp16, with a GradScaler when training (bf16 is only
  emulated there; `torch.cuda.is_bf16_supported()` counts emulation, so it is not used);
- CPUs with AMX: bf16 (AMX tiles multiply bf16 natively);
- every other CPU: fp32. With AVX512-BF16 but no AMX, bf16 convolutions were measured slower
  than fp32; on AVX2 they are emulated, some 50x slower (benchmarks/README.md).

A probe that cannot answer (a private torch helper missing or failing) counts as "not
supported", never as supported, and says so once. `describe_hardware` reports the same
facts for messages and benchmarks.

CPU memory: `keeping_freed_cpu_memory` (a training run) sets glibc's malloc to keep freed
blocks for reuse and sets glibc's defaults again when the run ends; `keep_freed_cpu_memory`
does it for the rest of the process (the benchmarks).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .errors import SpadeganError, SpadeganWarning

#: Precision names and their compute dtypes.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_SAID: set[str] = set()  # messages already given in this process


def say_once(message: str) -> None:
    """Warn (SpadeganWarning) the first time this process meets `message`, never again."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, SpadeganWarning, stacklevel=3)


# ---- CPU memory --------------------------------------------------------------------------------
#: glibc mallopt parameters, what spadegan sets them to (see keep_freed_cpu_memory) and glibc's
#: documented defaults (mallopt(3)), which keeping_freed_cpu_memory sets again on its way out
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 1 << 30, 2**31 - 1
_KEEP = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
_GLIBC_DEFAULTS = ((_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024))
#: who holds spadegan's malloc settings: the whole process (keep_freed_cpu_memory) and/or the
#: `with keeping_freed_cpu_memory()` blocks now open
_MALLOC_KEPT = {"process": False, "blocks": 0}


def _mallopt(settings: Sequence[tuple[int, int]]) -> bool:
    """glibc's mallopt(param, value) for each pair; whether all applied (False off glibc). With
    glibc's defaults it also hands the kept free memory back (malloc_trim), as they would have."""
    import ctypes
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    applied = all([bool(libc.mallopt(param, ctypes.c_int(value))) for param, value in settings])
    if settings == _GLIBC_DEFAULTS:
        libc.malloc_trim(ctypes.c_size_t(0))
    return applied


def keep_freed_cpu_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the system,
    for the rest of the process (the benchmarks; training uses `keeping_freed_cpu_memory`,
    which undoes it when the run ends).

    A training step frees and reallocates the same large tensors every iteration. By default
    glibc serves blocks above its mmap threshold (at most 32 MB) with fresh mappings, and
    returns the top of the heap past its trim threshold, so those tensors' pages fault in and
    are zeroed by the kernel on every first touch, a cost several times that of filling them.
    Blocks up to 1 GB then come from the heap and are reused; the process keeps the memory of
    its largest step, as PyTorch's CUDA caching allocator does. Returns whether it was applied
    (Linux with glibc; elsewhere nothing changes). Calling it again is harmless.
    """
    applied = _mallopt(_KEEP)
    _MALLOC_KEPT["process"] = _MALLOC_KEPT["process"] or applied
    return applied


def cpu_memory_kept() -> bool:
    """Whether spadegan's malloc settings (`keep_freed_cpu_memory`) are in force now."""
    return bool(_MALLOC_KEPT["process"] or _MALLOC_KEPT["blocks"])


@contextlib.contextmanager
def keeping_freed_cpu_memory(enabled: bool = True) -> Iterator[bool]:
    """`keep_freed_cpu_memory` for the length of a `with` block (a training run), then glibc's
    settings again; yields whether the settings are in force inside.

    mallopt has no getter, so the way out sets glibc's documented defaults (mmap and trim
    thresholds of 128 KiB), not values read before, and hands the freed memory kept so far back
    to the system (malloc_trim); glibc's adaptive raising of the mmap
    threshold, which any mallopt call turns off for good, stays off. Inside another such block,
    or after a process-wide `keep_freed_cpu_memory()`, nothing changes on the way in or out.
    `enabled=False` (e.g. training on a GPU) changes nothing and yields False.
    """
    if not enabled:
        yield False
        return
    outer = cpu_memory_kept()
    applied = outer or _mallopt(_KEEP)
    _MALLOC_KEPT["blocks"] += int(applied)
    try:
        yield applied
    finally:
        _MALLOC_KEPT["blocks"] -= int(applied)
        if not outer:  # also after a partial failure: nothing of ours stays set
            _mallopt(_GLIBC_DEFAULTS)


# ---- devices -----------------------------------------------------------------------------------
def parse_gpu_ids(gpu_ids: str | Sequence[int] | None) -> list[int]:
    """The GPU numbers of a --gpu_ids value ("0,2" -> [0, 2]; "-1" or None -> [])."""
    if gpu_ids is None:
        return []
    if isinstance(gpu_ids, str):
        try:
            ids = [int(s) for s in gpu_ids.split(",") if s.strip() != ""]
        except ValueError:
            raise SpadeganError(f"--gpu_ids {gpu_ids!r}: use comma-separated GPU numbers, or -1 for the CPU") from None
    else:
        ids = [int(i) for i in gpu_ids]
    return [i for i in ids if i >= 0]


def _check_cuda_index(dev: torch.device, flag: str) -> None:
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise SpadeganError(f"{flag} asks for GPU {dev.index}, but this machine has {count} CUDA GPU(s) "
                            f"(0..{count - 1})")


def resolve_device(device: str | torch.device | None = None,
                   gpu_ids: str | Sequence[int] | None = None) -> torch.device:
    """The device to run on, by the rules in the module docstring.

    `device`: `--device` (None, "" or "auto": not given). `gpu_ids`: the official
    `--gpu_ids` ("0", "0,1", "-1" or a list of ints; None: not given).
    """
    if isinstance(device, torch.device) or device not in (None, "", "auto"):
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise SpadeganError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise SpadeganError(f"--device {device} asked for CUDA, but no CUDA GPU is available; "
                                    "use --device cpu")
            _check_cuda_index(dev, f"--device {device}")
        return dev
    if gpu_ids is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ids = parse_gpu_ids(gpu_ids)
    if not ids:
        return torch.device("cpu")
    shown = ",".join(str(i) for i in ids)
    if not torch.cuda.is_available():
        say_once(f"--gpu_ids {shown}: no CUDA GPU is available, running on the CPU "
                 "(pass --gpu_ids -1 to say so)")
        return torch.device("cpu")
    dev = torch.device("cuda", ids[0])
    _check_cuda_index(dev, f"--gpu_ids {shown}")
    if len(ids) > 1:
        say_once(f"--gpu_ids {shown}: this process runs on cuda:{ids[0]} only (`spadegan train` is the "
                 "command that uses several GPUs, one process per GPU)")
    return dev


# ---- hardware probes ---------------------------------------------------------------------------
def _cpu_probe(helper: str) -> bool | None:
    """`torch.cpu.<helper>()`, or None when torch cannot answer (missing or failing helper)."""
    try:
        return bool(getattr(torch.cpu, helper)())
    except Exception:  # private helpers: absent in some torch versions, may fail on odd CPUs
        return None


def cpu_features() -> dict[str, object]:
    """torch's CPU capability string and whether AMX / AVX512-BF16 are there (None: unknown)."""
    try:
        cap = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        cap = "unknown"
    return {"capability": cap, "amx": _cpu_probe("_is_amx_tile_supported"),
            "avx512_bf16": _cpu_probe("_is_avx512_bf16_supported")}


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device, None if it cannot be queried."""
    try:
        major, minor = torch.cuda.get_device_capability(device)
        return int(major), int(minor)
    except Exception:
        return None


# ---- precision -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """A precision choice and why: `name` in PRECISIONS, `reason` one sentence for messages."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.name]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for torch.autocast, None for fp32 (no autocast)."""
        return None if self.name == "fp32" else self.dtype

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 training needs loss scaling against gradients underflowing to zero."""
        return self.name == "fp16"


def _cpu_policy() -> Precision:
    f = cpu_features()
    cap = f["capability"]
    if f["amx"]:
        return Precision("bf16", f"this CPU ({cap}) has AMX, which computes bf16 natively")
    if f["amx"] is None:
        say_once("cannot tell whether this CPU has AMX (torch.cpu._is_amx_tile_supported is missing or "
                 "failed): assuming it has not, so reduced precision stays off")
        return Precision("fp32", f"this CPU ({cap}) may lack AMX (torch cannot tell); bf16 is only faster "
                                 "than fp32 with AMX")
    if f["avx512_bf16"]:
        return Precision("fp32", f"this CPU ({cap}) has AVX512-BF16 but no AMX, where bf16 convolutions "
                                 "were measured slower than fp32")
    return Precision("fp32", f"this CPU ({cap}) has no bf16 units (AMX), so bf16 would be emulated, "
                             "some 50x slower than fp32")


def _cuda_policy(device: torch.device) -> Precision:
    cc = cuda_capability(device)
    if cc is None:
        return Precision("fp32", f"the compute capability of {device} cannot be queried")
    shown = f"{cc[0]}.{cc[1]}"
    if cc >= (8, 0):
        return Precision("bf16", f"{device} has compute capability {shown} (>= 8.0), which runs bf16 natively")
    return Precision("fp16", f"{device} has compute capability {shown} (< 8.0): bf16 is emulated there, "
                             "fp16 is native (training scales the loss)")


def precision_policy(device: str | torch.device = "cpu") -> Precision:
    """The fastest precision known to be safe and faster than fp32 on `device`, and why."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_policy(device)
    if device.type == "cpu":
        return _cpu_policy()
    return Precision("fp32", f"no reduced-precision policy for {device.type} devices")


def best_precision(device: str | torch.device = "cpu") -> str:
    """`precision_policy(device).name`: "bf16", "fp16" or "fp32" (what precision="auto" means)."""
    return precision_policy(device).name


def dtype_name(dtype: torch.dtype | None) -> str:
    """'bfloat16', 'float16', ... for messages and records; 'fp32' for None (no autocast)."""
    return "fp32" if dtype is None else str(dtype).replace("torch.", "")


def autocast_dtype(device: str | torch.device = "cpu") -> torch.dtype | None:
    """The torch.autocast dtype for `--amp` on `device`, None where training stays fp32."""
    return precision_policy(device).autocast_dtype


def describe_hardware(device: str | torch.device = "cpu") -> dict[str, object]:
    """What the CPU/GPU offers for reduced precision, for messages and the benchmarks.

    CPU: `capability` (torch's, e.g. AVX2 / AVX512), `amx`, `avx512_bf16`, `features` (one
    string, e.g. "AVX512 + AMX + AVX512-BF16"), `threads`. CUDA: `device` (the GPU's name),
    `capability` ("8.0"). Both: `bf16` / `fp16` (whether the policy would use them there),
    `precision` and `reason` (the policy's choice).
    """
    device = torch.device(device)
    policy = precision_policy(device)
    if device.type == "cuda":
        cc = cuda_capability(device)
        try:
            name = torch.cuda.get_device_name(device)
        except Exception:
            name = str(device)
        info: dict[str, object] = {"device": name, "capability": None if cc is None else f"{cc[0]}.{cc[1]}",
                                   "bf16": cc is not None and cc >= (8, 0), "fp16": cc is not None}
    else:
        f = cpu_features()
        extra = [n for n, k in (("AMX", "amx"), ("AVX512-BF16", "avx512_bf16")) if f[k]]
        info = {"device": "cpu", **f, "features": " + ".join([str(f["capability"])] + extra),
                "bf16": policy.name == "bf16", "fp16": False, "threads": torch.get_num_threads()}
    info.update(precision=policy.name, reason=policy.reason)
    return info
