"""Stroke previews (issue 25): preview vs full-pass latency, preview fidelity, app latency.

    python benchmarks/bench_paint_strokes.py [--strokes 8] [--threads N] [--skip_app]

1. Latency, ADE20K configuration (256 px, ngf 64, 151 label channels, random weights: timing
   only) on a real ADE20K map (the shared sample, ADE_val_00000001): a recorded sequence of
   brush-like strokes of about 0.5 %, 1 %, 5 % and 20 % of the area, each applied to the map
   left by the previous one. Per stroke, interleaved in one run: the preview from the last
   full pass's cache (`IncrementalEngine.preview`, tensors in, image tensor out) and the
   engine's full forward on the same map, `--repeats` times each, alternating which runs
   first, the fastest of each counting; then the full pass that refreshes the cache (as
   `refine` does when the painter pauses; not timed). A declined preview (too large) counts
   its planning plus the full pass the caller then runs.
2. Fidelity, the built-in trained model (128 px landscapes): the same stroke sizes on
   procedural scenes; PSNR of the preview against the full pass over the whole uint8 image
   (`PaintSession.update` vs `refine`).
3. The app end to end (client -> PNG, in-process ASGI client, ADE20K configuration): a POST
   with a painter id (a preview) against one without (the full pass), per stroke size.

Prints a markdown table per part with the CPU, threads and load average (the machine may be
shared: ratios are measured pairwise, interleaved).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from spadegan import networks, options  # noqa: E402
from spadegan.engine.incremental import IncrementalEngine  # noqa: E402

SIZES = (0.005, 0.01, 0.05, 0.2)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def brush(label: np.ndarray, frac: float, rng: np.random.Generator, cls: int) -> np.ndarray:
    """A brush-like stroke: discs along a wandering path until `frac` of the map is covered."""
    h, w = label.shape
    r = max(1.5, math.sqrt(frac * h * w) / 8)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    y, x, a = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0, 2 * math.pi)
    step = max(1.0, h / 128)
    while m.sum() < frac * h * w:
        m |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        a += rng.normal(0, 0.3)
        y, x = float(np.clip(y + step * math.sin(a), 0, h - 1)), float(np.clip(x + step * math.cos(a), 0, w - 1))
    out = label.copy()
    out[m] = cls
    return out


def ade20k_map(size: int = 256) -> tuple[np.ndarray, str]:
    from PIL import Image

    shared = Path(os.environ.get("SPADEGAN_SHARED", REPO.parent / "shared"))
    f = shared / "data" / "ade20k_sample" / "annotations" / "ADE_val_00000001.png"
    ids = np.array(Image.open(f)).astype(np.int64)
    t = F.interpolate(torch.from_numpy(ids)[None, None].double(), size=(size, size), mode="nearest")
    return t[0, 0].long().numpy(), str(f)


def ade20k_generator():
    opt = options.parse(["--dataset_mode", "ade20k", "--gpu_ids", "-1"], train=False)
    torch.manual_seed(0)
    return networks.define_G(opt).eval(), opt


def _ms(t: float) -> str:
    return f"{1000 * t:.0f}"


def latency(n: int, repeats: int = 3) -> list[dict]:
    from spadegan.engine import SynthesisEngine

    G, opt = ade20k_generator()
    eng = SynthesisEngine.from_generator(G)
    inc = IncrementalEngine(eng)
    lab, _ = ade20k_map(opt.crop_size)
    size = (opt.crop_size, opt.crop_size)
    rng = np.random.default_rng(0)
    state = inc.full(torch.from_numpy(lab)[None], None, None, size)
    warm = torch.from_numpy(brush(lab, 0.01, np.random.default_rng(99), 3))[None]
    for _ in range(2):  # warm-up: both paths, allocator and kernels
        inc.preview(state, warm)
        with torch.inference_mode():
            eng(warm)
    rows = []
    for frac in SIZES:
        prev_t, full_t, costs, fallbacks = [], [], [], 0
        for k in range(n):
            lab = brush(lab, frac, rng, int(rng.integers(1, opt.label_nc + 1)))
            t_lab = torch.from_numpy(lab)[None]
            times: dict[int, list[float]] = {0: [], 1: []}
            for rep in range(repeats):  # alternating; the fastest of each (the machine may be shared)
                for which in ((0, 1) if (k + rep) % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    if which == 0:
                        image, info = inc.preview(state, t_lab)
                    if which == 1 or image is None:  # a declined preview costs the caller's full pass too
                        with torch.inference_mode():
                            eng(t_lab)
                    times[which].append(time.perf_counter() - t0)
            fallbacks += image is None
            costs.append(info.cost)
            prev_t.append(min(times[0]))
            full_t.append(min(times[1]))
            state = inc.full(t_lab, None, None, size)  # the final pass refreshes the cache
        ratios = [f / p for f, p in zip(full_t, prev_t)]
        rows.append({"frac": frac, "preview": statistics.median(prev_t), "full": statistics.median(full_t),
                     "ratio": statistics.median(ratios), "min_ratio": min(ratios), "cost": statistics.mean(costs),
                     "fallbacks": fallbacks, "n": n})
    return rows


def fidelity(n: int) -> list[dict]:
    from spadegan.data.landscapes import generate_scene
    from spadegan.synthesize import Synthesizer, builtin_checkpoint

    syn = Synthesizer.from_checkpoint(builtin_checkpoint(), device="cpu", precision="fp32")
    rows = []
    for frac in SIZES:
        rng = np.random.default_rng(1)
        scores, fallbacks = [], 0
        for k in range(n):
            lab = generate_scene(100 + k, size=syn.height, width=syn.width)[0].astype(np.int64)
            s = syn.session(seed=k)
            s.update(lab)
            preview = s.update(brush(lab, frac, rng, int(rng.integers(0, syn.label_nc))))
            if not s.last.preview:
                fallbacks += 1
                continue
            exact = s.refine()
            mse = np.mean((preview.astype(np.float64) - exact) ** 2)
            scores.append(99.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse))
        rows.append({"frac": frac, "psnr": statistics.mean(scores) if scores else float("nan"),
                     "min": min(scores) if scores else float("nan"), "fallbacks": fallbacks, "n": n})
    return rows


def app_latency(n: int) -> list[dict]:
    from fastapi.testclient import TestClient
    from PIL import Image

    from spadegan.app.adapter import AppBackend
    from spadegan.app.server import create_app
    from spadegan.synthesize import Synthesizer

    G, opt = ade20k_generator()
    syn = Synthesizer(G, device="cpu", precision="fp32", consume=True)
    lab, _ = ade20k_map(opt.crop_size)
    rng = np.random.default_rng(2)

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.uint8), mode="L").save(buf, format="PNG")
        return buf.getvalue()

    rows = []
    with TestClient(create_app(AppBackend(syn), batch_wait_ms=0)) as c:
        def post(a: np.ndarray, **data: str) -> tuple[float, str]:
            t0 = time.perf_counter()
            r = c.post("/api/synthesize", files={"label": ("l.png", png(a), "image/png")}, data={"seed": "1", **data})
            r.raise_for_status()
            return time.perf_counter() - t0, r.headers.get("X-Preview", "-")

        post(lab, painter="bench", final="1")
        for frac in SIZES:
            prev_t, full_t, previews = [], [], 0
            for k in range(n):
                lab = brush(lab, frac, rng, int(rng.integers(1, opt.label_nc + 1)))
                t, flag = post(lab, painter="bench")
                prev_t.append(t)
                previews += flag == "1"
                full_t.append(post(lab)[0])
                post(lab, painter="bench", final="1")  # the pause: the exact image, cache refreshed
            rows.append({"frac": frac, "preview": statistics.median(prev_t), "full": statistics.median(full_t),
                         "previews": previews, "n": n})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strokes", type=int, default=8, help="strokes per size")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="timings per stroke and path (the fastest counts)")
    p.add_argument("--skip_app", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    head = (f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"load average at start {os.getloadavg()[0]:.2f}")
    print(head)
    print("\n1. Latency, ADE20K 256 px ngf 64 (random weights), ADE_val_00000001, engine fp32\n")
    print("| stroke | preview ms | full ms | speed-up (median) | min | est. cost | fallbacks |")
    print("|---|---|---|---|---|---|---|")
    for r in latency(args.strokes, args.repeats):
        print(f"| {100 * r['frac']:g} % | {_ms(r['preview'])} | {_ms(r['full'])} | {r['ratio']:.1f}x | "
              f"{r['min_ratio']:.1f}x | {r['cost']:.2f} | {r['fallbacks']}/{r['n']} |")
    print("\n2. Preview fidelity, built-in model (128 px landscapes), PSNR vs the full pass, whole image\n")
    print("| stroke | mean PSNR dB | min dB | full-pass fallbacks |")
    print("|---|---|---|---|")
    for r in fidelity(max(args.strokes, 12)):
        print(f"| {100 * r['frac']:g} % | {r['psnr']:.1f} | {r['min']:.1f} | {r['fallbacks']}/{r['n']} |")
    if not args.skip_app:
        print("\n3. App end to end (client -> PNG, in-process ASGI client), ADE20K 256 px\n")
        print("| stroke | painter request ms (preview) | plain request ms (full) | previews |")
        print("|---|---|---|---|")
        for r in app_latency(max(2, args.strokes // 2)):
            print(f"| {100 * r['frac']:g} % | {_ms(r['preview'])} | {_ms(r['full'])} | {r['previews']}/{r['n']} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
