"""Synthesis speed: the faithful SPADE generator against the engine (fp32, bf16), one run.

    python benchmarks/bench_synthesis.py [--configs ade20k coco cityscapes] [--batches 1 4]
                                         [--reps 3] [--json] [--trained CHECKPOINT]

For each configuration (ADE20K: 150 classes + dontcare, no instance, ngf 64, 256x256;
COCO-Stuff: 182 + dontcare + instance edges, 256x256; Cityscapes: 35 + instance edges,
512x256, num_upsampling_layers more) it builds a generator with unit-scale random weights
(BatchNorm statistics calibrated on the benchmark's label maps and the last conv scaled so
the output is not saturated, as a trained model's is not), then times, interleaved
repetition by repetition, the faithful network in eval mode (fp32, NCHW, no_grad) and the
engine in fp32 and bf16 (inference_mode). Label maps are real ones from ../shared
(ADE20K / COCO-Stuff sample annotations; Cityscapes-like maps are the COCO maps with
ids mod 35) or procedural landscapes when the shared data is absent: the engine's
per-class shortcut depends on how much of a map lies near a class boundary, so random
noise maps would be its worst case (`--noise_labels` measures that).

Printed: ms/image (median), images/s, peak RSS of a fresh process running only that
variant, speed-up against the faithful network, max abs error against the faithful
output (fp32) and PSNR against the engine's fp32 output (bf16), and the achieved GFLOP/s
counting the faithful network's FLOPs, next to a large fp32 and bf16 matmul measured in
the same run. With `--json` the last line is one JSON object {"results": [...], ...}.
`--baseline_src DIR` instead times this tree's fp32 engine against the engine of another
source tree (e.g. `git worktree add /tmp/before HEAD`, DIR /tmp/before/src), run in a
worker process on the same weights and maps, interleaved repetition by repetition, and
prints both, their ratio (median over repetitions of baseline / this) and max |difference|.
On a CPU without native bf16 (no AVX512-BF16/AMX) bf16 is emulated and very slow: it is
then run once, at batch 1 only, unless `--bf16_all`.
`--device cuda[:N]` times the network (fp32, TF32 off) against the engine in fp32, fp16 and
bf16 on a GPU instead (synchronised, interleaved; speed-up, max |error| and PSNR against the
network), for `scripts/gpu_run.sh`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
# a --baseline_src worker imports spadegan from the other tree (see compare_baseline)
_SRC = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--_src=")), str(REPO / "src"))
sys.path.insert(0, _SRC)

from spadegan import networks, options  # noqa: E402
from spadegan.data.semantics import to_semantics  # noqa: E402
from spadegan.device import describe_hardware  # noqa: E402
from spadegan.engine import SynthesisEngine, count_flops  # noqa: E402

CONFIGS = {
    "ade20k": ["--dataset_mode", "ade20k"],
    "coco": ["--dataset_mode", "coco"],
    "cityscapes": ["--dataset_mode", "cityscapes"],
}
QUICK = ["--ngf", "16", "--crop_size", "64", "--load_size", "64"]


def shared_dir() -> Path:
    return Path(os.environ.get("SPADEGAN_SHARED", REPO.parent / "shared"))


def make_options(config: str, quick: bool) -> options.Options:
    quick_args = QUICK if config != "cityscapes" else QUICK[:2] + ["--crop_size", "128", "--load_size", "128"]
    return options.parse(CONFIGS[config] + ["--gpu_ids", "-1"] + (quick_args if quick else []), train=False)


# ---- inputs --------------------------------------------------------------------------------
def _resize(a: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    t = torch.from_numpy(a.astype(np.int64))[None, None].double()
    return F.interpolate(t, size=hw, mode="nearest")[0, 0].long()


def label_maps(config: str, opt, batch: int, noise: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(B,H,W) ids, (B,H,W) instance ids or None, and where they came from."""
    from PIL import Image

    hw = (round(opt.crop_size / opt.aspect_ratio), opt.crop_size)
    if noise:
        g = torch.Generator().manual_seed(seed)
        lab = torch.randint(0, opt.label_channels, (batch,) + hw, generator=g)
        return lab, (lab.clone() if not opt.no_instance else None), "uniform noise"
    root = shared_dir() / "data"
    labs, insts, src = [], [], ""
    if config == "ade20k" and (root / "ade20k_sample").is_dir():
        files = sorted((root / "ade20k_sample" / "annotations").glob("*.png"))
        labs = [np.array(Image.open(f)) for f in files]
        insts = [None] * len(labs)
        src = "ADE20K sample annotations"
    elif config in ("coco", "cityscapes") and (root / "coco_stuff_sample").is_dir():
        files = sorted((root / "coco_stuff_sample" / "val_label").glob("*.png"))
        labs = [np.array(Image.open(f)) for f in files]
        insts = [np.array(Image.open(root / "coco_stuff_sample" / "val_inst" / f.name)) for f in files]
        src = "COCO-Stuff sample annotations" + (" (ids mod 35)" if config == "cityscapes" else "")
    if not labs:
        from spadegan.data.landscapes import generate_scene
        labs = [generate_scene(seed + i, size=hw[0], width=hw[1])[0] for i in range(batch)]
        insts = labs
        src = "procedural landscapes (shared data not found)"
    out_l, out_i = [], []
    for i in range(batch):
        k = i % len(labs)
        lab, inst = labs[k], insts[k]
        if i >= len(labs):  # more images than maps: use mirrored copies
            lab = lab[:, ::-1]
            inst = None if inst is None else inst[:, ::-1]
        lab = lab.astype(np.int64)
        if opt.contain_dontcare_label:
            lab = np.where(lab == 255, opt.label_nc, lab)
        lab = lab % opt.label_channels
        out_l.append(_resize(lab, hw))
        out_i.append(_resize(inst if inst is not None else lab, hw))
    inst_t = None if opt.no_instance else torch.stack(out_i).float()
    return torch.stack(out_l), inst_t, src


