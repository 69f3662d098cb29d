"""Official OASIS runs (boschresearch/OASIS) loaded as they are: files, options, label order.

The official training (`utils.save_networks`) writes `<checkpoints_dir>/<name>/models/<tag>_G.pth`,
`<tag>_D.pth` and `<tag>_EMA.pth` (tag `best`, `latest` or an iteration; no EMA with --no_EMA),
each the plain state_dict of the bare network, and `<name>/opt.pkl` / `opt.txt` at the start
of training. `load_oasis_run(path, ...)` accepts the run folder, its `models/` folder or one
of those files and returns the network in eval mode:

* `network="EMA"` (what the official test.py runs; the default unless the run says
  --no_EMA, then `"G"`, as test.py does), `"G"`: an `networks.oasis.OASISGenerator`;
  `"D"`: spadegan's `OASISDiscriminator` (the same U-Net as the official one; its keys are
  mapped from the official `body_down.*` / `body_up.*` / `layer_up_last.*`, see `official_d_key`).
* Options: `opt.pkl` through the restricted unpickler (`fileio.load_options_pickle`), else
  `opt.txt`; neither is needed: the caller passes the official test flags instead
  (`dataset_mode` and any non-default `channels_G`, `z_dim`, `num_res_blocks`,
  `param_free_norm`, `spade_ks`, `no_3dnoise`, `no_spectral_norm`, `no_EMA`), as the
  official test.py needs them. Flags given override the saved ones (said once when they
  differ); defaults taken for flags neither saved nor given are said once. opt.pkl is
  written before the dataset class sets label_nc / crop_size / aspect_ratio, so those come
  from `OASIS_DATASETS` (or the caller's `label_nc`, `crop_size`, `aspect_ratio`).
* Weights are read with `weights_only=True` (`fileio.read_state_dict`) and loaded strictly:
  a missing, unexpected or misshapen key is a SpadeganError naming the file, the keys and
  the option that probably differs.

A generator written by `spadegan export --format safetensors` (`<tag>_<EMA|G>.safetensors`:
the official state_dict names, the options as metadata, `oasis_options_metadata`) loads the
same way, options and tag from its metadata (`is_oasis_safetensors`).

Label order: OASIS puts dontcare in channel 0 for every dataset; `oasis_label_channels`
maps a dataset's own ids to OASIS' channels and `oasis_semantics` makes the one-hot input.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .device import say_once
from .errors import SpadeganError
from .fileio import (key_differences, load_options_pickle, read_safetensors_json, read_safetensors_metadata,
                     read_state_dict)
from .networks.discriminator import OASISDiscriminator, oasis_depth
from .networks.oasis import OASISGenerator, OASISOptions
from .options import DATASET_MODES, load_options_file, options_from_dict


@dataclass(frozen=True)
class OASISDataset:
    """What an official OASIS dataset class sets (label_nc, crop_size, aspect_ratio) and how
    its ids become channels: channel = id + `shift`, dontcare (255) -> channel 0."""

    label_nc: int
    crop_size: int
    aspect_ratio: float
    max_id: int  # the largest id of the dataset's label maps (255 = dontcare aside)
    shift: int


#: The official dataset classes. ADE20K: id 0 ('other') is channel 0, class k channel k (the
#: official loader's `label - 1` is never stored); COCO-Stuff: class c (0..181) is channel
#: c + 1, 255 (unlabeled) channel 0; Cityscapes: labelIds k is channel k (0 = 'unlabeled';
#: channel 34 exists but no labelId uses it).
OASIS_DATASETS: dict[str, OASISDataset] = {
    "ade20k": OASISDataset(label_nc=150, crop_size=256, aspect_ratio=1.0, max_id=150, shift=0),
    "cityscapes": OASISDataset(label_nc=34, crop_size=512, aspect_ratio=2.0, max_id=34, shift=0),
    "coco": OASISDataset(label_nc=182, crop_size=256, aspect_ratio=1.0, max_id=181, shift=1),
}
#: The official architecture flags (config.py) and their defaults
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "channels_G": 64, "z_dim": 64, "num_res_blocks": 6, "param_free_norm": "syncbatch", "spade_ks": 3,
    "no_3dnoise": False, "no_spectral_norm": False, "no_EMA": False,
}
NETWORKS = ("EMA", "G", "D")
DONTCARE_ID = 255
_FILE_NAME = re.compile(r"^(?P<tag>.+)_(?P<net>G|D|EMA)\.pth$")


# ---- label ids -> OASIS channels ---------------------------------------------------------------
def oasis_label_channels(ids: torch.Tensor | np.ndarray, dataset_mode: str) -> torch.Tensor:
    """OASIS' channel (int64, same shape) for each id of a label map in the dataset's own ids.

    ADE20K: ids 0..150 as in the annotation PNGs, kept (0 'other' = OASIS' dontcare channel);
    COCO-Stuff: 0..181 -> 1..182 and 255 (unlabeled) -> 0; Cityscapes: labelIds 0..34 kept.
    In every mode 255, spadegan's dontcare value, goes to channel 0. Other ids raise a
    SpadeganError naming them and the valid range.
    """
    ds = _dataset(dataset_mode)
    if isinstance(ids, np.ndarray):  # a copy: arrays from PIL images are read-only
        ids = torch.from_numpy(np.array(ids, dtype=np.float64 if ids.dtype.kind == "f" else np.int64))
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point:
        if not torch.equal(ids, ids.round()):
            raise SpadeganError("label ids must be whole numbers; the label map holds fractional values")
    ids = ids.long()
    valid = ((ids >= 0) & (ids <= ds.max_id)) | (ids == DONTCARE_ID)
    if not bool(valid.all()):
        bad = torch.unique(ids[~valid])[:8].tolist()
        raise SpadeganError(f"label ids {bad} are not {dataset_mode} ids (0..{ds.max_id}, and {DONTCARE_ID} for "
                            "dontcare)")
    return torch.where(ids == DONTCARE_ID, torch.zeros_like(ids), ids + ds.shift)


def oasis_semantics(channels: torch.Tensor, semantic_nc: int) -> torch.Tensor:
    """The one-hot float input (B, semantic_nc, H, W) of OASIS channels given as (B, 1, H, W)
    or (B, H, W) (the official `preprocess_input` scatter)."""
    if channels.dim() == 3:
        channels = channels[:, None]
    if channels.dim() != 4 or channels.shape[1] != 1:
        raise SpadeganError(f"label channels must be (B, 1, H, W) or (B, H, W), got {tuple(channels.shape)}")
    channels = channels.long()
    if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= semantic_nc):
        raise SpadeganError(f"label channels {int(channels.min())}..{int(channels.max())} outside "
                            f"0..{semantic_nc - 1}")
    b, _, h, w = channels.shape
    return torch.zeros(b, semantic_nc, h, w, device=channels.device).scatter_(1, channels, 1.0)


def _dataset(dataset_mode: str) -> OASISDataset:
    if dataset_mode not in OASIS_DATASETS:
        raise SpadeganError(f"dataset_mode {dataset_mode!r} is not an official OASIS dataset "
                            f"({', '.join(OASIS_DATASETS)})")
    return OASIS_DATASETS[dataset_mode]


# ---- where the files are ------------------------------------------------------------------------
@dataclass(frozen=True)
class OASISRun:
    """One network of an official OASIS run, resolved: its weights file and options."""

    weights: Path
    network: str  # EMA, G or D
    which_epoch: str
    run_dir: Path  # the folder with opt.pkl / opt.txt (the official <checkpoints_dir>/<name>)
    opt: OASISOptions
    options_source: str  # "opt.pkl", "opt.txt" or "the flags given"


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.glob("*.pth"))
    if not names:
        return "it holds no .pth files"
    return "found: " + ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _locate(path: Path) -> tuple[Path, Path, re.Match | None]:
    """(run folder, models folder, the parsed file name when `path` is a weights file)."""
    if path.is_file():
        m = _FILE_NAME.match(path.name)
        if m is None:
            raise SpadeganError(f"{path} is not an official OASIS weights file (<tag>_G.pth, <tag>_D.pth or "
                                "<tag>_EMA.pth)")
        models = path.parent
        return (models.parent if models.name == "models" else models), models, m
    if not path.is_dir():
        raise SpadeganError(f"OASIS run {path} does not exist")
    if (path / "models").is_dir():
        return path, path / "models", None
    if path.name == "models" or any(_FILE_NAME.match(p.name) for p in path.glob("*.pth")):
        return (path.parent if path.name == "models" else path), path, None
    sub = sorted(p.name for p in path.iterdir() if p.is_dir())[:8]
    raise SpadeganError(f"{path} is not an official OASIS run folder: it has no models/ folder with "
                        f"<tag>_G.pth / <tag>_EMA.pth files" + (f" (subfolders: {', '.join(sub)})" if sub else ""))


def _weights_path(models: Path, which_epoch: str, network: str, no_EMA: bool) -> Path:
    f = models / f"{which_epoch}_{network}.pth"
    if f.is_file():
        return f
    hint = ""
    if network == "EMA" and no_EMA:
        hint = " (the run was trained with --no_EMA: load network='G')"
    raise SpadeganError(f"no {f.name} in {models}{hint}; {_listing(models)}")


def _resolve_file_choice(m: re.Match | Mapping[str, str] | None, which_epoch: str | None, network: str | None,
                         path: Path) -> tuple[str, str | None]:
    """(which_epoch, network or None) from the arguments and, for a file, its name."""
    if m is None:
        return ("best" if which_epoch is None else str(which_epoch)), network
    for given, named, what in ((which_epoch, m["tag"], "which_epoch"), (network, m["net"], "network")):
        if given is not None and str(given) != named:
            raise SpadeganError(f"{what}={given!r} was given with the file {path}, which is {what} {named!r}")
    return m["tag"], m["net"]


# ---- options ------------------------------------------------------------------------------------
_INTS = ("channels_G", "z_dim", "num_res_blocks", "spade_ks", "label_nc", "crop_size")
_BOOLS = ("no_3dnoise", "no_spectral_norm", "no_EMA")
_DATASET_KEYS = ("label_nc", "crop_size", "aspect_ratio")


def _coerce(key: str, value: Any, source: str) -> Any:
    """A flag's value with its official type, or a SpadeganError naming where it came from."""
    if key in _BOOLS:
        if isinstance(value, str) and value in ("True", "False"):
            return value == "True"
        ok = isinstance(value, bool)
    elif key in _INTS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key == "aspect_ratio":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise SpadeganError(f"OASIS option {key}={value!r} ({source}) is not a valid value")
    return value


def read_saved_oasis_options(run_dir: Path) -> tuple[dict[str, Any], str]:
    """(the options saved in the run folder, their file name): opt.pkl through the restricted
    unpickler, else opt.txt; ({}, "") when neither is there."""
    if (run_dir / "opt.pkl").is_file():
        return load_options_pickle(run_dir / "opt.pkl"), "opt.pkl"
    if (run_dir / "opt.txt").is_file():
        return load_options_file(run_dir / "opt.txt"), "opt.txt"
    return {}, ""


def oasis_options(saved: dict[str, Any], source: str, given: dict[str, Any], where: Path) -> OASISOptions:
    """OASISOptions from the saved options and the flags `given` (None = not given).

    Given flags win (said once where they differ from the saved ones); flags neither saved
    nor given take the official defaults (said once); label_nc, crop_size and aspect_ratio
    come from the official dataset class (`OASIS_DATASETS`) unless given.
    """
    src = f"the run's {source}" if source else ""
    values: dict[str, Any] = {}
    defaulted = []
    for key in ("dataset_mode", *ARCHITECTURE_DEFAULTS):
        g, s = given.get(key), saved.get(key)
        if g is not None:
            values[key] = _coerce(key, g, "given")
            if s is not None and _coerce(key, s, src) != values[key]:
                say_once(f"OASIS run {where}: {key}={values[key]!r} given, {src} says {s!r}; using {values[key]!r}")
        elif s is not None:
            values[key] = _coerce(key, s, src)
        elif key in ARCHITECTURE_DEFAULTS:
            values[key] = ARCHITECTURE_DEFAULTS[key]
            defaulted.append(f"{key}={values[key]}")
    if "dataset_mode" not in values:
        defaults = ", ".join(f"{k} {v}" for k, v in ARCHITECTURE_DEFAULTS.items())
        lack = f"no dataset_mode in its {source}" if source else "no opt.pkl or opt.txt"
        raise SpadeganError(f"OASIS run {where} has {lack}: pass dataset_mode ({', '.join(OASIS_DATASETS)}) "
                            f"and every architecture flag it was trained with that is not the official default "
                            f"({defaults})")
    mode = values["dataset_mode"]
    table = OASIS_DATASETS.get(mode)
    missing = []
    for key in _DATASET_KEYS:
        official = getattr(table, key) if table else saved.get(key)
        if given.get(key) is not None:
            values[key] = _coerce(key, given[key], "given")
            if official is not None and _coerce(key, official, src or "saved") != values[key]:
                say_once(f"OASIS {mode}: {key}={values[key]} given; the official dataset class sets {official}")
        elif official is not None:
            values[key] = _coerce(key, official, src or "OASIS_DATASETS")
        else:
            missing.append(key)
    if missing:
        raise SpadeganError(f"dataset_mode {mode!r} is not an official OASIS dataset ({', '.join(OASIS_DATASETS)}): "
                            f"pass {', '.join(missing)}")
    if defaulted:
        say_once(f"OASIS run {where}: no {'such flag in ' + source if source else 'opt.pkl or opt.txt'}; using the "
                 f"official defaults {', '.join(defaulted)}")
    label_nc = values.pop("label_nc")
    return OASISOptions(semantic_nc=label_nc + 1, **values)


def open_oasis_run(path: str | os.PathLike, which_epoch: str | int | None = None, network: str | None = None,
                   *, dataset_mode: str | None = None, channels_G: int | None = None, z_dim: int | None = None,
                   num_res_blocks: int | None = None, param_free_norm: str | None = None,
                   spade_ks: int | None = None, no_3dnoise: bool | None = None,
                   no_spectral_norm: bool | None = None, no_EMA: bool | None = None,
                   label_nc: int | None = None, crop_size: int | None = None,
                   aspect_ratio: float | None = None) -> OASISRun:
    """Resolve an official OASIS run without building anything (see `load_oasis_run`)."""
    path = Path(path)
    given = dict(dataset_mode=dataset_mode, channels_G=channels_G, z_dim=z_dim, num_res_blocks=num_res_blocks,
                 param_free_norm=param_free_norm, spade_ks=spade_ks, no_3dnoise=no_3dnoise,
                 no_spectral_norm=no_spectral_norm, no_EMA=no_EMA, label_nc=label_nc, crop_size=crop_size,
                 aspect_ratio=aspect_ratio)
    if is_oasis_safetensors(path):
        return _safetensors_run(path, which_epoch, network, given)
    run_dir, models, named = _locate(path)
    which_epoch, network = _resolve_file_choice(named, which_epoch, network, path)
    if network is not None and network not in NETWORKS:
        raise SpadeganError(f"network must be one of {', '.join(NETWORKS)}, not {network!r}")
    saved, source = read_saved_oasis_options(run_dir)
    opt = oasis_options(saved, source, given, run_dir)
    if network is None:  # what the official test.py loads
        network = "G" if opt.no_EMA else "EMA"
        if opt.no_EMA:
            say_once(f"OASIS run {run_dir} was trained with --no_EMA: loading its generator G")
    weights = path if named is not None else _weights_path(models, which_epoch, network, opt.no_EMA)
    return OASISRun(weights=weights, network=network, which_epoch=which_epoch, run_dir=run_dir, opt=opt,
                    options_source=source or "the flags given")


def load_oasis_run(path: str | os.PathLike, which_epoch: str | int | None = None, network: str | None = None,
                   device: str | torch.device = "cpu", **flags: Any) -> nn.Module:
    """One network of an official OASIS run, weights loaded strictly, in eval mode.

    path: the run folder (`<checkpoints_dir>/<name>`), its `models/` folder, or one weights
    file `<tag>_<G|D|EMA>.pth` (then which_epoch and network come from its name).
    which_epoch: the tag, `best` (default, as test.py's --ckpt_iter), `latest` or an iteration.
    network: `EMA` (default; `G` for a --no_EMA run), `G` or `D`.
    flags: the official test flags for runs without opt.pkl/opt.txt, or to override them:
    dataset_mode, channels_G, z_dim, num_res_blocks, param_free_norm, spade_ks, no_3dnoise,
    no_spectral_norm, no_EMA; and label_nc, crop_size, aspect_ratio for other datasets.
    Returns an `OASISGenerator` (EMA, G) or spadegan's `OASISDiscriminator` (D); both carry
    `oasis_opt` (the OASISOptions used) and `oasis_run` (the resolved `OASISRun`).
    """
    run = open_oasis_run(path, which_epoch, network, **flags)
    with torch.random.fork_rng(devices=[]):  # the spectral norms' random u, v leave the global RNG alone
        net = build_oasis_discriminator(run.opt) if run.network == "D" else OASISGenerator(run.opt)
    sd = read_state_dict(run.weights, f"OASIS {run.network} weights")
    load_oasis_state_dict(net, sd, run.weights, run.network, run.opt, run.options_source)
    net.oasis_run = run
    return net.eval().to(device)


# ---- an OASIS generator as .safetensors (`spadegan export --format safetensors`) ----------------
#: Metadata keys of an OASIS generator written as .safetensors: the options (JSON of the official
#: flag names, `oasis_options_metadata`), the network (EMA or G) and the run's tag
OASIS_OPTIONS_KEY = "oasis_options"
OASIS_NETWORK_KEY = "oasis_network"
OASIS_TAG_KEY = "oasis_which_epoch"
_MAX_METADATA_CHARS = 1 << 16


def oasis_options_metadata(opt: OASISOptions, network: str, which_epoch: str) -> dict[str, str]:
    """The .safetensors metadata of an OASIS generator: every OASISOptions field under its
    official flag name (label_nc instead of semantic_nc), the network and the run's tag."""
    fields = dataclasses.asdict(opt)
    fields["label_nc"] = fields.pop("semantic_nc") - 1
    return {OASIS_OPTIONS_KEY: json.dumps(fields, sort_keys=True), OASIS_NETWORK_KEY: network,
            OASIS_TAG_KEY: str(which_epoch)}


def is_oasis_safetensors(path: str | os.PathLike) -> bool:
    """Whether `path` is a .safetensors file whose metadata holds OASIS options (a file
    `oasis_options_metadata` described); an unreadable header is a SpadeganError naming it."""
    p = Path(path)
    return p.suffix == ".safetensors" and p.is_file() and OASIS_OPTIONS_KEY in read_safetensors_metadata(p)


def _safetensors_run(path: Path, which_epoch: str | int | None, network: str | None,
                     given: dict[str, Any]) -> OASISRun:
    """`open_oasis_run` for an OASIS .safetensors file: options from its metadata (flags given
    override them, said once where they differ), network and tag from its metadata."""
    meta = read_safetensors_metadata(path)
    source = f"the metadata of {path}"
    saved = read_safetensors_json(path, OASIS_OPTIONS_KEY, _MAX_METADATA_CHARS, "the OASIS options")
    if saved is None:
        raise SpadeganError(f"{path} holds no OASIS options (metadata {OASIS_OPTIONS_KEY!r})")
    expected = {f.name for f in dataclasses.fields(OASISOptions)} - {"semantic_nc"} | {"label_nc"}
    if set(saved) != expected:
        odd = sorted(set(saved) ^ expected)
        raise SpadeganError(f"the OASIS options in {source} do not match OASISOptions' fields (differing: "
                            f"{', '.join(odd)}); re-export the run with this spadegan")
    values = {k: _coerce(k, v, source) for k, v in saved.items()}
    for k, v in given.items():
        if v is not None and _coerce(k, v, "given") != values[k]:
            say_once(f"OASIS weights {path}: {k}={v!r} given, its metadata says {values[k]!r}; using {v!r}")
            values[k] = _coerce(k, v, "given")
    stored = {"tag": meta.get(OASIS_TAG_KEY, ""), "net": meta.get(OASIS_NETWORK_KEY, "")}
    if stored["net"] not in ("EMA", "G"):
        raise SpadeganError(f"{source}: {OASIS_NETWORK_KEY}={stored['net']!r}; an OASIS generator file holds EMA or G")
    which_epoch, network = _resolve_file_choice(stored, which_epoch, network, path)
    opt = OASISOptions(semantic_nc=values.pop("label_nc") + 1, **values)
    return OASISRun(weights=path, network=str(network), which_epoch=which_epoch, run_dir=path.parent, opt=opt,
                    options_source=source)


# ---- building and loading ------------------------------------------------------------------------
def build_oasis_discriminator(opt: OASISOptions) -> OASISDiscriminator:
    """spadegan's OASISDiscriminator shaped as the official one (fixed widths 128..512, 64 at
    the top, semantic_nc + 1 logits); `D.opt` holds the spadegan Options it was built from."""
    depth = oasis_depth(opt.crop_size, opt.aspect_ratio)
    if depth != opt.num_res_blocks:
        raise SpadeganError(f"crop_size {opt.crop_size} with aspect_ratio {opt.aspect_ratio} gives a "
                            f"{depth}-block OASIS discriminator, the official one has {opt.num_res_blocks}")
    options = options_from_dict(
        {"dataset_mode": opt.dataset_mode if opt.dataset_mode in DATASET_MODES else "custom"}, train=True,
        netD="oasis", ndf=64, label_nc=opt.label_nc, contain_dontcare_label=True, no_instance=True,
        crop_size=opt.crop_size, load_size=opt.crop_size, aspect_ratio=opt.aspect_ratio,
        norm_D="instance" if opt.no_spectral_norm else "spectralinstance", ngf=opt.channels_G,
        z_dim=opt.z_dim, use_3d_noise=not opt.no_3dnoise)
    D = OASISDiscriminator(options)
    D.opt, D.oasis_opt = options, opt
    return D


def official_d_key(key: str) -> str:
    """The official OASIS_Discriminator's name for a key of spadegan's OASISDiscriminator.

    `down.i.conv1.*` -> `body_down.i.conv1.0.*` (i = 0) / `body_down.i.conv1.1.*`,
    `up.i.conv1.*` -> `body_up.i.conv1.2.*` (the index of the conv inside the official
    Sequential: after no / one LReLU / LReLU + Upsample), `<down|up>.i.conv2.*` ->
    `body_<down|up>.i.conv2.1.*`, `conv_s` as it is, `classifier.*` -> `layer_up_last.*`.
    """
    if key.startswith("classifier."):
        return "layer_up_last." + key[len("classifier."):]
    m = re.match(r"^(down|up)\.(\d+)\.(conv1|conv2|conv_s)\.(.+)$", key)
    if m is None:
        raise SpadeganError(f"{key!r} is not a key of the OASIS discriminator")
    part, i, conv, rest = m.groups()
    index = {"conv1": (".2" if part == "up" else ".0" if i == "0" else ".1"), "conv2": ".1", "conv_s": ""}[conv]
    return f"body_{part}.{i}.{conv}{index}.{rest}"


def official_d_state_dict(D: nn.Module) -> dict[str, torch.Tensor]:
    """D's weights under the official names and in the official order (`body_up.*`,
    `body_down.*`, `layer_up_last.*`), as the official `<tag>_D.pth` holds them."""
    sd = {official_d_key(k): v.detach().cpu().clone() for k, v in D.state_dict().items()}
    order = ("body_up.", "body_down.", "layer_up_last.")
    return {k: sd[k] for prefix in order for k in sd if k.startswith(prefix)}


def load_oasis_state_dict(net: nn.Module, sd: dict[str, Any], path: str | os.PathLike, network: str,
                          opt: OASISOptions, options_source: str = "the options") -> None:
    """Load official OASIS weights `sd` into `net` (an OASISGenerator, or for network D
    spadegan's OASISDiscriminator, keys mapped by `official_d_key`) with strict semantics:
    every key of the file used, none missing, every shape equal, else a SpadeganError naming
    the file, the keys and the option that probably differs."""
    own = net.state_dict()
    names = {official_d_key(k) if network == "D" else k: k for k in own}  # file key -> net key
    diff = key_differences({file_key: own[k] for file_key, k in names.items()}, sd)
    if diff:
        hints = (_d_hints if network == "D" else _g_hints)(sd, opt)
        shapes = [f"{k}: file {theirs}, network {ours}" for k, theirs, ours in diff.shapes]
        problems = [f"{what} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
                    for what, items in (("values that are not tensors", diff.not_tensors),
                                        ("missing keys", diff.missing), ("unexpected keys", diff.unexpected),
                                        ("shape mismatches", shapes)) if items]
        raise SpadeganError(f"{path} does not fit an OASIS {network} network with the options from "
                            f"{options_source} ({_describe(opt)}): " + "; ".join(hints + problems))
    net.load_state_dict({names[k]: v for k, v in sd.items()}, strict=True)


def _describe(opt: OASISOptions) -> str:
    keys = ("dataset_mode", "semantic_nc", "crop_size", "aspect_ratio", *ARCHITECTURE_DEFAULTS)
    return ", ".join(f"{k}={getattr(opt, k)}" for k in keys if k != "no_EMA")


def _shape(sd: dict[str, Any], key: str) -> tuple[int, ...] | None:
    v = sd.get(key)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _g_hints(sd: dict[str, Any], opt: OASISOptions) -> list[str]:
    """What a generator file says about the options it was trained with, where they differ."""
    if any(k.startswith(("body_down.", "body_up.", "layer_up_last.")) for k in sd):
        return ["it is a discriminator file (<tag>_D.pth), not a generator"]
    hints = []
    fc = _shape(sd, "fc.weight")
    if fc is not None and len(fc) == 4:
        if fc[0] != 16 * opt.channels_G:
            hints.append(f"the file has channels_G={fc[0] // 16}, the options give {opt.channels_G}")
        if fc[1] != opt.semantic_nc + opt.noise_nc:
            hints.append(f"its fc reads {fc[1]} channels, the options give semantic_nc {opt.semantic_nc} + "
                         f"3D noise {opt.noise_nc} = {opt.semantic_nc + opt.noise_nc}: check dataset_mode, z_dim "
                         "and no_3dnoise")
    shared = _shape(sd, "body.0.norm_0.mlp_shared.0.weight")
    if shared is not None and len(shared) == 4 and shared[-1] != opt.spade_ks:
        hints.append(f"the file has spade_ks={shared[-1]}, the options give {opt.spade_ks}")
    return hints + _norm_hints(sd, opt, "body.0.conv_0", "body.0.norm_0.first_norm.running_mean")


def _d_hints(sd: dict[str, Any], opt: OASISOptions) -> list[str]:
    if any(k.startswith(("body.", "fc.", "conv_img.")) for k in sd):
        return ["it is a generator file (<tag>_G.pth / <tag>_EMA.pth), not a discriminator"]
    hints = []
    last = _shape(sd, "layer_up_last.weight")
    if last is not None and last[0] != opt.semantic_nc + 1:
        hints.append(f"its logits have {last[0]} channels (semantic_nc {last[0] - 1} + 1), the options give "
                     f"semantic_nc {opt.semantic_nc}: check dataset_mode")
    return hints + _norm_hints(sd, opt, "body_down.0.conv1.0", None)


def _norm_hints(sd: dict[str, Any], opt: OASISOptions, conv: str, running: str | None) -> list[str]:
    hints = []
    if f"{conv}.weight_orig" in sd and opt.no_spectral_norm:
        hints.append("the file has spectral norm (weight_orig), the options set no_spectral_norm")
    if f"{conv}.weight" in sd and f"{conv}.weight_orig" not in sd and not opt.no_spectral_norm:
        hints.append("the file has no spectral norm (plain weight): pass no_spectral_norm=True")
    if running is not None:
        if running in sd and opt.param_free_norm == "instance":
            hints.append("the file's SPADE norms keep batch statistics, the options give param_free_norm instance")
        if running not in sd and any(k.startswith("body.") for k in sd) and opt.param_free_norm != "instance":
            hints.append("the file's SPADE norms keep no batch statistics: pass param_free_norm='instance'")
    return hints


# ---- recognising a run, its flags on command lines, its options for spadegan's data side ---------
#: The official test flags (config.py) a user repeats for a run without opt.pkl / opt.txt, with
#: their types; `label_nc`, `crop_size`, `aspect_ratio` are for datasets the official table lacks
OASIS_FLAGS: dict[str, type] = {
    "dataset_mode": str, "channels_G": int, "z_dim": int, "num_res_blocks": int, "param_free_norm": str,
    "spade_ks": int, "no_3dnoise": bool, "no_spectral_norm": bool, "no_EMA": bool, "label_nc": int,
    "crop_size": int, "aspect_ratio": float,
}


def is_oasis_file(path: str | os.PathLike) -> bool:
    """Whether `path` is named as an official OASIS weights file (`<tag>_G.pth`, `<tag>_D.pth`,
    `<tag>_EMA.pth`; spadegan's and SPADE's `<epoch>_net_G.pth` are not), or is an OASIS
    generator written as .safetensors (`is_oasis_safetensors`)."""
    m = _FILE_NAME.match(Path(path).name)
    return (m is not None and not m["tag"].endswith("_net")) or is_oasis_safetensors(path)


def is_oasis_run(path: str | os.PathLike) -> bool:
    """Whether `path` is an official OASIS run: a weights file named as `is_oasis_file` says,
    a folder with a `models/` folder (spadegan's and SPADE's checkpoints have none; a run
    whose weights are missing is then reported as such), or a folder holding such files."""
    p = Path(path)
    if p.is_file():
        return is_oasis_file(p)
    if not p.is_dir():
        return False
    if (p / "models").is_dir():
        return True
    return any(is_oasis_file(f) for folder in (p, p / "models") if folder.is_dir() for f in folder.glob("*.pth"))


def add_oasis_flags(parser: Any, skip: tuple[str, ...] = ()) -> None:
    """Add the official OASIS test flags (`OASIS_FLAGS`, all default None = not given) to an
    argparse parser, in a group of their own; `skip`: flags the parser already has."""
    group = parser.add_argument_group("official OASIS runs (only where the run has no opt.pkl / opt.txt, "
                                      "or to override it)")
    for name, kind in OASIS_FLAGS.items():
        if name in skip:
            continue
        if kind is bool:
            group.add_argument(f"--{name}", action="store_const", const=True, default=None)
        else:
            group.add_argument(f"--{name}", type=kind, default=None)


def oasis_flags(values: Any) -> dict[str, Any]:
    """The OASIS flags given in an argparse Namespace (or dict): {name: value} without the
    ones left at None."""
    get = values.get if isinstance(values, dict) else (lambda k: getattr(values, k, None))
    return {k: get(k) for k in OASIS_FLAGS if get(k) not in (None, "")}


def parse_oasis_flags(tokens: list[str], path: str | os.PathLike) -> dict[str, Any]:
    """Official OASIS test flags from command-line tokens (`--channels_G 64 --no_3dnoise ...`);
    a flag that is not one of them is a SpadeganError naming it and the run."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise SpadeganError(f"{path} is an official OASIS run: {message}; its flags are "
                                + ", ".join(f"--{k}" for k in OASIS_FLAGS))

    parser = _Parser(add_help=False, allow_abbrev=False)
    add_oasis_flags(parser)
    args, rest = parser.parse_known_args(tokens)
    if rest:
        parser.error(f"unknown argument(s) {' '.join(rest[:4])}")
    return oasis_flags(args)


def oasis_data_options(opt: OASISOptions, **overrides: Any) -> Any:
    """spadegan `Options` describing an OASIS run's data side: dataset_mode (custom for a
    dataset spadegan has no layout for), the dataset's label convention as spadegan's
    datasets read it (`options._dataset_defaults`: COCO-Stuff label_nc 182 + dontcare, ADE20K
    150 + dontcare sharing channel 150, Cityscapes 35 ids), no instance maps, crop_size and
    aspect_ratio, preprocess fixed; and the architecture as far as Options can say it
    (ngf = channels_G, z_dim, use_3d_noise, norm_G). `oasis_flags_from_options` reads the
    flags back."""
    mode = opt.dataset_mode if opt.dataset_mode in DATASET_MODES else "custom"
    norm = f"{'' if opt.no_spectral_norm else 'spectral'}spade{opt.param_free_norm}{opt.spade_ks}x{opt.spade_ks}"
    values: dict[str, Any] = dict(no_instance=True, crop_size=opt.crop_size, load_size=opt.crop_size,
                                  aspect_ratio=opt.aspect_ratio, preprocess_mode="fixed", ngf=opt.channels_G,
                                  z_dim=opt.z_dim, use_3d_noise=not opt.no_3dnoise, norm_G=norm, netD="oasis",
                                  name=f"oasis_{opt.dataset_mode}")
    if mode == "custom":
        values.update(label_nc=opt.label_nc, contain_dontcare_label=False)
    values.update(overrides)
    return options_from_dict({"dataset_mode": mode}, train=False, **values)


def oasis_flags_from_options(options: Any, dataset_mode: str) -> dict[str, Any]:
    """The `load_oasis_run` flags `oasis_data_options` encoded in spadegan Options."""
    norm = options.norm_G
    spectral = norm.startswith("spectral")
    m = re.match(r"^spade(\D+)(\d)x\d$", norm[len("spectral"):] if spectral else norm)
    if m is None:
        raise SpadeganError(f"norm_G {norm!r} does not describe an OASIS generator")
    flags = dict(dataset_mode=dataset_mode, channels_G=options.ngf, z_dim=options.z_dim,
                 no_3dnoise=not options.use_3d_noise, param_free_norm=m.group(1), spade_ks=int(m.group(2)),
                 no_spectral_norm=not spectral, crop_size=options.crop_size, aspect_ratio=options.aspect_ratio)
    if dataset_mode not in OASIS_DATASETS:
        flags["label_nc"] = options.label_nc
    return flags


def dataset_ids(labels: torch.Tensor, options: Any) -> torch.Tensor:
    """Label ids as spadegan's datasets give them back in the ids the dataset's files hold.

    spadegan's datasets map dontcare (255) to `label_nc` with --contain_dontcare_label
    (`data.datasets`); ADE20K keeps its ids 0..150 (its files hold no 255), so there they are
    the files' already (the rule of `evaluation.paper_scoring.file_ids`). `options`: the
    dataset's spadegan Options (`oasis_data_options`).
    """
    if options.contain_dontcare_label and options.dataset_mode != "ade20k":
        return torch.where(labels == options.label_nc, torch.full_like(labels, DONTCARE_ID), labels)
    return labels
