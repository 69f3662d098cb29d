"""spadegan.device: the one device resolver and precision policy, with the CUDA and CPU
queries replaced (this machine needs no GPU, nor any particular CPU, to check them)."""

from __future__ import annotations

import platform
import subprocess
import sys
import warnings

import pytest
import torch

from spadegan import device as dev
from spadegan.errors import SpadeganError, SpadeganWarning


def fake_cuda(monkeypatch, count: int = 2, capability: tuple[int, int] = (8, 0)) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    # emulated bf16 counts as "supported" here: the policy must not ask it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def fake_cpu(monkeypatch, amx, avx512_bf16, capability: str = "AVX512") -> None:
    def probe(value):
        if isinstance(value, Exception):
            def fail():
                raise value
            return fail
        return lambda: value
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


# ---- precision policy ------------------------------------------------------------------------
def test_cuda_before_ampere_gets_fp16_with_a_grad_scaler(monkeypatch):
    fake_cuda(monkeypatch, capability=(7, 0))
    p = dev.precision_policy("cuda:0")
    assert p.name == "fp16" and p.needs_grad_scaler and p.autocast_dtype == torch.float16
    assert "7.0" in p.reason
    assert dev.autocast_dtype("cuda") == torch.float16 and dev.best_precision("cuda") == "fp16"
    hw = dev.describe_hardware("cuda:0")
    assert hw["device"] == "Fake GPU" and hw["capability"] == "7.0" and not hw["bf16"] and hw["fp16"]


@pytest.mark.parametrize("cc", [(8, 0), (8, 6), (9, 0)])
def test_cuda_ampere_and_later_get_bf16(monkeypatch, cc):
    fake_cuda(monkeypatch, capability=cc)
    p = dev.precision_policy(torch.device("cuda", 1))
    assert p.name == "bf16" and not p.needs_grad_scaler and p.autocast_dtype == torch.bfloat16
    assert dev.describe_hardware("cuda")["bf16"] is True


def test_cuda_capability_query_failing_gives_fp32(monkeypatch):
    fake_cuda(monkeypatch)

    def broken(d=None):
        raise RuntimeError("no driver")
    monkeypatch.setattr(torch.cuda, "get_device_capability", broken)
    p = dev.precision_policy("cuda")
    assert p.name == "fp32" and "cannot be queried" in p.reason


def test_dtype_names_for_messages_and_records():
    assert [dev.dtype_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bfloat16", "float16"]


def test_amx_cpu_gets_bf16(monkeypatch):
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    p = dev.precision_policy("cpu")
    assert p.name == "bf16" and "AMX" in p.reason and not p.needs_grad_scaler
    hw = dev.describe_hardware("cpu")
    assert hw["features"] == "AVX512 + AMX + AVX512-BF16" and hw["bf16"] and hw["precision"] == "bf16"


def test_avx512_bf16_without_amx_stays_fp32_and_says_why(monkeypatch):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=True)
    p = dev.precision_policy("cpu")
    assert p.name == "fp32" and p.autocast_dtype is None
    assert "AVX512-BF16 but no AMX" in p.reason and "slower than fp32" in p.reason
    assert dev.describe_hardware("cpu")["features"] == "AVX512 + AVX512-BF16"


def test_avx2_stays_fp32(monkeypatch):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False, capability="AVX2")
    p = dev.precision_policy("cpu")
    assert p.name == "fp32" and "AVX2" in p.reason and "emulated" in p.reason
    assert dev.best_precision("cpu") == "fp32" and dev.describe_hardware("cpu")["bf16"] is False


@pytest.mark.parametrize("failure", ["raises", "missing"])
def test_a_probe_that_cannot_answer_means_fp32_not_bf16(monkeypatch, failure):
    if failure == "raises":
        fake_cpu(monkeypatch, amx=RuntimeError("cpuid failed"), avx512_bf16=True)
    else:
        fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    with pytest.warns(SpadeganWarning, match="cannot tell whether this CPU has AMX"):
        p = dev.precision_policy("cpu")
    assert p.name == "fp32" and "cannot tell" in p.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        assert dev.precision_policy("cpu").name == "fp32"
    assert dev.describe_hardware("cpu")["amx"] is None


def test_synthesizer_auto_precision_follows_the_policy(monkeypatch):
    from spadegan import networks, options
    from spadegan.synthesize import Synthesizer

    opt = options.parse(["--gpu_ids", "-1", "--ngf", "8", "--crop_size", "64", "--load_size", "64",
                         "--dataset_mode", "landscapes"], train=False)

    def G():
        return networks.define_G(opt)
    fake_cpu(monkeypatch, amx=False, avx512_bf16=True)
    assert Synthesizer(G(), device="cpu").precision == "fp32"
    with pytest.warns(SpadeganWarning, match="--precision bf16 is likely slower than fp32 here"):
        assert Synthesizer(G(), device="cpu", precision="bf16").precision == "bf16"
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    assert Synthesizer(G(), device="cpu").precision == "bf16"


# ---- devices ---------------------------------------------------------------------------------
def test_explicit_device_wins(monkeypatch):
    no_cuda(monkeypatch)
    assert dev.resolve_device("cpu", gpu_ids="0,1") == torch.device("cpu")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(SpadeganError, match="no CUDA GPU is available; use --device cpu"):
        dev.resolve_device("cuda")
    with pytest.raises(SpadeganError, match="not a device"):
        dev.resolve_device("gpu0")
    fake_cuda(monkeypatch, count=2)
    assert dev.resolve_device("cuda:1", gpu_ids="-1") == torch.device("cuda", 1)
    with pytest.raises(SpadeganError, match="GPU 3, but this machine has 2"):
        dev.resolve_device("cuda:3")