# ---- weights -------------------------------------------------------------------------------
def unit_scale_generator(opt, label: torch.Tensor, inst: torch.Tensor | None, seed: int = 1):
    """A generator with unit-scale random weights whose output is in tanh's useful range."""
    G = networks.define_G(opt, init=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("weight_u", "weight_v")):
                t.copy_(F.normalize(torch.randn(t.shape, generator=g), dim=0))
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
        sem = to_semantics(label[:1, None], None if inst is None else inst[:1, None], opt)
        bns = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:  # running statistics = the statistics of these maps (one train-mode pass)
            m.momentum = None
            m.reset_running_stats()
        if bns:
            G.train()
            G(sem)
        G.eval()
        seen = {}
        hook = G.conv_img.register_forward_hook(lambda m, i, o: seen.setdefault("o", o))
        G(sem)
        hook.remove()
        G.conv_img.weight.mul_(0.8 / seen["o"].std())
        G.conv_img.bias.zero_()
    return G


# ---- measurements ----------------------------------------------------------------------------
def matmul_gflops(dtype: torch.dtype, budget_s: float = 3.0) -> tuple[float, int]:
    """GFLOP/s of the largest square matmul (256..4096) that fits the time budget."""
    n, best = 256, (0.0, 0)
    while n <= 4096:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        t0 = time.perf_counter()
        a @ b
        first = time.perf_counter() - t0
        reps = max(1, min(5, int(budget_s / 3 / max(first, 1e-6))))
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        best = max(best, (2 * n ** 3 / min(ts) / 1e9, n))
        if first * 8 > budget_s:
            break
        n *= 2
    return best


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((((a.float() - b.float()) / 2) ** 2).mean())  # images in [-1, 1] -> [0, 1]
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def child_peak_rss(config: str, batch: int, variant: str, quick: bool, noise: bool) -> float:
    """Peak RSS (MB) of a fresh process that builds the network and runs one batch."""
    cmd = [sys.executable, __file__, "--_child", variant, "--configs", config, "--batches", str(batch)]
    cmd += ["--quick"] if quick else []
    cmd += ["--noise_labels"] if noise else []
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(res.stdout.strip().splitlines()[-1])


