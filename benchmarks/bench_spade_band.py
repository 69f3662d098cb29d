"""One SPADE layer's gamma/beta (forward + backward): the sparse lookup path against the
dense fallback, per generator resolution, on real ADE20K label maps.

For each of the first `--maps` annotations in ../shared/data/ade20k_sample (resized to 256
px, as the `ade20k` training benchmark feeds them) and each resolution of an ngf-64 SPADE
generator (8-256 px, 1024-128 channels), prints the pixels of the boundary band, its
distinct hidden windows and distinct output rows (`CodeLevel.band_plan`), the times of both
paths (minimum of `--rounds`), their ratio and which one the automatic choice takes.

    python benchmarks/bench_spade_band.py [--maps 3] [--rounds 3] [--dataset ade20k|coco] [--engine]

`--engine` times the synthesis engine's forward-only gamma/beta instead (`engine._SpadeGroup`
of the same layer folded, channels-last dense convolution against the band path), with the
choice its threshold (`INFERENCE_SPARSE_THRESHOLD`) makes; `--dataset coco` reads the COCO-Stuff
sample annotations with their instance edges (182 classes + dontcare).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from spadegan.device import describe_hardware, keep_freed_cpu_memory
from spadegan.layers import SPADE
from spadegan.layers.label_codes import LabelCodes
from spadegan.layers.spade import INFERENCE_SPARSE_THRESHOLD, runs_dense

from bench_train import cpu_name  # the benchmarks' folder is on sys.path when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
ADE = os.path.join(HERE, "..", "..", "shared", "data", "ade20k_sample", "annotations")
COCO = os.path.join(HERE, "..", "..", "shared", "data", "coco_stuff_sample")
LEVELS = ((8, 1024), (16, 1024), (32, 1024), (64, 512), (128, 256), (256, 128))


class _Opt:
    label_nc, contain_dontcare_label, no_instance = 150, True, True


class _CocoOpt:
    label_nc, contain_dontcare_label, no_instance = 182, True, False


def _codes(path: str, coco: bool) -> LabelCodes:
    """One annotation at 256 x 256 (nearest), dontcare (255) mapped to label_nc."""
    opt = _CocoOpt if coco else _Opt
    label = np.array(Image.open(path).resize((256, 256), Image.NEAREST)).astype(np.int64)
    label = torch.from_numpy(np.where(label == 255, opt.label_nc, label))[None]
    inst = None
    if coco:
        inst_path = os.path.join(COCO, "val_inst", os.path.basename(path))
        inst = torch.from_numpy(np.array(Image.open(inst_path).resize((256, 256), Image.NEAREST)).astype(np.int64))[None]
    return LabelCodes.from_label(label, inst, opt)


def _time_engine(layer: SPADE, codes: LabelCodes, size: int, threshold: float, rounds: int) -> float:
    """ms of the engine's forward-only gamma/beta of `layer` (folded) at size x size."""
    from spadegan.engine.engine import _SpadeGroup
    from spadegan.engine.fold import fold_spade
    group = _SpadeGroup([fold_spade(layer.eval(), "spadesyncbatch3x3")], codes.label_channels, codes.instance,
                        torch.float32)

    def step() -> None:
        fresh = LabelCodes(codes.code, codes.label_channels, codes.instance)  # the plan is built per forward
        group.gb_maps(fresh.at(size, size), threshold, False)(0)

    with torch.inference_mode():
        return _min_ms(step, rounds)


def _min_ms(step, rounds: int) -> float:
    """The minimum of `rounds` timed calls of `step` (ms), after one warm-up call (which also
    builds the level's cached index arithmetic where it is kept)."""
    step()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def _time(layer: SPADE, codes: LabelCodes, size: int, threshold: float, rounds: int) -> float:
    grad = torch.randn(1, layer.mlp_gamma.out_channels, size, size)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        scale, shift = layer.modulation_sparse(codes, size, size, threshold=threshold)
        torch.autograd.backward([scale, shift], [grad, grad])

    return _min_ms(step, rounds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dataset", choices=["ade20k", "coco"], default="ade20k")
    ap.add_argument("--engine", action="store_true", help="the engine's forward-only gamma/beta instead")
    args = ap.parse_args(argv)
    coco = args.dataset == "coco"
    folder = os.path.join(COCO, "val_label") if coco else ADE
    files = sorted(glob.glob(os.path.join(folder, "*.png")))[:args.maps]
    if not files:
        print(f"no {args.dataset} annotations in {folder}", file=sys.stderr)
        return 1
    timer, threshold = (_time_engine, INFERENCE_SPARSE_THRESHOLD) if args.engine else (_time, None)
    keep_freed_cpu_memory()  # as training does
    torch.manual_seed(0)
    hw = describe_hardware("cpu")
    machine = f"{cpu_name()} ({hw['features']}), torch {torch.__version__}, {hw['threads']} threads"
    print(machine)
    print(f"{'map':<18} {'px':>4} {'C':>5} {'band %':>7} {'windows':>8} {'rows':>6} "
          f"{'lookup ms':>10} {'dense ms':>9} {'ratio':>6} {'auto':>7}")
    rows = []
    for path in files:
        codes = _codes(path, coco)
        for size, channels in LEVELS:
            layer = SPADE("spadesyncbatch3x3", channels, codes.one_hot_nc)
            level = codes.at(size, size)
            windows = level.hidden_windows(1, 1)[0].numel()
            auto = "dense" if runs_dense(level, 1, 1, threshold) else "lookup"
            lookup, dense = (timer(layer, codes, size, th, args.rounds) for th in (float("inf"), float("-inf")))
            row = {"map": os.path.basename(path), "size": size, "channels": channels,
                   "band_fraction": round(level.boundary_fraction(1), 3), "windows": windows,
                   "rows": level.band_plan(1, 1).bags.shape[0], "lookup_ms": round(lookup, 1),
                   "dense_ms": round(dense, 1), "auto": auto}
            rows.append(row)
            print(f"{row['map']:<18} {size:>4} {channels:>5} {100 * row['band_fraction']:>6.0f}% "
                  f"{windows:>8} {row['rows']:>6} {lookup:>10.1f} {dense:>9.1f} {lookup / dense:>6.2f} {auto:>7}",
                  flush=True)
    print(json.dumps({"bench": "spade_band", "engine": args.engine, "dataset": args.dataset, "machine": machine,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
