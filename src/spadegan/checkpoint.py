"""Checkpoints: saving networks, loading of official and spadegan files, mismatch diagnostics.

Networks are stored exactly as the official code stores them (`<epoch>_net_<G|D|E>.pth`,
a plain state_dict), so files move freely between spadegan and the official code. A
checkpoint folder (`checkpoints/<name>/`) also holds the options (`opt.txt`/`opt.pkl` from
the official code, plus `opt.json` from spadegan), which `load_checkpoint` reads so users
need not repeat `--label_nc` and friends. `.safetensors` weights written by
`spadegan export --format safetensors` (`save_network_safetensors`) carry the options in their
metadata, used when no options file is beside them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .device import say_once
from .errors import SpadeganError, UnsafeFileError
from .fileio import (MAX_OPTIONS_BYTES, atomic_torch_save, key_differences, read_safetensors_json,
                     read_state_dict, write_safetensors)
from .options import Options, load_options_file, options_from_dict

#: Weight file suffixes in lookup order (see `weights_file`).
WEIGHT_SUFFIXES = (".pth", ".safetensors")
#: The metadata key of the options (JSON of `Options.to_dict()`) in our .safetensors files.
OPTIONS_METADATA_KEY = "spadegan_options"


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, "module") and isinstance(net.module, nn.Module):
            net = net.module
        elif hasattr(net, "_orig_mod"):
            net = net._orig_mod
        else:
            return net


def network_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the state_dict, as the official `save_network` stores it."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(net).state_dict().items()}


def save_network(net: nn.Module, which: str, epoch: str | int, folder: str | os.PathLike) -> Path:
    path = Path(folder) / f"{epoch}_net_{which}.pth"
    atomic_torch_save(network_state_dict(net), path)
    return path


def save_network_safetensors(net: nn.Module, which: str, path: str | os.PathLike) -> Path:
    """Write `net`'s state_dict as .safetensors with its options (`net.opt`) as metadata."""
    opt = unwrap(net).opt
    meta = {OPTIONS_METADATA_KEY: json.dumps(opt.to_dict(), sort_keys=True), "spadegan_network": which}
    write_safetensors(path, network_state_dict(net), meta)
    return Path(path)


def safetensors_options(path: str | os.PathLike) -> dict[str, Any] | None:
    """The options stored in a .safetensors file's metadata (see `save_network_safetensors`),
    None when it has none; a SpadeganError naming the file when they are not a JSON object."""
    return read_safetensors_json(path, OPTIONS_METADATA_KEY, MAX_OPTIONS_BYTES, "the options")


# ---- diagnostics ---------------------------------------------------------------------------
def infer_generator_config(sd: dict[str, Any]) -> dict[str, Any]:
    """What a SPADE/pix2pixHD generator state_dict says about the options it was made with
    (read from its tensors; other values, which a strict load reports, are ignored)."""
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    info: dict[str, Any] = {}
    if "fc.weight" in sd:
        info["netG"] = "spade"
        fc = sd["fc.weight"]
        info["use_vae"] = fc.dim() == 2
        if fc.dim() == 4:
            info["semantic_nc"] = fc.shape[1]
            info["ngf"] = fc.shape[0] // 16
        else:
            info["z_dim"] = fc.shape[1]
        shared = sd.get("head_0.norm_0.mlp_shared.0.weight")
        if shared is not None:
            info["semantic_nc"] = shared.shape[1]
            info["spade_kernel"] = shared.shape[-1]
        if "head_0.conv_0.weight_orig" in sd:
            info["ngf"] = sd["head_0.conv_0.weight_orig"].shape[0] // 16
        elif "head_0.conv_0.weight" in sd:
            info["ngf"] = sd["head_0.conv_0.weight"].shape[0] // 16
        info["spectral"] = "head_0.conv_0.weight_orig" in sd
        info["batch_stats"] = "head_0.norm_0.param_free_norm.running_mean" in sd
        info["num_upsampling_layers"] = "most" if any(k.startswith("up_4.") for k in sd) else "normal|more"
    elif any(k.startswith("model.") for k in sd):
        info["netG"] = "pix2pixhd"
        first = next(v for k, v in sd.items() if k.startswith("model.1") and v.dim() == 4)
        info["semantic_nc"] = first.shape[1]
        info["ngf"] = first.shape[0]
    return info