def run_child(args) -> None:
    config, batch = args.configs[0], args.batches[0]
    opt = make_options(config, args.quick)
    label, inst, _ = label_maps(config, opt, batch, args.noise_labels)
    G = networks.define_G(opt, init=False).eval()  # weights do not change memory use
    if args._child.startswith("faithful"):
        sem = to_semantics(label[:, None], None if inst is None else inst[:, None], opt)
        with torch.no_grad():
            G(sem)
    else:
        precision = args._child.split("_")[1]
        engine = SynthesisEngine.from_generator(G, precision=precision, consume=True)
        del G
        engine.generate(label, inst)
    # VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork)
    with open("/proc/self/status") as fh:
        hwm = [line for line in fh if line.startswith("VmHWM:")]
    print(int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_config(config: str, batch: int, args, bf16_native: bool, mm: dict) -> list[dict]:
    opt = make_options(config, args.quick)
    label, inst, src = label_maps(config, opt, batch, args.noise_labels)
    G = unit_scale_generator(opt, label, inst)
    flops = count_flops(G)
    sem = to_semantics(label[:, None], None if inst is None else inst[:, None], opt)
    engines = {"engine_fp32": SynthesisEngine.from_generator(G, "fp32")}
    run_bf16 = not args.no_bf16 and (bf16_native or args.bf16_all or batch == min(args.batches))
    if run_bf16:
        engines["engine_bf16"] = SynthesisEngine.from_generator(G, "bf16")

    def faithful():
        with torch.no_grad():
            return G(sem)

    variants = {"faithful_fp32": faithful}
    for name, e in engines.items():
        variants[name] = (lambda e=e: e.generate(label, inst))
    times: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for name, fn in variants.items():  # warm-up (oneDNN primitive creation), keep the outputs
        outputs[name] = fn()
    reps = {k: args.reps for k in variants}
    if run_bf16 and not bf16_native:
        reps["engine_bf16"] = 1  # emulated bf16: minutes per image; one timed run
    for r in range(args.reps):  # interleaved: each repetition times every variant once
        for name, fn in variants.items():
            if r >= reps[name]:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["faithful_fp32"]) / batch
    rows = []
    rss = {}
    if not args.no_rss:
        for name in variants:
            rss[name] = child_peak_rss(config, batch, name, args.quick, args.noise_labels)
    for name in variants:
        per = statistics.median(times[name]) / batch
        row = {"config": config, "batch": batch, "variant": name, "ms": per * 1000, "images_s": 1 / per,
               "speedup": base / per, "gflops": flops / per / 1e9, "reps": len(times[name]),
               "peak_rss_mb": rss.get(name, float("nan")), "labels": src}
        if name != "faithful_fp32":
            ref = outputs["faithful_fp32"] if name == "engine_fp32" else outputs["engine_fp32"]
            row["max_abs_err"] = float((outputs[name].float() - outputs["faithful_fp32"]).abs().max())
            row["psnr_db"] = psnr(outputs[name], ref) if name != "engine_fp32" else psnr(outputs[name], outputs["faithful_fp32"])
        row["matmul_frac"] = row["gflops"] / mm["fp32" if "bf16" not in name else "bf16"][0]
        rows.append(row)
    unsat = float((outputs["faithful_fp32"].abs() < 0.99).float().mean())
    fp64_err = fp64_err_engine = None
    if not args.no_fp64:
        # the faithful network's own fp32 rounding error, for scale: its float64 twin
        import copy
        G64 = copy.deepcopy(G).double()
        with torch.no_grad():
            ref64 = G64(sem.double()).float()
        del G64
        fp64_err = float((ref64 - outputs["faithful_fp32"]).abs().max())
        fp64_err_engine = float((ref64 - outputs["engine_fp32"]).abs().max())
    for row in rows:
        row["unsaturated_frac"] = unsat
        row["faithful_fp32_vs_fp64_err"] = fp64_err
        row["engine_fp32_vs_fp64_err"] = fp64_err_engine
        row["gflop_per_image"] = flops / 1e9
    return rows


