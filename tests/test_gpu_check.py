"""scripts/gpu_check.py: without CUDA it says so and exits 0; its --cpu dry run passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, shared_dir

SCRIPT = REPO / "scripts" / "gpu_check.py"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "SPADEGAN_SHARED": str(shared_dir()), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=full,
                          timeout=150)


def test_without_cuda_it_says_so_and_exits_0():
    r = _run(CUDA_VISIBLE_DEVICES="")  # no GPU visible, whatever the machine has
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no CUDA here" in r.stdout and "--cpu for a dry run" in r.stdout
    report = json.loads(r.stdout.strip().splitlines()[-1])["gpu_check"]
    assert report["cuda"] is False and report["checks"] == []


def test_cpu_dry_run_of_every_check_on_the_smallest_settings():
    r = _run("--cpu", "--small", CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    report = json.loads(r.stdout.strip().splitlines()[-1])["gpu_check"]
    assert report["ok"] is True and report["device"] == "cpu"
    names = [c["check"] for c in report["checks"]]
    parity = (("parity G eval", "parity G train", "parity D fake", "parity D real", "parity E (seeded)")
              if (shared_dir() / "fixtures" / "official_parity" / "ade_small").is_dir() else ("parity",))
    for want in (*parity, "training fp32", "training --amp", "engine fp32", "engine fp16", "engine bf16", "paint backend",
                 "launch --gpu_ids 0,1"):
        assert want in names, want
    assert all(c["status"] == "ok" for c in report["checks"] if c["check"].startswith(("training", "engine", "paint",
                                                                                        "launch"))), report
    # the table comes before the JSON line, one row per check
    table = r.stdout.split("\n{")[0]
    assert all(n in table for n in names)
