"""Copy a finished `spadegan train` run into the package as the built-in model.

Usage (how `src/spadegan/pretrained/landscapes/` was made):

    python scripts/ship_builtin_model.py /work/runs/checkpoints/landscapes src/spadegan/pretrained/landscapes

Writes `latest_net_G.pth` (and `latest_net_E.pth` for VAE runs) with the large weight
tensors stored as float16, halving the package size; spectral-norm vectors, BatchNorm
statistics, biases and small tensors stay float32 (they are tiny, and the power-iteration
vectors and running variances are the parts sensitive to rounding). Loading copies the values
into float32 parameters, so nothing else changes. `opt.json` is copied with the machine's
paths replaced by generic ones. Writes are atomic.

When the run kept a moving average of G (`--ema_decay`), `<epoch>_net_EMA.pth` is shipped as
the generator (what `spadegan synthesize`/`eval` use for that run by default); `--no_ema`
ships the last weights `<epoch>_net_G.pth` instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from spadegan.checkpoint import averaged_generator, weights_file
from spadegan.fileio import atomic_torch_save, atomic_write_bytes, read_state_dict

HALF_MIN_NUMEL = 4097  # weight tensors at least this large are stored as float16
KEEP_FP32 = ("weight_u", "weight_v", "running_mean", "running_var", "num_batches_tracked", "bias")


def halve(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict with its large float weights as float16."""
    out = {}
    for k, v in state.items():
        big = v.is_floating_point() and v.numel() >= HALF_MIN_NUMEL and not k.endswith(KEEP_FP32)
        out[k] = v.half() if big else v
    return out


def generic_options(opt: dict) -> dict:
    """Options with this machine's folders replaced by the defaults a user would have."""
    opt = dict(opt)
    opt["checkpoints_dir"] = "./checkpoints"
    if opt.get("dataroot"):
        opt["dataroot"] = f"./datasets/{Path(opt['dataroot']).name}"
    opt["continue_train"] = False
    return opt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="checkpoints/<name> folder of the finished run")
    p.add_argument("out", type=Path, help="package folder to write, e.g. src/spadegan/pretrained/landscapes")
    p.add_argument("--which_epoch", default="latest")
    p.add_argument("--no_ema", action="store_true", help="ship <epoch>_net_G.pth even when the run has an EMA")
    a = p.parse_args(argv)
    opt_file = a.run / "opt.json"
    if not opt_file.is_file():
        print(f"error: {opt_file} not found: not a spadegan run folder", file=sys.stderr)
        return 2
    opt = json.loads(opt_file.read_text())
    nets = ["G"] + (["E"] if opt.get("use_vae") else [])
    a.out.mkdir(parents=True, exist_ok=True)
    for net in nets:
        # the project's lookup rules: .pth or .safetensors, and the EMA beside G when there is one
        src = weights_file(a.run, net, a.which_epoch) or a.run / f"{a.which_epoch}_net_{net}.pth"
        if net == "G" and not a.no_ema:
            src = averaged_generator(src)
        dst = a.out / f"latest_net_{net}.pth"
        atomic_torch_save(halve(read_state_dict(src)), dst)
        print(f"{src} -> {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
    atomic_write_bytes(a.out / "opt.json", json.dumps(generic_options(opt), indent=1, sort_keys=True).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