def bench_config_cuda(config: str, batch: int, args) -> list[dict]:
    """On a GPU: the network (fp32, TF32 off) against the engine in fp32, fp16 and bf16, timed
    with `torch.cuda.synchronize()` around each call, interleaved repetition by repetition."""
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    opt = make_options(config, args.quick)
    label, inst, src = label_maps(config, opt, batch, args.noise_labels)
    G = unit_scale_generator(opt, label, inst).to(device)
    sem = to_semantics(label[:, None], None if inst is None else inst[:, None], opt).to(device)
    variants = {"faithful_fp32": lambda: G(sem)}
    for precision in ("fp32", "fp16", "bf16"):
        import copy
        engine = SynthesisEngine.from_generator(copy.deepcopy(G), precision)
        variants[f"engine_{precision}"] = (lambda e=engine: e.generate(label, inst))
    outputs, times = {}, {k: [] for k in variants}
    with torch.no_grad():
        for name, fn in variants.items():  # warm-up: cuDNN algorithm choice, kernels
            outputs[name] = fn().float()
        for _ in range(args.reps):
            for name, fn in variants.items():
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["faithful_fp32"]) / batch
    rows = []
    for name in variants:
        per = statistics.median(times[name]) / batch
        rows.append({"config": config, "batch": batch, "variant": name, "ms": per * 1000, "images_s": 1 / per,
                     "speedup": base / per, "labels": src, "device": torch.cuda.get_device_name(device),
                     "max_abs_err": float((outputs[name] - outputs["faithful_fp32"]).abs().max()),
                     "psnr_db": psnr(outputs[name], outputs["faithful_fp32"])})
    return rows


def main_cuda(args) -> int:
    """`--device cuda`: the GPU table (and one JSON line with --json)."""
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU is available")
    rows = [r for c in args.configs for b in args.batches for r in bench_config_cuda(c, b, args)]
    print(f"# GPU {rows[0]['device']}, torch {torch.__version__}, TF32 off, median of {args.reps} interleaved")
    print(f"{'config':<11}{'batch':>5} {'variant':<14}{'ms/img':>9}{'img/s':>9}{'speed-up':>9}{'max|err|':>10}"
          f"{'PSNR dB':>9}")
    for r in rows:
        print(f"{r['config']:<11}{r['batch']:>5} {r['variant']:<14}{r['ms']:>9.2f}{r['images_s']:>9.1f}"
              f"{r['speedup']:>8.2f}x{r['max_abs_err']:>10.1e}{fmt(r['psnr_db'], '.1f'):>9}")
    if args.json:
        print(json.dumps({"device": rows[0]["device"], "torch": torch.__version__,
                          "results": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                       for k, v in r.items()} for r in rows]}))
    return 0


def ablation(config: str, args) -> list[dict]:
    """ms/image of the engine with its ideas switched on one by one (batch 1, interleaved)."""
    opt = make_options(config, args.quick)
    label, inst, _ = label_maps(config, opt, 1, args.noise_labels)
    G = unit_scale_generator(opt, label, inst)
    sem = to_semantics(label[:, None], None if inst is None else inst[:, None], opt)

    def engine(sparse: bool, winograd: bool) -> SynthesisEngine:
        e = SynthesisEngine.from_generator(G, "fp32", winograd=winograd)
        if not sparse:
            e.sparse_threshold = -math.inf
        return e

    steps = {
        "faithful network (NCHW, no_grad)": None,
        "+ gather-sum SPADE input, fused gamma/beta, NHWC, folded weights": engine(False, False),
        "+ per-class constants away from boundaries (sparse)": engine(True, False),
        "+ Winograd F(2x2,3x3) for many-channel small maps": engine(True, True),
    }
    times = {k: [] for k in steps}
    for name, e in steps.items():  # warm-up
        e.generate(label, inst) if e is not None else G(sem)
    for _ in range(args.reps):
        for name, e in steps.items():
            t0 = time.perf_counter()
            if e is None:
                with torch.no_grad():
                    G(sem)
            else:
                e.generate(label, inst)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["faithful network (NCHW, no_grad)"])
    return [{"step": k, "ms": 1000 * statistics.median(v), "speedup": base / statistics.median(v)}
            for k, v in times.items()]


def run_worker(args) -> None:
    """--baseline_src's worker: this process imported spadegan from --_src; builds the same
    generator and engine as compare_baseline and, per line on stdin, times one batch ("run",
    answers the seconds) or saves the output ("save PATH")."""
    opt = make_options(args.configs[0], args.quick)
    label, inst, _ = label_maps(args.configs[0], opt, args.batches[0], args.noise_labels)
    engine = SynthesisEngine.from_generator(unit_scale_generator(opt, label, inst), "fp32")
    out = engine.generate(label, inst)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            t0 = time.perf_counter()
            out = engine.generate(label, inst)
            print(time.perf_counter() - t0, flush=True)
        elif cmd[0] == "save":
            torch.save(out, cmd[1])
            print("saved", flush=True)


