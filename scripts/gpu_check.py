"""The checks a CPU cannot run, in one command for a CUDA machine (a few minutes at most).

    python scripts/gpu_check.py                 # on the first CUDA GPU
    python scripts/gpu_check.py --device cuda:1
    python scripts/gpu_check.py --cpu [--small] # dry run of the same checks on the CPU

1. parity: the official fixture's G (eval and train mode), D (features of fake and real) and
   a seeded E on the device, against the official outputs and against the CPU
   (`../shared/fixtures/official_parity/ade_small`; SPADEGAN_SHARED overrides ../shared);
2. training: `--iters` iterations (default 20) of a tiny run without and with `--amp`
   (bf16 from compute capability 8.0, fp16 + GradScaler before): every loss finite, and
   `--iters/2` + resume (`--continue_train`) + `--iters/2` ending with the same weights as the
   uninterrupted run (deterministic kernels are asked for, as exact resume on CUDA needs);
3. engine: the synthesis engine in fp32, fp16 and bf16 against the faithful network in fp32
   on the built-in model (max abs error, PSNR, ms/image);
4. paint: the paint app's backend (`spadegan.app.adapter.AppBackend`) on the device: images of
   the right shape, the same seed giving the same image, close to the CPU's;
5. launch: `spadegan train --gpu_ids 0,1` on a tiny procedural dataset (one nccl process
   per GPU; skipped with fewer than 2 GPUs; the CPU dry run starts 2 gloo processes).

TF32 is switched off (PyTorch allows it for cuDNN convolutions by default), so fp32 means
fp32. It prints a table and, last, one JSON line {"gpu_check": {...}}; the exit code is 0
when every check passed, 1 otherwise. Without CUDA (and without --cpu) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; before CUDA starts

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from spadegan import load_checkpoint  # noqa: E402
from spadegan.data.semantics import to_semantics  # noqa: E402
from spadegan.device import describe_hardware, dtype_name, resolve_device  # noqa: E402
from spadegan.errors import SpadeganError  # noqa: E402
from spadegan.fileio import load_torch_file  # noqa: E402

PARITY_TOL = 1e-4  # what the official fixture promises a faithful implementation on the CPU
ENGINE_FP32_TOL = 1e-4
ENGINE_HALF_PSNR = 35.0  # dB against the faithful fp32 output
PAINT_PSNR = 30.0  # dB between the device's paint backend (its default precision) and the CPU's fp32


def shared_dir() -> Path:
    return Path(os.environ.get("SPADEGAN_SHARED", REPO.parent / "shared"))


def row(check: str, ok: bool | None, detail: str, **numbers: Any) -> dict:
    """One line of the table; ok None = skipped."""
    return {"check": check, "status": "skip" if ok is None else ("ok" if ok else "FAIL"), "detail": detail,
            **numbers}


def max_err(a: Any, b: Any) -> float:
    if isinstance(a, (list, tuple)):
        return max(max_err(x, y) for x, y in zip(a, b, strict=True))
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((((a.float().cpu() - b.float().cpu()) / 2) ** 2).mean())  # [-1, 1] -> [0, 1]
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- 1. parity ---------------------------------------------------------------------------------
def _compare(name: str, got: Any, cpu: Any, official: Any | None) -> dict:
    e_cpu = max_err(got, cpu)
    e_off = None if official is None else max_err(got, official)
    worst = max(e_cpu, e_off or 0.0)
    detail = f"vs CPU {e_cpu:.1e}" + ("" if e_off is None else f", vs official {e_off:.1e}") + f" (tol {PARITY_TOL:g})"
    return row(name, worst <= PARITY_TOL, detail, err_cpu=e_cpu, err_official=e_off)


def check_parity(device: torch.device) -> list[dict]:
    d = shared_dir() / "fixtures" / "official_parity" / "ade_small"
    if not d.is_dir():
        return [row("parity", None, f"{d} not found (set SPADEGAN_SHARED to the shared data folder)")]
    inp = load_torch_file(d / "input.pt", "fixture input")
    exp = load_torch_file(d / "expected.pt", "fixture outputs")
    rows = []
    with torch.no_grad():
        for mode in ("eval", "train"):  # a fresh copy each: train mode moves u/v and BN statistics
            G_cpu, G_dev = load_checkpoint(d, "G"), load_checkpoint(d, "G", device=device)
            getattr(G_cpu, mode)(), getattr(G_dev, mode)()
            sem = to_semantics(inp["label"], inp["instance"], G_cpu.opt)
            rows.append(_compare(f"parity G {mode}", G_dev(sem.to(device)), G_cpu(sem), exp[f"G_{mode}"]))
        D_cpu, D_dev = load_checkpoint(d, "D"), load_checkpoint(d, "D", device=device)
        for name, img in (("fake", exp["G_eval"]), ("real", inp["image"])):
            x = torch.cat([sem, img], 1)
            rows.append(_compare(f"parity D {name}", D_dev(x.to(device)), D_cpu(x), exp[f"D_{name}"]))
        from spadegan.networks import define_E
        torch.manual_seed(0)
        E_cpu = define_E(G_cpu.opt.replace(use_vae=True), init=True).eval()
        E_dev = copy.deepcopy(E_cpu).to(device)
        rows.append(_compare("parity E (seeded)", E_dev(inp["image"].to(device)), E_cpu(inp["image"]), None))
    return rows


# ---- 2. training ---------------------------------------------------------------------------------
class BlockPairs(torch.utils.data.Dataset):
    """Tiny in-memory pairs: blocky label maps and a colour per class."""

    def __init__(self, n: int = 64, size: int = 32, nc: int = 10):
        self.n, self.size, self.nc = n, size, nc

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        cells = np.random.default_rng(i).integers(0, self.nc, (4, 4))
        ids = torch.from_numpy(np.kron(cells, np.ones((self.size // 4, self.size // 4), dtype=np.int64)))
        pal = torch.linspace(-1, 1, self.nc)
        image = torch.stack([pal[ids], pal.flip(0)[ids], torch.full(ids.shape, 0.25)])
        return {"label": ids[None].float(), "instance": torch.zeros(()), "image": image, "path": f"block{i}.png"}


def _trainer(folder: Path, name: str, device: torch.device, amp: bool, *extra: str):
    from spadegan.options import parse
    from spadegan.train.trainer import Trainer
    argv = ["--name", name, "--checkpoints_dir", str(folder), "--dataset_mode", "landscapes", "--ngf", "8",
            "--ndf", "8", "--crop_size", "32", "--load_size", "32", "--no_vgg_loss", "--batchSize", "2",
            "--nThreads", "0", "--seed", "3", "--niter", "1000", "--niter_decay", "0", "--print_freq", "100000",
            "--display_freq", "100000", "--save_latest_freq", "100000", "--device", str(device), "--use_vae",
            *(["--amp"] if amp else []), *extra]
    return Trainer(parse(argv, train=True), dataset=BlockPairs(), progress=False, log=False)


def _run_recording(trainer, steps: int, losses: list[float]) -> None:
    step = trainer.train_one_step

    def recorded(i, data):
        step(i, data)
        losses.extend(float(v) for v in trainer.latest_losses().values())
    trainer.train_one_step = recorded
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's end-of-epoch lines
        trainer.run(max_steps=steps)


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels (cuDNN, cuBLAS, scatter/index ops) while training; the ops that
    have none are collected from PyTorch's warnings."""
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    nondeterministic: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield nondeterministic
        finally:
            torch.use_deterministic_algorithms(old[0], warn_only=old[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]
            nondeterministic += sorted({str(w.message).split(" does not have a deterministic")[0]
                                        for w in caught if "deterministic" in str(w.message)})


def _weights_diff(a: Path, b: Path) -> float:
    """Max abs difference between two state_dict files (inf when their keys differ)."""
    sa, sb = load_torch_file(a, "weights"), load_torch_file(b, "weights")
    if sa.keys() != sb.keys():
        return math.inf
    return max(max_err(sa[k], sb[k]) for k in sa)


def check_training(device: torch.device, iters: int) -> list[dict]:
    rows = []
    half = max(1, iters // 2)
    for amp in (False, True):
        name = "training --amp" if amp else "training fp32"
        losses: list[float] = []
        with tempfile.TemporaryDirectory() as tmp, _deterministic(device) as nondet:
            t0 = time.perf_counter()
            ref = _trainer(Path(tmp), "full", device, amp)
            _run_recording(ref, iters, losses)
            cut = _trainer(Path(tmp), "cut", device, amp)
            # on a CPU --amp times fp32 against bf16 and keeps the faster; two runs can decide
            # differently, and this check compares resuming, not that choice: share the first one's
            cut.amp_dtype = ref.amp_dtype
            _run_recording(cut, half, losses)
            _run_recording(_trainer(Path(tmp), "cut", device, amp, "--continue_train"), iters, losses)
            seconds = time.perf_counter() - t0
            diffs = [_weights_diff(Path(tmp) / "full" / f"latest_net_{k}.pth", Path(tmp) / "cut" / f"latest_net_{k}.pth")
                     for k in "GDE"]
        precision = dtype_name(ref.amp_dtype)
        scaler = " + GradScaler" if ref.scaler_G.is_enabled() else ""
        finite = all(math.isfinite(v) for v in losses)
        exact = max(diffs) == 0.0
        detail = (f"{iters} iterations in {precision}{scaler}: losses {'finite' if finite else 'NOT finite'}; "
                  f"{half} + resume to {iters} vs uninterrupted: "
                  + ("identical weights" if exact else f"weights differ by up to {max(diffs):.1e}")
                  + (f" (kernels without a deterministic version: {'; '.join(nondet)})" if nondet and not exact else ""))
        rows.append(row(name, finite and exact, detail, precision=precision + scaler, max_weight_diff=max(diffs),
                        seconds=round(seconds, 1)))
    return rows


# ---- 3. engine -------------------------------------------------------------------------------------
def landscape_labels(n: int, size: int) -> torch.Tensor:
    from spadegan.data.landscapes import generate_scene
    return torch.stack([torch.from_numpy(generate_scene(i, size=size)[0].astype(np.int64)) for i in range(n)])


def _ms_per_image(fn: Callable[[], torch.Tensor], device: torch.device, reps: int, batch: int) -> tuple[torch.Tensor, float]:
    out = fn()  # warm-up (kernel selection, caches)
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, 1000 * sorted(times)[len(times) // 2] / batch


def check_engine(device: torch.device, batch: int, reps: int) -> list[dict]:
    from spadegan.engine import SynthesisEngine
    from spadegan.synthesize import builtin_checkpoint
    G = load_checkpoint(builtin_checkpoint(), device=device)
    label = landscape_labels(batch, G.opt.crop_size)
    z = torch.randn(batch, G.opt.z_dim, generator=torch.Generator().manual_seed(0)) if G.opt.use_vae else None
    sem = to_semantics(label[:, None], None, G.opt).to(device)
    with torch.no_grad():
        ref, ms_ref = _ms_per_image(lambda: G(sem, None if z is None else z.to(device)), device, reps, batch)
    rows = [row("faithful G fp32", True, f"built-in model, batch {batch}: {ms_ref:.2f} ms/image", ms_per_image=ms_ref)]
    for precision in ("fp32", "fp16", "bf16"):
        engine = SynthesisEngine.from_generator(copy.deepcopy(G), precision=precision)
        out, ms = _ms_per_image(lambda: engine.generate(label, None, z), device, reps, batch)
        err, db = max_err(out, ref), psnr(out, ref)
        ok = err <= ENGINE_FP32_TOL if precision == "fp32" else db >= ENGINE_HALF_PSNR
        want = f"tol {ENGINE_FP32_TOL:g}" if precision == "fp32" else f">= {ENGINE_HALF_PSNR:g} dB"
        rows.append(row(f"engine {precision}", ok, f"max err {err:.1e}, PSNR {db:.1f} dB ({want}), {ms:.2f} ms/image",
                        max_abs_err=err, psnr_db=db, ms_per_image=ms))
    return rows


# ---- 4. paint ----------------------------------------------------------------------------------------
def check_paint(device: torch.device) -> list[dict]:
    from spadegan.app.adapter import AppBackend
    from spadegan.synthesize import Synthesizer
    backend = AppBackend(Synthesizer.from_checkpoint(None, device=device))
    cpu = AppBackend(Synthesizer.from_checkpoint(None, device="cpu", precision="fp32"))
    labels = [lab.numpy().astype(np.uint8) for lab in landscape_labels(2, backend.height)]
    seeds = [1, 2]
    t0 = time.perf_counter()
    first = backend.synthesize_batch(labels, seeds, [None, None])
    ms = 1000 * (time.perf_counter() - t0) / len(labels)
    again = backend.synthesize_batch(labels, seeds, [None, None])
    want = cpu.synthesize_batch(labels, seeds, [None, None])
    shapes = all(a.shape == (backend.height, backend.width, 3) and a.dtype == np.uint8 for a in first)
    same = all(np.array_equal(a, b) for a, b in zip(first, again))
    db = min(psnr(torch.from_numpy(a).float() / 127.5 - 1, torch.from_numpy(b).float() / 127.5 - 1)
             for a, b in zip(first, want))
    precision = backend.synthesizer.precision
    detail = (f"{precision}: images {'of the right shape' if shapes else 'of a WRONG shape'}, "
              f"{'the same' if same else 'DIFFERENT'} for the same seed, {db:.1f} dB vs the CPU's fp32 "
              f"(>= {PAINT_PSNR:g}), {ms:.1f} ms/image")
    return [row("paint backend", shapes and same and db >= PAINT_PSNR, detail, precision=precision,
                psnr_db=db, ms_per_image=ms)]


# ---- 5. several GPUs ---------------------------------------------------------------------------------
def check_launch(device: torch.device) -> list[dict]:
    """`spadegan train --gpu_ids 0,1` (nccl, one process per GPU); on the CPU dry run two gloo
    processes through the same launcher (SPADEGAN_CPU_PROCESSES=2)."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    if device.type == "cuda":
        if torch.cuda.device_count() < 2:
            return [row("launch --gpu_ids 0,1", None, f"{torch.cuda.device_count()} GPU here; needs 2")]
        where, flags = "2 GPUs (nccl)", ["--gpu_ids", "0,1"]
    else:
        where, flags = "2 CPU processes (gloo)", ["--gpu_ids", "-1"]
        env.update(SPADEGAN_CPU_PROCESSES="2", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        data, ck = Path(tmp) / "data", Path(tmp) / "ck"
        cli = [sys.executable, "-m", "spadegan.cli"]
        subprocess.run(cli + ["make-landscapes", "--out", str(data), "--count", "9", "--size", "64", "--val_count", "1"],
                       env=env, check=True, capture_output=True)
        cmd = cli + ["train", "--name", "two", "--checkpoints_dir", str(ck), "--dataset_mode", "landscapes",
                     "--dataroot", str(data), "--ngf", "8", "--ndf", "8", "--crop_size", "64", "--load_size", "64",
                     "--batchSize", "4", "--niter", "1", "--niter_decay", "0", "--no_vgg_loss", "--nThreads", "0",
                     "--seed", "1", "--print_freq", "4", *flags]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        seconds = time.perf_counter() - t0
        log = ck / "two" / "loss_log.txt"
        lines = log.read_text().splitlines() if log.is_file() else []
        ok = r.returncode == 0 and (ck / "two" / "latest_net_G.pth").is_file() and len(lines) == 1 + 2
        tail = (r.stderr.strip().splitlines() or [""])[-1]
        detail = (f"{where}: 2 steps of batch 4, rank 0 wrote {len(lines) - 1} loss lines and latest_net_G.pth "
                  f"in {seconds:.0f} s" if ok else f"{where}: exit code {r.returncode}: {tail}")
    return [row("launch --gpu_ids 0,1", ok, detail, seconds=round(seconds, 1))]


# ---- the command -------------------------------------------------------------------------------------
def print_table(rows: list[dict]) -> None:
    width = max(len(r["check"]) for r in rows)
    print(f"{'check':<{width}}  status  detail")
    for r in rows:
        print(f"{r['check']:<{width}}  {r['status']:<6}  {r['detail']}")


def run_checks(device: torch.device, args: argparse.Namespace) -> list[dict]:
    checks: list[tuple[str, Callable[[], list[dict]]]] = [
        ("parity", lambda: check_parity(device)),
        ("training", lambda: check_training(device, args.iters)),
        ("engine", lambda: check_engine(device, args.batch, args.reps)),
        ("paint", lambda: check_paint(device)),
        ("launch", lambda: check_launch(device)),
    ]
    rows: list[dict] = []
    for name, check in checks:
        t0 = time.perf_counter()
        try:
            rows += check()
        except Exception as e:  # report it as a failure, go on with the other checks
            where = traceback.extract_tb(e.__traceback__)[-1]
            first = str(e).splitlines()[0] if str(e) else ""
            rows.append(row(name, False, f"{type(e).__name__}: {first} ({Path(where.filename).name}:{where.lineno})"))
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the CUDA device to check (default: cuda, the current one)")
    p.add_argument("--cpu", action="store_true", help="dry run: the same checks on the CPU")
    p.add_argument("--small", action="store_true", help="smallest settings (4 iterations, batch 2, 1 repetition)")
    p.add_argument("--iters", type=int, default=20, help="training iterations (half, then resumed)")
    p.add_argument("--batch", type=int, default=8, help="engine batch size")
    p.add_argument("--reps", type=int, default=5, help="timed engine repetitions")
    args = p.parse_args(argv)
    if args.small:
        args.iters, args.batch, args.reps = 4, 2, 1
    if args.iters < 2:
        p.error("--iters must be at least 2 (half of them, then a resume)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        print(f"gpu_check: no CUDA here ({why}; torch {torch.__version__}): nothing to check. Run it on a CUDA "
              "machine, or pass --cpu for a dry run of the same checks on the CPU.")
        print(json.dumps({"gpu_check": {"cuda": False, "torch": torch.__version__, "ok": None, "checks": []}}))
        return 0
    try:
        device = torch.device("cpu") if args.cpu else resolve_device(args.device)
    except SpadeganError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    hardware = describe_hardware(device)
    print(f"gpu_check on {device} ({hardware.get('device')}, {hardware.get('features') or 'compute capability ' + str(hardware.get('capability'))}); "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    t0 = time.perf_counter()
    rows = run_checks(device, args)
    ok = all(r["status"] != "FAIL" for r in rows)
    print_table(rows)
    print(json.dumps({"gpu_check": {"cuda": device.type == "cuda", "device": str(device), "hardware": hardware,
                                    "torch": torch.__version__, "ok": ok,
                                    "seconds": round(time.perf_counter() - t0, 1), "checks": rows}}, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
