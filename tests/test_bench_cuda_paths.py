"""The GPU run's benchmark paths (scripts/gpu_run.sh), run on the CPU with the CUDA queries replaced."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _import(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def test_bench_synthesis_cuda_table(monkeypatch, capsys):
    bench = _import("bench_synthesis")
    synced = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    args = types.SimpleNamespace(device="cpu", quick=True, noise_labels=False, reps=1, configs=["ade20k"],
                                 batches=[1], json=True)
    assert bench.main_cuda(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    variants = {r["variant"]: r for r in result["results"]}
    assert set(variants) == {"faithful_fp32", "engine_fp32", "engine_fp16", "engine_bf16"}
    assert variants["engine_fp32"]["max_abs_err"] < 1e-3  # the engine computes the network's function
    assert len(synced) == 2 * 4  # every timed call is bracketed by synchronisations
    assert result["device"] == "Test GPU"


def test_bench_train_cuda_flags():
    bench = _import("bench_train")
    c = bench.CONFIGS["builtin"]
    cuda = bench._argv(c, "sparse", True, "/tmp/x", "cuda")
    assert cuda[cuda.index("--device") + 1] == "cuda" and "--amp" in cuda and "-1" not in cuda
    assert "--device" not in bench._argv(c, "dense", False, "/tmp/x")
    assert ("dense", True) in bench.CUDA_VARIANTS and ("dense", True) not in bench.VARIANTS