def describe_mismatch(net: nn.Module, sd: dict[str, torch.Tensor], opt: Options, which: str,
                      path: str | os.PathLike) -> str:
    """A message naming the option that differs between the checkpoint and the options."""
    problems = []
    if which == "G":
        info = infer_generator_config(sd)
        if info.get("netG") and info["netG"] != opt.netG:
            problems.append(f"checkpoint is a --netG {info['netG']} generator, options give --netG {opt.netG}")
        if "semantic_nc" in info and info["semantic_nc"] != opt.semantic_nc:
            problems.append(f"checkpoint was trained with semantic_nc={info['semantic_nc']}, options give "
                            + (f"{opt.semantic_nc} (--label_nc 0: input_nc={opt.input_nc} label image "
                               "channels); check --label_nc and --input_nc" if opt.image_label else
                               f"{opt.semantic_nc} (label_nc={opt.label_nc}"
                               f"{' + dontcare' if opt.contain_dontcare_label else ''}"
                               f"{'' if opt.no_instance else ' + instance edges'}); check --label_nc, "
                               "--contain_dontcare_label and --no_instance"))
        if "ngf" in info and info["ngf"] != opt.ngf:
            problems.append(f"checkpoint has ngf={info['ngf']}, options give --ngf {opt.ngf}")
        if "use_vae" in info and info["use_vae"] != opt.use_vae:
            problems.append(f"checkpoint was trained {'with' if info['use_vae'] else 'without'} "
                            f"--use_vae, options {'set' if opt.use_vae else 'do not set'} it")
        if info.get("netG") == "spade" and opt.netG == "spade":
            if "spade_kernel" in info and f"{info['spade_kernel']}x" not in opt.norm_G:
                problems.append(f"checkpoint uses {info['spade_kernel']}x{info['spade_kernel']} SPADE "
                                f"kernels, --norm_G is {opt.norm_G}")
            if info["spectral"] != ("spectral" in opt.norm_G):
                problems.append(f"checkpoint was trained {'with' if info['spectral'] else 'without'} "
                                f"spectral norm, --norm_G is {opt.norm_G}")
            if info["batch_stats"] == ("instance" in opt.norm_G):
                problems.append(f"checkpoint's SPADE uses {'batch' if info['batch_stats'] else 'instance'}"
                                f" norm, --norm_G is {opt.norm_G}")
            if (info["num_upsampling_layers"] == "most") != (opt.num_upsampling_layers == "most"):
                problems.append(f"checkpoint has num_upsampling_layers={info['num_upsampling_layers']}, "
                                f"options give {opt.num_upsampling_layers}")
    if not problems:
        diff = key_differences(net.state_dict(), sd)
        shapes = [f"{k}: checkpoint {theirs} vs network {ours}" for k, theirs, ours in diff.shapes]
        for label, items in (("missing keys", diff.missing), ("unexpected keys", diff.unexpected),
                             ("values that are not tensors", diff.not_tensors), ("shape mismatches", shapes)):
            if items:
                problems.append(f"{label}: {', '.join(items[:4])}")
    return f"{path} does not fit the options: " + "; ".join(problems)


def load_network_weights(net: nn.Module, path: str | os.PathLike, opt: Options, which: str) -> nn.Module:
    """Load `path` into `net` with strict=True, or raise a SpadeganError saying what differs."""
    sd = read_state_dict(path)
    if key_differences(net.state_dict(), sd):
        raise SpadeganError(describe_mismatch(net, sd, opt, which, path))
    net.load_state_dict(sd, strict=True)
    return net


# ---- the public loader ---------------------------------------------------------------------
def weights_file(folder: str | os.PathLike, which: str = "G", which_epoch: str = "latest") -> Path | None:
    """`<which_epoch>_net_<which>.pth` in `folder`, else the same name with `.safetensors`; None if neither.

    The one lookup rule for weight files: wherever a `.pth` is accepted, a `.safetensors`
    file of the same name is too; when a folder holds both, the `.pth` is read.
    """
    for suffix in WEIGHT_SUFFIXES:
        f = Path(folder) / f"{which_epoch}_net_{which}{suffix}"
        if f.is_file():
            return f
    return None


