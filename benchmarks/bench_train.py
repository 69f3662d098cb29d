"""Seconds per training iteration (G step + D step): dense against sparse SPADE, and --amp.

    python benchmarks/bench_train.py                 # every configuration, 5 timed rounds
    python benchmarks/bench_train.py --quick         # 2 timed rounds
    python benchmarks/bench_train.py --configs builtin,builtin128
    python benchmarks/bench_train.py --profile --configs ade20k   # where one iteration's time goes
    python benchmarks/bench_train.py --device cuda --configs ade20k,builtin128   # on a GPU

Each configuration runs in its own subprocess, which builds one trainer per variant
(`--spade_impl dense` fp32, `--spade_impl sparse` fp32, sparse with `--amp`) on the same
batch and times their iterations round-robin (one warm-up round first), so every ratio
compares iterations measured under the same conditions; the median and the minimum of the
rounds are reported, the ratio of the medians ("vs dense") and the median of each round's
ratio ("paired": steadier while the host's speed drifts). Variants whose losses are not
finite are flagged.

Configurations (the VGG loss off everywhere, as the issue's comparison with the official code):
- `ade20k`: label_nc 150 + dontcare, no instance, ngf/ndf 64, 256x256, batch 1, the default
  norms (spectralspadesyncbatch3x3, spectralinstance), fed with the real ADE20K annotations
  of ../shared/data/ade20k_sample resized to 256 (nearest).
- `ade20k_worst`: the same fed with random 2x2-pixel blocks of all 151 classes, where every
  pixel is near a class boundary (the worst case for the sparse path).
- `small`: the same at ngf/ndf 32, 128x128, batch 4, real ADE20K maps.
- `builtin`: the built-in model's setup: landscapes label maps (`spadegan.data.landscapes`),
  64x64, ngf/ndf 16, spectralspadesyncbatch1x1, --use_vae, batch 8.
- `builtin128`: the same at 128x128.
- `oasis128`: builtin128 with --netD oasis (3D noise, LabelMix, EMA 0.999), no VAE.

With `--device cuda` the variants also include dense with `--amp` (on CUDA `--spade_impl auto`
picks dense; this measures whether sparse should be picked there), and every timed
iteration ends with `torch.cuda.synchronize()`.

Prints a table, then one JSON line with the CPU (and GPU), torch and every measurement.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SPADEGAN_SHARED", os.path.join(HERE, "..", "..", "shared"))

CONFIGS = {
    "ade20k": dict(mode="ade20k", size=256, ngf=64, batch=1, maps="ade"),
    "ade20k_worst": dict(mode="ade20k", size=256, ngf=64, batch=1, maps="worst"),
    "small": dict(mode="ade20k", size=128, ngf=32, batch=4, maps="ade"),
    "builtin": dict(mode="landscapes", size=64, ngf=16, batch=8, maps="landscapes", vae=True, norm="1x1"),
    "builtin128": dict(mode="landscapes", size=128, ngf=16, batch=8, maps="landscapes", vae=True, norm="1x1"),
    "oasis128": dict(mode="landscapes", size=128, ngf=16, batch=8, maps="landscapes", norm="1x1", oasis=True),
}
VARIANTS = [("dense", False), ("sparse", False), ("sparse", True)]
CUDA_VARIANTS = VARIANTS + [("dense", True)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _label_maps(c: dict, n: int):
    """(n, 1, S, S) float label maps of the configuration's kind."""
    import numpy as np
    import torch
    from PIL import Image
    s = c["size"]
    if c["maps"] == "ade":
        files = sorted(glob.glob(os.path.join(SHARED, "data", "ade20k_sample", "annotations", "*.png")))
        if not files:
            raise SystemExit(f"no ADE20K annotations under {SHARED}/data/ade20k_sample (set SPADEGAN_SHARED)")
        maps = [np.array(Image.open(f).resize((s, s), Image.NEAREST)) for f in files]
        return torch.stack([torch.from_numpy(maps[i % len(maps)]).float()[None] for i in range(n)])
    if c["maps"] == "worst":
        g = torch.Generator().manual_seed(0)
        small = torch.randint(0, 151, (n, 1, s // 2, s // 2), generator=g).float()
        return torch.nn.functional.interpolate(small, size=(s, s), mode="nearest")
    from spadegan.data.landscapes import generate_scene
    return torch.stack([torch.from_numpy(generate_scene(i, size=s)[0]).float()[None] for i in range(n)])


def _argv(c: dict, impl: str, amp: bool, tmp: str, device: str = "cpu") -> list[str]:
    where = ["--gpu_ids", "-1"] if device == "cpu" else ["--gpu_ids", "0", "--device", device]
    argv = ["--name", f"{impl}{int(amp)}", "--checkpoints_dir", tmp, "--dataset_mode", c["mode"],
            "--ngf", str(c["ngf"]), "--ndf", str(c["ngf"]), "--crop_size", str(c["size"]),
            "--load_size", str(c["size"]), "--batchSize", str(c["batch"]), "--seed", "0", "--nThreads", "0",
            "--no_vgg_loss", *where, "--spade_impl", impl]
    if c.get("norm") == "1x1":
        argv += ["--norm_G", "spectralspadesyncbatch1x1"]
    if c.get("vae"):
        argv.append("--use_vae")
    if c.get("oasis"):
        argv += ["--netD", "oasis", "--ema_decay", "0.999"]
    return argv + (["--amp"] if amp else [])


def _build_runs(config: str, tmp: str, variants: list[tuple[str, bool]], device: str = "cpu") -> list[dict]:
    """One trainer per variant on the configuration's fixed batch, with that batch."""
    import torch
    from torch.utils.data import Dataset

    from spadegan.options import parse
    from spadegan.train.trainer import Trainer

    c = CONFIGS[config]
    labels = _label_maps(c, c["batch"])
    images = torch.rand(c["batch"], 3, c["size"], c["size"], generator=torch.Generator().manual_seed(1)) * 2 - 1

    class Batch(Dataset):
        def __len__(self) -> int:
            return c["batch"]

        def __getitem__(self, i: int) -> dict:
            return {"label": labels[i], "instance": torch.zeros(()), "image": images[i], "path": f"{i}.png"}

    runs = []
    for impl, amp in variants:
        t = Trainer(parse(_argv(c, impl, amp, tmp, device), train=True), dataset=Batch(), progress=False, log=False)
        runs.append({"impl": impl, "amp": amp, "trainer": t, "data": next(iter(t.loader)), "times": []})
    return runs


def _profile(config: str, rows: int = 20) -> None:
    """torch.profiler over one iteration of the sparse fp32 trainer (after a warm-up one):
    the operators by their own CPU time, with input shapes (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp:
        run = _build_runs(config, tmp, [("sparse", False)])[0]
        run["trainer"].train_one_step(0, run["data"])
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            run["trainer"].train_one_step(0, run["data"])
    print(f"{config}: sparse fp32, one iteration")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                             max_name_column_width=40, max_shapes_column_width=60))


def _worker(config: str, rounds: int, device: str = "cpu") -> dict:
    import torch

    from spadegan.device import dtype_name

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        runs = _build_runs(config, tmp, CUDA_VARIANTS if cuda else VARIANTS, device)
        for r in range(rounds + 1):  # round 0 is warm-up (allocator, oneDNN / cuDNN kernel selection)
            for run in runs:
                sync()
                t0 = time.perf_counter()
                run["trainer"].train_one_step(0, run["data"])
                sync()
                if r:
                    run["times"].append(time.perf_counter() - t0)
        rows = []
        for run in runs:
            t = run["trainer"]
            losses = {k: float(v.float().mean()) for k, v in {**t.g_losses, **t.d_losses}.items()}
            rows.append({"config": config, "impl": run["impl"], "amp": run["amp"],
                         "precision": dtype_name(t.amp_dtype),
                         "sec_per_iter": statistics.median(run["times"]), "sec_min": min(run["times"]),
                         "times": [round(x, 4) for x in run["times"]],
                         "rounds": len(run["times"]), "finite": all(math.isfinite(v) for v in losses.values())})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"config": config, "rows": rows, "peak_mb": round(peak_mb), "threads": torch.get_num_threads()}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(device)
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 timed rounds instead of 5")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per configuration")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: profile one sparse fp32 iteration of each configuration")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if (args.profile or args.worker) and args.threads > 0:  # the processes that run the trainers
        import torch
        torch.set_num_threads(args.threads)
    if args.profile:
        for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
            _profile(config)
        return 0
    if args.worker:
        print("RESULT " + json.dumps(_worker(args.worker, rounds, args.device)), flush=True)
        return 0

    results = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        print(f"running {config} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, "--rounds", str(rounds),
               "--threads", str(args.threads), "--device", args.device]
        r = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
            return 1
        results.append(json.loads(line[len("RESULT "):]))

    import torch
    cpu = cpu_name()
    gpu = results[0].get("gpu") if results else None
    print(f"\nCPU: {cpu} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
          f"{results[0]['threads'] if results else '?'} threads" + (f", GPU: {gpu}" if gpu else ""))
    print(f"{'config':<13} {'variant':<16} {'s/iter':>8} {'min':>8} {'vs dense':>9} {'paired':>7} {'finite':>7}")
    for res in results:
        dense = next(r for r in res["rows"] if r["impl"] == "dense")
        for r in res["rows"]:
            r["speedup_vs_dense"] = round(dense["sec_per_iter"] / r["sec_per_iter"], 3)
            # the host drifts: each round's ratio compares iterations timed one after the other
            r["paired_speedup"] = round(statistics.median(d / t for d, t in zip(dense["times"], r["times"])), 3)
            name = f"{r['impl']} {r['precision']}" + (" (--amp)" if r["amp"] else "")
            print(f"{r['config']:<13} {name:<16} {r['sec_per_iter']:>8.3f} {r['sec_min']:>8.3f} "
                  f"{r['speedup_vs_dense']:>8.2f}x {r['paired_speedup']:>6.2f}x {str(r['finite']):>7}")
    print(json.dumps({"bench": "train", "rounds": rounds, "cpu": cpu, "device": args.device, "gpu": gpu,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                      "machine": platform.machine(), "cpus": os.cpu_count(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