def test_gpu_ids_without_cuda_fall_back_to_the_cpu_saying_so_once(monkeypatch):
    no_cuda(monkeypatch)
    assert dev.resolve_device(None, gpu_ids="-1") == torch.device("cpu")
    with pytest.warns(SpadeganWarning, match="--gpu_ids 0: no CUDA GPU is available, running on the CPU"):
        assert dev.resolve_device(None, gpu_ids="0") == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dev.resolve_device("", gpu_ids="0") == torch.device("cpu")
    with pytest.raises(SpadeganError, match="--gpu_ids 'a,b'"):
        dev.resolve_device(None, gpu_ids="a,b")


def test_several_gpu_ids_use_the_first_saying_so_once(monkeypatch):
    fake_cuda(monkeypatch, count=4)
    with pytest.warns(SpadeganWarning, match="--gpu_ids 1,2: this process runs on cuda:1 only"):
        assert dev.resolve_device(None, gpu_ids="1,2") == torch.device("cuda", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dev.resolve_device(None, gpu_ids=[1, 2]) == torch.device("cuda", 1)
        assert dev.resolve_device(None, gpu_ids="3") == torch.device("cuda", 3)
    with pytest.raises(SpadeganError, match="GPU 5"):
        dev.resolve_device(None, gpu_ids="5")


def test_test_and_synthesize_with_several_gpu_ids_use_the_first_saying_so_once(monkeypatch):
    from spadegan.options import parse
    from spadegan.synthesize.cli import _flag_device
    fake_cuda(monkeypatch, count=2)
    opt = parse(["--gpu_ids", "1,0", "--batchSize", "2"], train=False)  # `spadegan test`'s options
    with pytest.warns(SpadeganWarning, match="--gpu_ids 1,0: this process runs on cuda:1 only") as seen:
        assert opt.torch_device == torch.device("cuda", 1)
        assert _flag_device(None, ["--gpu_ids", "1,0"], opt) == torch.device("cuda", 1)  # synthesize
    assert len(seen) == 1
    # synthesize: --device wins; without --gpu_ids on its command line the default device rule
    assert _flag_device("cpu", ["--gpu_ids", "1,0"], opt) == "cpu"
    assert _flag_device(None, ["--ngf", "8"], opt) is None


def test_nothing_given_means_cuda_if_there_is_one(monkeypatch):
    no_cuda(monkeypatch)
    assert dev.resolve_device() == torch.device("cpu") == dev.resolve_device("auto")
    fake_cuda(monkeypatch)
    assert dev.resolve_device().type == "cuda"


def test_options_use_the_same_rules(monkeypatch):
    from spadegan.options import parse
    no_cuda(monkeypatch)
    assert parse(["--gpu_ids", "-1"]).torch_device == torch.device("cpu")
    assert parse(["--device", "cpu", "--gpu_ids", "0"]).torch_device == torch.device("cpu")
    fake_cuda(monkeypatch, count=2)
    assert parse(["--gpu_ids", "1"]).torch_device == torch.device("cuda", 1)


# ---- resuming on another machine -----------------------------------------------------------------
def test_cuda_rng_state_that_cannot_be_restored_warns(monkeypatch):
    from spadegan.train.state import rng_state, set_rng_state

    st = rng_state()
    st["cuda"] = [torch.zeros(8, dtype=torch.uint8)] * 2
    fake_cuda(monkeypatch, count=1)

    def set_all(states):
        raise RuntimeError("invalid device ordinal")
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    with pytest.warns(SpadeganWarning, match="resume is no longer exact"):
        set_rng_state(st)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: None)
    with pytest.warns(SpadeganWarning, match="saved for 2 GPU.*has 1"):
        set_rng_state(st)


# ---- CPU memory ---------------------------------------------------------------------------------
# glibc's malloc statistics (mallinfo2) from a subprocess script
_MALLINFO = """
import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
"""

_MMAPPED_AFTER_FREE = _MALLINFO + """
import sys, torch
from spadegan.device import keep_freed_cpu_memory
applied = keep_freed_cpu_memory() if sys.argv[1] == "keep" else None
big = torch.empty(64 << 18)  # 64 MB, above glibc's default (and largest adaptive) mmap threshold
mapped = libc.mallinfo2().hblkhd
del big
print(applied, mapped >= 64 << 20, libc.mallinfo2().fordblks >= 60 << 20)  # kept, free, in the heap
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_cpu_memory_serves_large_tensors_from_the_reused_heap():
    """With glibc's defaults a 64 MB tensor is a fresh mapping (its pages fault in on every
    allocation); after keep_freed_cpu_memory it comes from the heap, which keeps it when freed."""
    def run(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", _MMAPPED_AFTER_FREE, mode], capture_output=True,
                              text=True, check=True).stdout.split()
    assert run("default") == ["None", "True", "False"]
    assert run("keep") == ["True", "False", "True"]


_SCOPED = _MALLINFO + """
import torch
from spadegan.device import keeping_freed_cpu_memory
def mapped():  # whether a 64 MB tensor is a fresh mapping (glibc's defaults) rather than heap
    big = torch.empty(64 << 18)
    return libc.mallinfo2().hblkhd >= 64 << 20
with keeping_freed_cpu_memory() as kept:
    inside = mapped()
print(kept, inside, mapped())
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keeping_freed_cpu_memory_sets_glibc_defaults_again_on_the_way_out():
    """What a training run uses: inside the block a 64 MB tensor comes from the heap, after it
    glibc maps it afresh again, as with its defaults."""
    out = subprocess.run([sys.executable, "-c", _SCOPED], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "True"]