def compare_baseline(config: str, batch: int, args) -> dict:
    """ms/image of this tree's fp32 engine and of --baseline_src's (a worker process), interleaved."""
    import tempfile
    cmd = [sys.executable, __file__, "--_worker", f"--_src={args.baseline_src}", "--configs", config,
           "--batches", str(batch)] + (["--quick"] if args.quick else []) + (["--noise_labels"] if args.noise_labels else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    worker = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(line: str) -> str:
        worker.stdin.write(line + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    opt = make_options(config, args.quick)
    label, inst, src = label_maps(config, opt, batch, args.noise_labels)
    engine = SynthesisEngine.from_generator(unit_scale_generator(opt, label, inst), "fp32")
    out = engine.generate(label, inst)  # warm-up
    if worker.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the baseline worker ({args.baseline_src}) did not start")
    base, this = [], []
    for _ in range(args.reps):
        base.append(float(ask("run")))
        t0 = time.perf_counter()
        engine.generate(label, inst)
        this.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        ask(f"save {tmp}/out.pt")
        diff = float((torch.load(f"{tmp}/out.pt") - out).abs().max())
    worker.stdin.close()
    worker.wait()
    return {"config": config, "batch": batch, "baseline_ms": 1000 * statistics.median(base) / batch,
            "this_ms": 1000 * statistics.median(this) / batch,
            "ratio": statistics.median(b / t for b, t in zip(base, this)), "max_abs_diff": diff,
            "reps": args.reps, "labels": src}


def trained_psnr(path: str) -> dict:
    """bf16 vs fp32 engine PSNR on a trained checkpoint, on a few of its own kind of maps."""
    from spadegan.synthesize import Synthesizer
    from spadegan.data.landscapes import generate_scene
    s32 = Synthesizer.from_checkpoint(path, device="cpu", precision="fp32")
    s16 = Synthesizer.from_checkpoint(path, device="cpu", precision="bf16")
    labels = [generate_scene(i, size=s32.height, width=s32.width)[0] % s32.label_channels for i in range(2)]
    a = s32.synthesize_batch(labels, seeds=[0, 1], output="numpy")
    b = s16.synthesize_batch(labels, seeds=[0, 1], output="numpy")
    ta = torch.from_numpy(np.stack(a)).float() / 127.5 - 1
    tb = torch.from_numpy(np.stack(b)).float() / 127.5 - 1
    return {"checkpoint": path, "psnr_bf16_db": psnr(tb, ta)}


def fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["ade20k", "coco", "cityscapes"], choices=list(CONFIGS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="tiny networks (ngf 16, 64 px): a smoke test")
    p.add_argument("--noise_labels", action="store_true", help="uniform random label maps (worst case)")
    p.add_argument("--no_bf16", action="store_true")
    p.add_argument("--bf16_all", action="store_true", help="time emulated bf16 at every batch size too")
    p.add_argument("--no_rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no_fp64", action="store_true", help="skip the float64 reference")
    p.add_argument("--trained", default=None, help="a trained checkpoint for the bf16 PSNR check "
                                                   "(default: the built-in model, if shipped)")
    p.add_argument("--ablation", action="store_true",
                   help="only time the engine's ideas switched on one by one (batch 1, first config)")
    p.add_argument("--baseline_src", default=None,
                   help="only time this tree's fp32 engine against the one imported from this src folder")
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda[:N]: the network against the engine in fp32/fp16/bf16 on the GPU")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_src", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        run_child(args)
        return 0
    if args._worker:
        run_worker(args)
        return 0
    if args.baseline_src:
        print(f"# fp32 engine, this tree against {args.baseline_src}, threads {torch.get_num_threads()}, median of "
              f"{args.reps} interleaved; load average {os.getloadavg()[0]:.1f}", flush=True)
        found = [compare_baseline(c, b, args) for c in args.configs for b in args.batches]
        for r in found:
            print(f"{r['config']:<11}{r['batch']:>3}  baseline {r['baseline_ms']:>7.0f} ms/img  this {r['this_ms']:>7.0f} "
                  f"ms/img  baseline/this {r['ratio']:.2f}x  max|diff| {r['max_abs_diff']:.1e}", flush=True)
        if args.json:
            print(json.dumps({"baseline": found, "load_average": os.getloadavg()[0]}))
        return 0
    if args.device != "cpu":
        return main_cuda(args)
    hw = describe_hardware("cpu")
    bf16_native = bool(hw["bf16"])
    if args.ablation:
        print(f"# ablation, {args.configs[0]}, batch 1, threads {torch.get_num_threads()}, "
              f"median of {args.reps}; load average {os.getloadavg()[0]:.1f}")
        for r in ablation(args.configs[0], args):
            print(f"{r['step']:<68}{r['ms']:>9.0f} ms{r['speedup']:>8.2f}x")
        return 0
    mm = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    print(f"# CPU {hw['features']}, threads {torch.get_num_threads()}, native bf16: {bf16_native}; "
          f"matmul fp32 {mm['fp32'][0]:.1f} GFLOP/s (n={mm['fp32'][1]}), bf16 {mm['bf16'][0]:.2f} GFLOP/s "
          f"(n={mm['bf16'][1]}); load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for config in args.configs:
        for batch in args.batches:
            t0 = time.perf_counter()
            got = bench_config(config, batch, args, bf16_native, mm)
            rows += got
            print(f"# {config} batch {batch}: {got[0]['gflop_per_image']:.0f} GFLOP/image (faithful), labels: "
                  f"{got[0]['labels']}, {100 * got[0]['unsaturated_frac']:.0f}% of output pixels unsaturated, "
                  + (f"max abs error vs float64: faithful {got[0]['faithful_fp32_vs_fp64_err']:.1e}, "
                     f"engine {got[0]['engine_fp32_vs_fp64_err']:.1e}, "
                     if got[0]["faithful_fp32_vs_fp64_err"] is not None else "")
                  + f"{time.perf_counter() - t0:.0f} s", flush=True)
    head = (f"{'config':<11}{'batch':>5} {'variant':<14}{'ms/img':>9}{'img/s':>8}{'peakRSS MB':>11}"
            f"{'speed-up':>9}{'max|err|':>10}{'PSNR dB':>9}{'GFLOP/s':>9}{'%matmul':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['config']:<11}{r['batch']:>5} {r['variant']:<14}{r['ms']:>9.0f}{r['images_s']:>8.2f}"
              f"{fmt(r['peak_rss_mb'], '.0f'):>11}{r['speedup']:>8.2f}x{fmt(r.get('max_abs_err'), '.1e'):>10}"
              f"{fmt(r.get('psnr_db'), '.1f'):>9}{r['gflops']:>9.1f}{100 * r['matmul_frac']:>7.0f}%")
    trained = None
    ckpt = args.trained
    if ckpt is None:
        builtin = REPO / "src" / "spadegan" / "pretrained" / "landscapes"
        ckpt = str(builtin) if (builtin / "latest_net_G.pth").is_file() else None
    if ckpt and not args.no_bf16:
        trained = trained_psnr(ckpt)
        print(f"# trained model {ckpt}: bf16 vs fp32 engine PSNR {trained['psnr_bf16_db']:.1f} dB")
    if args.json:
        results = []
        for config in args.configs:
            for batch in args.batches:
                by = {r["variant"]: r for r in rows if r["config"] == config and r["batch"] == batch}
                f, e32, e16 = by["faithful_fp32"], by["engine_fp32"], by.get("engine_bf16")
                results.append({
                    "config": config, "batch": batch, "faithful_fp32_ms": f["ms"], "engine_fp32_ms": e32["ms"],
                    "engine_bf16_ms": e16["ms"] if e16 else None,
                    "speedup_fp32": e32["speedup"], "speedup_bf16": e16["speedup"] if e16 else None,
                    "max_abs_err_fp32": e32["max_abs_err"], "psnr_bf16_db": e16["psnr_db"] if e16 else None,
                    "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in by.items()},
                    "gflop_per_image": f["gflop_per_image"],
                    "faithful_fp32_vs_fp64_err": f["faithful_fp32_vs_fp64_err"],
                    "engine_fp32_vs_fp64_err": f["engine_fp32_vs_fp64_err"],
                    "gflops": {k: v["gflops"] for k, v in by.items()},
                    "labels": f["labels"]})
        def clean(o):  # NaN/inf are not JSON
            if isinstance(o, float) and not math.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [clean(v) for v in o]
            return o

        print(json.dumps(clean({"results": results, "hardware": hw, "bf16_native": bf16_native,
                          "matmul_gflops": {"fp32": mm["fp32"][0], "bf16": mm["bf16"][0]},
                          "trained": trained, "quick": args.quick})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