def companion_weights(weights: str | os.PathLike, which: str) -> Path | None:
    """The `which` (G, D or E) weights of the same epoch as the `<epoch>_net_<X>` file `weights`.

    The file itself when X is `which`; else found beside it by the `weights_file` rule. None
    for names not of that form or a missing companion.
    """
    weights = Path(weights)
    stem = weights.name[:-len(weights.suffix)] if weights.suffix else weights.name
    epoch, sep, net = stem.rpartition("_net_")
    if not sep or not net:
        return None
    if net == which:
        return weights
    return weights_file(weights.parent, which, epoch)


def averaged_generator(weights: Path, required: bool = False, hint: str = "") -> Path:
    """The moving average `<epoch>_net_EMA` beside the generator weights `<epoch>_net_G`, if
    the run kept one (--ema_decay), saying so once; else `weights` itself (or, `required`,
    an error)."""
    averaged = companion_weights(weights, "EMA")
    if averaged is not None:
        say_once(f"using the moving average of the generator's weights ({averaged})"
                 + (f"; {hint} for the last weights" if hint else ""))
        return averaged
    if required:
        raise SpadeganError(f"no {weights.name.replace('_net_G', '_net_EMA')} beside {weights}: that run kept no "
                            "moving average (--ema_decay)")
    return weights


def resolve_checkpoint(path_or_dir: str | os.PathLike, which: str = "G",
                       which_epoch: str = "latest") -> tuple[Path, Path]:
    """(weights file, folder with options) for a checkpoint folder or a weights file."""
    p = Path(path_or_dir)
    if p.is_dir():
        f = weights_file(p, which, which_epoch)
        if f is None:
            have = sorted(x.name for s in WEIGHT_SUFFIXES for x in p.glob(f"*_net_*{s}"))
            raise SpadeganError(f"no {which_epoch}_net_{which}.pth (or .safetensors) in {p}"
                                + (f" (found: {', '.join(have[:6])})" if have else ""))
        return f, p
    if p.is_file():
        if which != "G":
            f = companion_weights(p, which)
            if f is None:
                raise SpadeganError(f"no {p.name.replace('_net_G', f'_net_{which}')} beside {p}")
            return f, p.parent
        return p, p.parent
    raise SpadeganError(f"checkpoint {p} does not exist")


def checkpoint_options(path_or_dir: str | os.PathLike, train: bool = False, which_epoch: str = "latest",
                       **overrides: Any) -> Options:
    """Options saved with a checkpoint (ours: opt.json; official: opt.pkl / opt.txt), else those
    in the metadata of its .safetensors weights (the file given, or the folder's
    `<which_epoch>_net_G` file)."""
    p = Path(path_or_dir)
    folder = p if p.is_dir() else p.parent
    try:
        saved = load_options_file(folder)
    except UnsafeFileError:
        raise
    except SpadeganError as e:
        weights = weights_file(p, "G", which_epoch) if p.is_dir() else p
        saved = safetensors_options(weights) if weights is not None and weights.suffix == ".safetensors" else None
        if saved is None:
            raise SpadeganError(f"{e}: pass the training flags (--label_nc, --contain_dontcare_label, "
                                "--no_instance, --ngf, ...) or keep opt.txt beside the weights") from None
    return options_from_dict(saved, train=train, **overrides)


