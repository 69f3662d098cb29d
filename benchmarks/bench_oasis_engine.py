"""OASIS synthesis speed: the published OASIS generator (eval, fp32, NCHW, no_grad) against
`engine.oasis_engine.OASISEngine` (fp32, inference_mode), interleaved repetition by repetition.

    python benchmarks/bench_oasis_engine.py [--channels_G 64 16] [--size 256] [--reps 3]

ADE20K setting (151 OASIS channels, z_dim 64, 256 x 256, batch 1), random weights with the
BatchNorm statistics calibrated on the label map and conv_img scaled so the output is not
saturated. The label map is the first ../shared ADE20K sample annotation (ids = OASIS'
channels for ADE20K, 255 -> 0), or a blocky random map when absent. z: one vector per image.
Printed per width: median ms of the network and of the engine, the speed-up, the engine with
its sparse gamma/beta off (band_threshold 0), the max |diff| of the engine against the network.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from spadegan.engine.oasis_engine import OASISEngine
from spadegan.networks.oasis import OASISGenerator, OASISOptions
from spadegan.oasis_checkpoint import oasis_label_channels, oasis_semantics
from spadegan.synthesize.oasis import resize_ids_nearest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ade20k_sample" / "annotations"


def label_channels(size: int) -> tuple[torch.Tensor, str]:
    """(1, size, size) OASIS channels and where they came from."""
    pngs = sorted(SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []
    if pngs:
        from PIL import Image
        ids = resize_ids_nearest(np.asarray(Image.open(pngs[0])), (size, size))
        return oasis_label_channels(ids[None], "ade20k"), pngs[0].name
    g = torch.Generator().manual_seed(0)
    ch = torch.randint(0, 151, (1, size // 16, size // 16), generator=g)
    return ch.repeat_interleave(16, 1).repeat_interleave(16, 2), "random 16x16 blocks"


def calibrated(channels_G: int, size: int, sem: torch.Tensor) -> OASISGenerator:
    """A random generator with BatchNorm statistics of `sem` and an unsaturated output."""
    torch.manual_seed(0)
    G = OASISGenerator(OASISOptions(semantic_nc=151, crop_size=size, channels_G=channels_G, dataset_mode="ade20k"))
    for m in G.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        G.train()(sem, torch.randn(1, 64))
        pre = {}
        hook = G.conv_img.register_forward_hook(lambda m, i, o: pre.__setitem__("o", o))
        G.eval()(sem, torch.randn(1, 64))
        hook.remove()
        scale = 0.7 / pre["o"].std().item()
        G.conv_img.weight.mul_(scale)
        G.conv_img.bias.mul_(scale)
    return G


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels_G", type=int, nargs="+", default=[64, 16])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    ch, source = label_channels(a.size)
    sem = oasis_semantics(ch, 151)
    print(f"{cpu.split(':', 1)[-1].strip()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"labels: {source}; batch 1, {a.size}x{a.size}, fp32, median of {a.reps}")
    for cg in a.channels_G:
        G = calibrated(cg, a.size, sem)
        E, dense = OASISEngine.from_generator(G), OASISEngine.from_generator(G)
        for blk in dense.blocks:
            blk.spades.band_threshold = 0.0  # gamma/beta as dense convs everywhere
        z = torch.randn(1, 64)
        runs = {"network": (lambda: G(sem, z)), "engine": (lambda: E(ch, z)), "dense": (lambda: dense(ch, z))}
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.inference_mode():
            want, got = G(sem, z), E(ch, z)  # warm-up, and the parity
            dense(ch, z)
            for _ in range(a.reps):
                for name, fn in runs.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        n, e, d = (statistics.median(times[k]) * 1e3 for k in runs)
        print(f"channels_G {cg:3d}: network {n:7.0f} ms  engine {e:7.0f} ms  speed-up {n / e:5.2f}x  "
              f"(dense gamma/beta: {d:7.0f} ms, {n / d:5.2f}x)  max |diff| {(want - got).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
