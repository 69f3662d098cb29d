"""Seconds per training iteration (G step + D step), fp32 against --amp, and peak memory.

    python benchmarks/bench_train.py            # both configurations, fp32 and --amp
    python benchmarks/bench_train.py --quick    # fewer iterations

Configurations:
- `ade20k`: the official ADE20K setup: label_nc 150 + dontcare (151 one-hot channels, no
  instance maps), ngf 64, ndf 64, 256x256, batch 1, all default losses (hinge GAN, feature
  matching, VGG19 perceptual loss with *random* weights: the speed is the same), the default
  norms (spectralspadesyncbatch3x3 for G, spectralinstance for D).
- `small`: the same at ngf 32, 128x128, batch 4.

Each (configuration, precision) runs in its own subprocess, so the peak resident memory
(CPU) or peak allocated memory (CUDA) is that run's alone. One iteration is warm-up; the
median of the timed ones is reported. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
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

CONFIGS = {
    "ade20k": dict(label_nc=150, ngf=64, size=256, batch=1),
    "small": dict(label_nc=150, ngf=32, size=128, batch=4),
}


def _worker(config: str, amp: bool, iters: int, device: str, threads: int, force_bf16: bool = False) -> dict:
    import torch
    from torch.utils.data import Dataset

    from spadegan import networks
    from spadegan.options import parse
    from spadegan.train.trainer import Trainer

    if force_bf16:  # measure CPU bf16 even where the precision policy would use fp32
        torch.cpu._is_amx_tile_supported = lambda: True

    if threads > 0:
        torch.set_num_threads(threads)
    c = CONFIGS[config]

    class Blocks(Dataset):
        """Random blocky label maps (all 151 ids possible) and random photos."""

        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(i)
            s = c["size"]
            lab = torch.randint(0, c["label_nc"] + 1, (1, 1, s // 16, s // 16), generator=g).float()
            lab = torch.nn.functional.interpolate(lab, size=(s, s), mode="nearest")[0]
            img = torch.rand(3, s, s, generator=g) * 2 - 1
            return {"label": lab, "instance": torch.zeros(()), "image": img, "path": f"{i}.png"}

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--name", "bench", "--checkpoints_dir", tmp, "--dataset_mode", "ade20k",
                "--ngf", str(c["ngf"]), "--crop_size", str(c["size"]), "--load_size", str(c["size"]),
                "--batchSize", str(c["batch"]), "--seed", "0", "--nThreads", "0"]
        if device:
            argv += ["--device", device]
        if amp:
            argv.append("--amp")
        opt = parse(argv, train=True)
        vgg = networks.load_vgg19(None, required=False)  # random weights: same cost as ImageNet's
        t = Trainer(opt, dataset=Blocks(), vgg=vgg, progress=False, log=False)
        dev = t.device
        batches = [next(iter(t.loader)) for _ in range(2)]

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        times = []
        for i in range(iters + 1):  # the first is warm-up (allocator, oneDNN kernel selection)
            sync()
            t0 = time.perf_counter()
            t.train_one_step(i, batches[i % 2])
            sync()
            times.append(time.perf_counter() - t0)
        losses = {k: float(v.float().mean()) for k, v in {**t.g_losses, **t.d_losses}.items()}
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    timed = times[1:]
    return {"config": config, "amp": amp, "amp_dtype": str(t.amp_dtype).replace("torch.", "") if t.amp_dtype else None,
            "sec_per_iter": statistics.median(timed), "sec_min": min(timed), "iters": len(timed),
            "warmup_sec": times[0], "peak_mb": round(peak_mb, 1), "losses": losses,
            "finite": all(math.isfinite(v) for v in losses.values()),
            "device": str(dev), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 timed iterations instead of 5")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per run")
    ap.add_argument("--configs", default="ade20k,small", help="comma-separated: ade20k, small")
    ap.add_argument("--device", default="", help="cpu, cuda, cuda:N (default: cpu / the options' default)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--force-bf16", action="store_true",
                    help="use bf16 autocast on CPUs without bf16 units too (slow reference kernels)")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "AMP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    iters = args.iters or (2 if args.quick else 5)
    if args.worker:
        res = _worker(args.worker[0], args.worker[1] == "1", iters, args.device, args.threads, args.force_bf16)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    results = []
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        for amp in (False, True):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, "1" if amp else "0",
                   "--iters", str(iters), "--threads", str(args.threads)]
            if args.device:
                cmd += ["--device", args.device]
            if args.force_bf16:
                cmd.append("--force-bf16")
            print(f"running {config} {'amp' if amp else 'fp32'} ...", file=sys.stderr, flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if r.returncode != 0 or line is None:
                print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
                return 1
            results.append(json.loads(line[len("RESULT "):]))

    print(f"\n{'config':<8} {'precision':<10} {'s/iter':>8} {'min':>8} {'peak MB':>9} {'finite':>7}  losses")
    for r in results:
        prec = r["amp_dtype"] or ("fp32 (amp*)" if r["amp"] else "fp32")
        losses = " ".join(f"{k} {v:.3f}" for k, v in r["losses"].items())
        print(f"{r['config']:<8} {prec:<10} {r['sec_per_iter']:>8.3f} {r['sec_min']:>8.3f} {r['peak_mb']:>9.0f} "
              f"{str(r['finite']):>7}  {losses}")
    speedups = {}
    for config in configs:
        f = next(r for r in results if r["config"] == config and not r["amp"])
        a = next(r for r in results if r["config"] == config and r["amp"])
        speedups[config] = f["sec_per_iter"] / a["sec_per_iter"]
        print(f"{config}: --amp speed-up {speedups[config]:.2f}x")
    if any(r["amp"] and not r["amp_dtype"] for r in results):
        print("* --amp fell back to fp32: this CPU has no bf16 units (AVX512-BF16 / AMX); "
              "--force-bf16 measures the emulated path")
    import torch
    summary = {"bench": "train", "iters": iters, "results": results,
               "amp_speedup": {k: round(v, 3) for k, v in speedups.items()},
               "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "machine": platform.machine(), "cpus": os.cpu_count()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