def load_checkpoint(path_or_dir: str | os.PathLike, which: str = "G", opt: Options | None = None,
                    which_epoch: str = "latest", device: str | torch.device = "cpu",
                    ema: bool | None = None, impl: str | None = None, **oasis_flags: Any) -> nn.Module:
    """Build the network `which` (G, D or E) from the checkpoint's options and load its weights.

    `path_or_dir` is a checkpoint folder (reads `<which_epoch>_net_<which>.pth`, or
    `.safetensors`, and the options saved there) or a weights file (options from its
    folder unless `opt` is given; without an options file there, from the metadata of
    a .safetensors file). For G from a folder of a run trained with --ema_decay, the
    moving average `<which_epoch>_net_EMA.pth` is loaded instead, saying so once
    (`ema=False`: G itself; `ema=True`: the average or an error).
    Returns the network in eval mode; the options used are `net.opt` (as for every network
    `networks.define_*` builds). `impl` (G only): its SPADE implementation, recorded as
    `G.spade_impl`: "dense" (the default: the reference, called as `G(semantics)` whatever
    --spade_impl the run trained with), "sparse" (reads `LabelCodes`), or "auto": --spade_impl
    resolved for `device` (`layers.label_codes.spade_impl_for`: sparse on the CPU, dense on CUDA).

    An official OASIS run (boschresearch/OASIS: `<run>/models/<tag>_{G,EMA,D}.pth`, or one of
    those files) is loaded by `oasis_checkpoint.load_oasis_run`: G is the EMA generator
    `<which_epoch>_EMA.pth` as the official test.py runs it (`ema=False`: `<which_epoch>_G.pth`),
    an `OASISGenerator` called as `G(semantics, z)`; D is the U-Net discriminator, called on
    an image alone (OASIS' D reads no label) and returning (B, semantic_nc + 1, H, W) logits,
    channel 0 = fake. `oasis_flags` are the official test flags (dataset_mode, channels_G,
    z_dim, ...) for runs without opt.pkl / opt.txt; `net.oasis_opt` holds the options used.
    """
    from . import networks  # late import: networks import options, not the reverse
    from .layers.label_codes import spade_impl_for
    from .oasis_checkpoint import is_oasis_run

    if impl is not None and which != "G":
        raise SpadeganError(f"impl={impl!r} is a generator's SPADE implementation; {which} has none")
    if is_oasis_run(path_or_dir):
        if impl not in (None, "auto", "dense"):
            raise SpadeganError(f"{path_or_dir} is an official OASIS run: its generator reads the one-hot "
                                f"semantics tensor, it has no impl={impl!r}")
        return _load_oasis(path_or_dir, which, opt, which_epoch, device, ema, oasis_flags)
    if oasis_flags:
        raise SpadeganError(f"{path_or_dir} is not an official OASIS run, so the OASIS flag(s) "
                            f"{', '.join(sorted(oasis_flags))} do not apply; pass Options as opt instead")

    weights, folder = resolve_checkpoint(path_or_dir, which, which_epoch)
    if which == "G" and ema is not False and Path(path_or_dir).is_dir():
        weights = averaged_generator(weights, required=bool(ema), hint=f"pass the {weights.name} file itself")
    if opt is None:
        opt = checkpoint_options(weights, train=(which == "D"))
    elif which == "D" and not opt.isTrain:
        opt = opt.replace(isTrain=True)
    build = {"G": networks.define_G, "D": networks.define_D, "E": networks.define_E}
    if which not in build:
        raise SpadeganError(f"which must be G, D or E, not {which!r}")
    if which == "G":  # pix2pixhd's and OASIS' generators are dense
        impl = spade_impl_for(opt, device) if impl == "auto" else impl or "dense"
        net = build[which](opt, init=False, impl=impl)
    else:
        net = build[which](opt, init=False)
    load_network_weights(net, weights, opt, which)
    return net.eval().to(device)


def _load_oasis(path: str | os.PathLike, which: str, opt: Any, which_epoch: str, device: str | torch.device,
                ema: bool | None, flags: dict[str, Any]) -> nn.Module:
    """`load_checkpoint` for an official OASIS run (see there)."""
    from .oasis_checkpoint import is_oasis_file, load_oasis_run

    if opt is not None:
        raise SpadeganError(f"{path} is an official OASIS run: give its test flags (dataset_mode=..., "
                            "channels_G=..., ...) instead of spadegan Options")
    if which not in ("G", "D"):
        raise SpadeganError(f"{path} is an official OASIS run: it has a generator (G) and a discriminator (D), "
                            f"not {which!r} (OASIS has no encoder)")
    if is_oasis_file(path):  # the file says which network and tag it holds
        if (which == "D") != Path(path).name.endswith("_D.pth"):
            raise SpadeganError(f"{path} is an OASIS {'generator' if which == 'D' else 'discriminator'} file; "
                                f"load its <tag>_{'D' if which == 'D' else 'EMA'}.pth for {which}")
        return load_oasis_run(path, device=device, **flags)
    network = "D" if which == "D" else ("G" if ema is False else "EMA" if ema else None)
    return load_oasis_run(path, which_epoch, network, device=device, **flags)
