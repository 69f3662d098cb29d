"""Options: one typed, read-only object holding every official SPADE flag.

`parse(argv, train)` accepts the official command lines (base, train and test options, the
netG/netD-specific flags and the dataset-mode defaults) plus a few of spadegan's own
(`--seed`, `--device`, `--amp`, `--vgg_weights`, ...). The result is a frozen `Options`
dataclass; derived values (`semantic_nc`, `isTrain`, `device`) are properties or set once by
`parse`, never mutated later. Options are saved beside checkpoints as `opt.txt` (the
official human-readable format), `opt.pkl` (an argparse Namespace, as the official code
writes it) and `opt.json` (machine-readable), and read back from any of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .device import parse_gpu_ids, resolve_device
from .errors import SpadeganError
from .fileio import MAX_OPTIONS_BYTES, atomic_write_bytes, load_options_pickle, read_limited

if TYPE_CHECKING:
    import torch

BASE, TRAIN, TEST = "base", "train", "test"

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                    "scale_shortside", "scale_shortside_and_crop", "fixed", "none")
DATASET_MODES = ("coco", "ade20k", "cityscapes", "facades", "custom", "landscapes")
NETG_CHOICES = ("spade", "pix2pixhd", "oasis")
GAN_MODES = ("hinge", "original", "ls", "w")
#: --amp's values: plain `--amp` is "auto"; "" (the default) is no --amp
AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")


def _opt(default: Any, help: str, phase: str = BASE, choices: Iterable | None = None,
         only: tuple[str, str] | None = None) -> Any:
    """A dataclass field carrying its command-line metadata.

    `only` = (option, value): the flag exists only when that option has that value (e.g.
    `--num_upsampling_layers` only for `--netG spade`), as in the official parser.
    """
    return field(default=default, metadata={"help": help, "phase": phase,
                                            "choices": tuple(choices) if choices else None,
                                            "only": only})


@dataclass(frozen=True)
class Options:
    """Every option of the official base/train/test parsers, with the official defaults."""

    # experiment specifics
    name: str = _opt("label2coco", "name of the experiment; checkpoints go to checkpoints_dir/name")
    gpu_ids: str = _opt("0", "gpu ids, e.g. 0  0,1,2  0,2; -1 for CPU (falls back to CPU without CUDA)")
    checkpoints_dir: str = _opt("./checkpoints", "models are saved here")
    model: str = _opt("pix2pix", "which model to use", choices=("pix2pix",))
    norm_G: str = _opt("spectralinstance", "normalisation of G, e.g. spectralspadesyncbatch3x3")
    norm_D: str = _opt("spectralinstance", "normalisation of D")
    norm_E: str = _opt("spectralinstance", "normalisation of E")
    phase: str = _opt("train", "train, val, test, etc")
    # input/output sizes
    batchSize: int = _opt(1, "input batch size")
    preprocess_mode: str = _opt("scale_width_and_crop", "scaling and cropping at load time",
                                choices=PREPROCESS_MODES)
    load_size: int = _opt(1024, "scale images to this size, then crop to crop_size")
    crop_size: int = _opt(512, "crop to this width (after scaling to load_size)")
    aspect_ratio: float = _opt(1.0, "width/height; the final height is crop_size/aspect_ratio")
    label_nc: int = _opt(182, "number of label classes, without the dontcare class; 0: the label is an image "
                         "(sketch, edges, depth, colour layout) read as --input_nc float channels")
    input_nc: int = _opt(0, "with --label_nc 0: channels of the label images (1 greyscale, 3 RGB); 0 = detect "
                         "from the files (the detected value is saved with the options)")
    contain_dontcare_label: bool = _opt(False, "label maps contain dontcare (255) -> index label_nc")
    output_nc: int = _opt(3, "number of output image channels")
    # inputs
    dataroot: str = _opt("./datasets/cityscapes/", "dataset root folder")
    dataset_mode: str = _opt("coco", "dataset layout", choices=DATASET_MODES)
    serial_batches: bool = _opt(False, "take images in order instead of shuffling")
    no_flip: bool = _opt(False, "do not flip images for augmentation")
    nThreads: int = _opt(0, "number of data loading worker processes")
    max_dataset_size: int = _opt(sys.maxsize, "maximum number of samples to load")
    load_from_opt_file: bool = _opt(False, "use the options saved in checkpoints_dir/name as defaults")
    cache_filelist_write: bool = _opt(False, "save the file list to a cache file")
    cache_filelist_read: bool = _opt(False, "read the file list from a cache file")
    display_winsize: int = _opt(400, "display window size")
    # generator
    netG: str = _opt("spade", "generator architecture: spade, pix2pixhd or oasis (the published OASIS generator: "
                     "6 blocks from a per-dataset start map, z + one-hot input with dontcare at channel 0, no "
                     "instance edges; the default with --netD oasis, which with --netG spade keeps SPADE's)",
                     choices=NETG_CHOICES)
    ngf: int = _opt(64, "number of generator filters in the last conv layer")
    init_type: str = _opt("xavier", "initialisation", choices=("normal", "xavier", "xavier_uniform",
                                                                "kaiming", "orthogonal", "none"))
    init_variance: float = _opt(0.02, "variance (gain) of the initialisation")
    z_dim: int = _opt(256, "dimension of the latent z vector")
    # instance-wise features
    no_instance: bool = _opt(False, "do not add the instance-edge map as input")
    nef: int = _opt(16, "number of encoder filters in the first conv layer")
    use_vae: bool = _opt(False, "enable training with an image (style) encoder")
    use_3d_noise: bool = _opt(False, "OASIS' 3D noise: --z_dim noise channels beside the label map at G's input "
                              "and every SPADE layer (on by default with --netD oasis)")
    # netG-specific
    num_upsampling_layers: str = _opt("normal", "'more' adds an upsampling between the middle "
                                      "blocks; 'most' also one more block at the end",
                                      choices=("normal", "more", "most"), only=("netG", "spade"))
    resnet_n_downsample: int = _opt(4, "downsampling layers in netG", only=("netG", "pix2pixhd"))
    resnet_n_blocks: int = _opt(9, "residual blocks in netG", only=("netG", "pix2pixhd"))
    resnet_kernel_size: int = _opt(3, "kernel size of the resnet blocks", only=("netG", "pix2pixhd"))
    resnet_initial_kernel_size: int = _opt(7, "kernel size of the first conv", only=("netG", "pix2pixhd"))
    # dataset-specific
    no_pairing_check: bool = _opt(False, "do not check that label and image file names match")
    coco_no_portraits: bool = _opt(False, "ignore the *_portrait folders", only=("dataset_mode", "coco"))
    label_dir: str = _opt("", "folder of label maps (custom)", only=("dataset_mode", "custom"))
    image_dir: str = _opt("", "folder of photos (custom)", only=("dataset_mode", "custom"))
    instance_dir: str = _opt("", "folder of instance maps (custom); leave empty if none",
                             only=("dataset_mode", "custom"))
    # display / logging (train)
    display_freq: int = _opt(100, "iterations between sample images", TRAIN)
    print_freq: int = _opt(100, "iterations between loss prints", TRAIN)
    save_latest_freq: int = _opt(5000, "iterations between saves of the latest model", TRAIN)
    save_epoch_freq: int = _opt(10, "epochs between checkpoint saves", TRAIN)
    no_html: bool = _opt(False, "do not write the web/ page of samples", TRAIN)
    debug: bool = _opt(False, "only do one epoch and display at each iteration: a quick check of a setup, one "
                       "epoch of at most 4 batches, printing losses and saving samples at every one", TRAIN)
    tf_log: bool = _opt(False, "also log to TensorBoard (always on in spadegan when installed)", TRAIN)
    # training
    continue_train: bool = _opt(False, "continue training: load the latest model", TRAIN)
    which_epoch: str = _opt("latest", "which epoch to load (latest or a number)", BASE)
    niter: int = _opt(50, "epochs at the starting learning rate", TRAIN)
    niter_decay: int = _opt(0, "epochs of linear decay to zero", TRAIN)
    optimizer: str = _opt("adam", "optimizer", TRAIN, choices=("adam",))
    beta1: float = _opt(0.0, "Adam beta1 (0.5 with --no_TTUR)", TRAIN)
    beta2: float = _opt(0.9, "Adam beta2 (0.999 with --no_TTUR)", TRAIN)
    no_TTUR: bool = _opt(False, "do not use the two time-scale update rule", TRAIN)
    lr: float = _opt(0.0002, "initial learning rate for Adam", TRAIN)
    D_steps_per_G: int = _opt(1, "discriminator steps per generator step", TRAIN)
    # discriminator / losses
    ndf: int = _opt(64, "number of discriminator filters in the first conv layer", TRAIN)
    lambda_feat: float = _opt(10.0, "weight of the feature matching loss", TRAIN)
    lambda_vgg: float = _opt(10.0, "weight of the VGG loss", TRAIN)
    no_ganFeat_loss: bool = _opt(False, "do not use the discriminator feature matching loss", TRAIN)
    no_vgg_loss: bool = _opt(False, "do not use the VGG perceptual loss", TRAIN)
    gan_mode: str = _opt("hinge", "GAN loss", TRAIN, choices=GAN_MODES)
    netD: str = _opt("multiscale", "discriminator architecture: multiscale (SPADE's PatchGANs) or oasis (OASIS' "
                     "U-Net segmenter; implies --netG oasis, the published OASIS model with the official settings "
                     "per dataset: 3D noise with --z_dim 64, EMA 0.9999, Adam betas 0/0.999, --lr_g 1e-4 --lr_d "
                     "4e-4, no VGG or feature matching loss; with --netG spade the same losses, TTUR from --lr)",
                     TRAIN, choices=("multiscale", "oasis"))
    lambda_labelmix: float = _opt(10.0, "--netD oasis: weight of the LabelMix regularisation of D (0: off; 5 for "
                                  "cityscapes with --netG oasis, as published)", TRAIN)
    labelmix_per_image: bool = _opt(False, "--netD oasis, spadegan's variant: one LabelMix coin per (image, class) "
                                    "instead of the official one per class shared by the batch (where class 0 "
                                    "also follows class 1's coin when its own says real)", TRAIN)
    d_classifier_torch_init: bool = _opt(False, "--netD oasis, spadegan's variant: D's 1x1 classifier keeps "
                                         "PyTorch's default initialisation instead of the official xavier gain "
                                         "--init_variance (it learns sooner in small CPU runs)", TRAIN)
    lr_g: float = _opt(0.0, "G's learning rate; 0: from --lr (lr/2 with TTUR). --netG oasis: 1e-4 (cityscapes "
                       "4e-4), as published", TRAIN)
    lr_d: float = _opt(0.0, "D's learning rate; 0: from --lr (lr*2 with TTUR). --netG oasis: 4e-4", TRAIN)
    ema_decay: float = _opt(0.0, "keep an exponential moving average of G's weights with this decay (0: off; "
                            "0.9999 with --netD oasis), saved as <epoch>_net_EMA.pth and used for synthesis", TRAIN)
    lambda_kld: float = _opt(0.05, "weight of the KL divergence loss", TRAIN)
    netD_subarch: str = _opt("n_layer", "architecture of each discriminator", TRAIN, choices=("n_layer",))
    num_D: int = _opt(2, "number of discriminators in the multiscale discriminator", TRAIN)
    n_layers_D: int = _opt(4, "number of layers in each discriminator", TRAIN)
    # test
    results_dir: str = _opt("./results/", "results are saved here", TEST)
    how_many: float = _opt(float("inf"), "how many test images to run", TEST)
    # spadegan's own
    seed: int | None = _opt(None, "random seed (weights, data order, noise) for reproducible runs")
    spade_impl: str = _opt("auto", "how the SPADE layers compute: sparse (the label map as codes: lookups, per-class "
                           "constants and convolutions only near class boundaries; the same results for less "
                           "work), dense (the reference convolutions of one-hot maps) or auto (sparse on the "
                           "CPU, dense on CUDA)", choices=("auto", "dense", "sparse"))
    device: str = _opt("", "cpu, cuda or cuda:N; overrides --gpu_ids")
    amp: str = _opt("", "mixed precision. --amp alone (auto): where it is faster, bf16 on GPUs of compute "
                    "capability >= 8.0 and on AMX CPUs if a timed step says so, fp16 on older GPUs, else fp32; "
                    "--amp bf16|fp16|fp32: that precision, not timed. The precision chosen is recorded in "
                    "opt.txt and a --continue_train run keeps it", TRAIN, choices=AMP_CHOICES)
    vgg_weights: str = _opt("", "path to torchvision's vgg19-dcbb9e9d.pth for the VGG loss", TRAIN)
    style_image: str = _opt("", "with --use_vae: encode this photo for the style", TEST)
    num_samples: int = _opt(1, "with --use_vae: random styles per label map", TEST)
    isTrain: bool = field(default=True, metadata={"derived": True})

    def __post_init__(self) -> None:
        object.__setattr__(self, "amp", amp_setting(self.amp))

    # ---- derived values -------------------------------------------------------------
    @property
    def image_label(self) -> bool:
        """Whether the label is an image (--label_nc 0) rather than a map of class ids."""
        return self.label_nc == 0

    @property
    def semantic_nc(self) -> int:
        """Input channels of G: classes (+ dontcare) (+ instance edges); input_nc for --label_nc 0."""
        if self.image_label:
            if self.input_nc < 1:
                raise SpadeganError("--label_nc 0 needs the label images' channel count: pass --input_nc 1 or 3, "
                                    "or build the dataset first (it detects input_nc from the files)")
            return self.input_nc
        return self.label_nc + int(self.contain_dontcare_label) + int(not self.no_instance)

    @property
    def generator_input_nc(self) -> int:
        """Channels of G's conditioning input: the semantics (+ the 3D noise)."""
        return self.semantic_nc + (self.z_dim if self.use_3d_noise else 0)

    @property
    def label_channels(self) -> int:
        """One-hot channels: label_nc (+1 for the dontcare class)."""
        return self.label_nc + int(self.contain_dontcare_label)

    @property
    def gpu_id_list(self) -> list[int]:
        """The GPU numbers of --gpu_ids ([] for -1)."""
        return parse_gpu_ids(self.gpu_ids)

    @property
    def torch_device(self) -> "torch.device":
        """The one device everything runs on: --device, else --gpu_ids (`device.resolve_device`)."""
        return resolve_device(self.device or None, self.gpu_ids)

    @property
    def num_up_layers(self) -> int:
        return {"normal": 5, "more": 6, "most": 7}[self.num_upsampling_layers]

    @property
    def expr_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    def replace(self, **changes: Any) -> "Options":
        """A copy with some values changed (options themselves are never mutated)."""
        new = dataclasses.replace(self, **changes)
        if hasattr(self, "_defaults"):  # keep the parse-time defaults opt.txt compares against
            object.__setattr__(new, "_defaults", self._defaults)
        return new

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["how_many"] == float("inf"):
            d["how_many"] = "inf"
        return d


FIELDS = {f.name: f for f in dataclasses.fields(Options)}


def amp_setting(value: Any) -> str:
    """--amp's value as Options hold it: "" (off), "auto" or a precision in AMP_CHOICES; the
    True/False of options saved before --amp took a value read as "auto"/"". Anything else
    is a SpadeganError."""
    if value is None or value is False or value in ("", "False"):
        return ""
    if value is True or value == "True":
        return "auto"
    if isinstance(value, str) and value in AMP_CHOICES:
        return value
    raise SpadeganError(f"--amp {value!r} is not a precision: use --amp alone (automatic), "
                        + ", ".join(f"--amp {c}" for c in AMP_CHOICES[1:]))


# ---- defaults that depend on other options (the official modify_commandline_options) ----
def _dataset_defaults(mode: str, train: bool) -> dict[str, Any]:
    common = dict(preprocess_mode="resize_and_crop", load_size=286 if train else 256,
                  crop_size=256, display_winsize=256)
    return {
        "coco": dict(common, label_nc=182, contain_dontcare_label=True,
                     cache_filelist_read=True, cache_filelist_write=True),
        "ade20k": dict(common, label_nc=150, contain_dontcare_label=True, no_instance=True,
                       cache_filelist_read=False, cache_filelist_write=False),
        "cityscapes": dict(preprocess_mode="fixed", load_size=512, crop_size=512,
                           display_winsize=512, label_nc=35, aspect_ratio=2.0, batchSize=16),
        "facades": dict(common, dataroot="./dataset/facades/", label_nc=13,
                        contain_dontcare_label=False, no_instance=True),
        "custom": dict(common, label_nc=13, contain_dontcare_label=False),
        "landscapes": dict(common, label_nc=10, contain_dontcare_label=False, no_instance=True),
    }[mode]


def _defaults(train: bool, netG: str, dataset_mode: str, no_TTUR: bool, netD: str = "multiscale") -> dict[str, Any]:
    d = {name: f.default for name, f in FIELDS.items()}
    if not train:  # the official TestOptions overrides
        d.update(preprocess_mode="scale_width_and_crop", crop_size=256, load_size=256,
                 display_winsize=256, serial_batches=True, no_flip=True, phase="test")
    if no_TTUR:
        d.update(beta1=0.5, beta2=0.999)
    if netD == "oasis":  # the OASIS paper's settings (its lr G 1e-4 / D 4e-4 are TTUR's from --lr 2e-4)
        d.update(beta2=0.999, use_3d_noise=True, z_dim=64, ema_decay=0.9999, no_vgg_loss=True,
                 no_ganFeat_loss=True)
    d["netG"] = netG
    d["norm_G"] = "spectralspadesyncbatch3x3" if netG in ("spade", "oasis") else "instance"
    d.update(_dataset_defaults(dataset_mode, train))
    if dataset_mode == "cityscapes" and netG == "spade":
        d["num_upsampling_layers"] = "more"
    if netG == "oasis":
        d.update(_oasis_defaults(dataset_mode, train))
    return d


def _oasis_defaults(dataset_mode: str, train: bool) -> dict[str, Any]:
    """--netG oasis: the published settings (boschresearch/OASIS config.py and
    set_dataset_default_lm): lr G 1e-4 / D 4e-4, 200 epochs, no lr decay, EMA 0.9999, LabelMix
    10, 3D noise of 64; Cityscapes lr G 4e-4, LabelMix 5, EMA 0.999; COCO-Stuff 100 epochs. No
    instance edges. ADE20K / COCO-Stuff load at 256: the official training reads its images at
    the val size (the train dataset's 286 is reset by the val dataset built on the same options),
    so it never crops at random."""
    d: dict[str, Any] = dict(no_instance=True, use_3d_noise=True, z_dim=64)
    if train:
        d.update(lr_g=1e-4, lr_d=4e-4, niter=200, niter_decay=0, ema_decay=0.9999, lambda_labelmix=10.0,
                 beta1=0.0, beta2=0.999, no_vgg_loss=True, no_ganFeat_loss=True)
    if dataset_mode in ("ade20k", "coco"):
        d["load_size"] = d["crop_size"] = 256
    if dataset_mode == "cityscapes" and train:
        d.update(lr_g=4e-4, lambda_labelmix=5.0, ema_decay=0.999)
    if dataset_mode == "coco" and train:
        d["niter"] = 100
    return d


class _Parser(argparse.ArgumentParser):
    """argparse that raises SpadeganError instead of exiting (usable from Python)."""

    def error(self, message: str):  # type: ignore[override]
        raise SpadeganError(f"{self.prog}: {message} (see --help)")


def _flag_applies(f: dataclasses.Field, train: bool, ns: dict[str, Any]) -> bool:
    phase = f.metadata.get("phase")
    if f.metadata.get("derived") or (phase == TRAIN and not train) or (phase == TEST and train):
        return False
    only = f.metadata.get("only")
    return only is None or ns.get(only[0]) == only[1]


def _build_parser(train: bool, defaults: dict[str, Any], ns: dict[str, Any] | None) -> _Parser:
    p = _Parser(prog="spadegan " + ("train" if train else "test"),
                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    for name, f in FIELDS.items():
        if ns is not None and not _flag_applies(f, train, ns):
            continue
        if ns is None and f.metadata.get("derived"):
            continue
        kw: dict[str, Any] = dict(default=defaults[name], help=f.metadata["help"])
        if f.type in ("bool", bool):
            p.add_argument("--" + name, action="store_true", **kw)
            continue
        typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
        if name == "how_many":
            typ = float
        if name == "seed":
            typ = int
        if name == "amp":  # `--amp` alone is "auto"
            kw.update(nargs="?", const="auto")
        p.add_argument("--" + name, type=typ, choices=f.metadata.get("choices"), **kw)
    return p


def parse(argv: list[str] | None = None, train: bool = True) -> Options:
    """Parse an official-style command line into Options.

    Like the official parser, netG, dataset_mode and --no_TTUR select defaults first;
    `--load_from_opt_file` takes the saved options as defaults. Unknown flags, flags that do
    not apply to the chosen netG/dataset_mode or phase, and contradictory values raise
    SpadeganError naming the flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # pass 1: the options that choose other defaults
    pre = _Parser(add_help=False, allow_abbrev=False)
    pre.add_argument("--netG", default=None, choices=NETG_CHOICES)
    pre.add_argument("--dataset_mode", default="coco", choices=DATASET_MODES)
    pre.add_argument("--no_TTUR", action="store_true")
    pre.add_argument("--netD", default="multiscale")
    pre.add_argument("--load_from_opt_file", action="store_true")
    pre.add_argument("--checkpoints_dir", default="./checkpoints")
    pre.add_argument("--name", default="label2coco")
    known, _ = pre.parse_known_args(argv)
    if known.netG is None:  # --netD oasis trains the published OASIS generator unless --netG says otherwise
        known.netG = "oasis" if train and known.netD == "oasis" and not known.load_from_opt_file else "spade"
    defaults = _defaults(train, known.netG, known.dataset_mode, known.no_TTUR and train,
                         known.netD if train else "multiscale")
    ns = vars(known)
    parser = _build_parser(train, defaults, ns)
    official_defaults = dict(defaults, isTrain=None)  # argparse has no default for it
    if known.load_from_opt_file:
        saved = load_options_file(Path(known.checkpoints_dir) / known.name)
        for k, v in saved.items():
            if k in defaults and k not in ("isTrain", "load_from_opt_file", "continue_train",
                                           "phase", "which_epoch"):
                defaults[k] = v
        parser.set_defaults(**{k: v for k, v in defaults.items() if parser.get_default(k) is not None
                               or k in saved})
    try:
        args = parser.parse_args(argv)
    except SpadeganError as e:
        # name the flag that does not apply here, if that is the problem
        msg = str(e)
        for tok in argv:
            if tok.startswith("--") and tok[2:] in FIELDS:
                f = FIELDS[tok[2:]]
                if not _flag_applies(f, train, ns):
                    only = f.metadata.get("only")
                    why = (f"only applies with --{only[0]} {only[1]}" if only
                           else f"is a {f.metadata.get('phase')} option")
                    raise SpadeganError(f"{tok} {why}") from None
        raise SpadeganError(msg) from None
    values = {k: v for k, v in defaults.items()}
    values.update(vars(args))
    values["isTrain"] = train
    opt = Options(**{k: values[k] for k in FIELDS})
    _validate(opt, argv)
    object.__setattr__(opt, "_defaults", official_defaults)
    return opt


def _validate(opt: Options, argv: list[str]) -> None:
    """Contradictions the official code would only hit as a crash deep inside PyTorch."""
    def bad(msg: str) -> None:
        raise SpadeganError(msg)

    for key in ("batchSize", "crop_size", "load_size", "ngf", "z_dim", "output_nc"):
        if getattr(opt, key) <= 0:
            bad(f"--{key} must be positive, got {getattr(opt, key)}")
    if opt.label_nc < 0:
        bad(f"--label_nc must be 0 (image labels) or more, got {opt.label_nc}")
    _validate_image_label(opt, argv)
    if opt.aspect_ratio <= 0:
        bad(f"--aspect_ratio must be positive, got {opt.aspect_ratio}")
    for key in ("norm_G", "norm_D", "norm_E"):
        check_norm_string(getattr(opt, key), key, spade=(key == "norm_G" and opt.netG in ("spade", "oasis")))
    if opt.netG == "spade":
        sw = opt.crop_size // (2 ** opt.num_up_layers)
        if sw < 1 or round(sw / opt.aspect_ratio) < 1:
            bad(f"--crop_size {opt.crop_size} is too small for --num_upsampling_layers "
                f"{opt.num_upsampling_layers} and --aspect_ratio {opt.aspect_ratio}: the generator "
                f"starts from crop_size/2^{opt.num_up_layers}; use at least {2 ** opt.num_up_layers}")
        if "instance" in opt.norm_G and sw * round(sw / opt.aspect_ratio) == 1:
            bad(f"--crop_size {opt.crop_size} makes the generator start from a 1x1 map, which instance "
                f"norm ({opt.norm_G}) cannot normalise; use --crop_size {2 ** (opt.num_up_layers + 1)} or more")
    if opt.use_vae and opt.netG != "spade":
        why = "pix2pixhd has no z input" if opt.netG == "pix2pixhd" else \
            "the published OASIS generator has no style encoder: its styles come from the 3D noise"
        bad(f"--use_vae needs --netG spade ({why})")
    if opt.use_3d_noise and opt.netG == "pix2pixhd":
        bad("--use_3d_noise needs --netG spade or oasis (pix2pixhd has no SPADE layers)")
    if opt.netG == "oasis":
        _validate_oasis(opt, argv)
    if opt.use_3d_noise and opt.use_vae:
        bad("--use_3d_noise and --use_vae both draw styles from --z_dim: choose one")
    if not 0.0 <= opt.ema_decay < 1.0:
        bad(f"--ema_decay must be in [0, 1), got {opt.ema_decay}")
    if opt.lambda_labelmix < 0:
        bad(f"--lambda_labelmix must be 0 or more, got {opt.lambda_labelmix}")
    if opt.isTrain:
        if opt.num_D < 1 or opt.n_layers_D < 1:
            bad("--num_D and --n_layers_D must be at least 1")
        if opt.niter < 0 or opt.niter_decay < 0 or opt.niter + opt.niter_decay < 1:
            bad(f"--niter {opt.niter} + --niter_decay {opt.niter_decay} must give at least one epoch")
        if opt.D_steps_per_G < 1:
            bad(f"--D_steps_per_G must be at least 1, got {opt.D_steps_per_G}")
    ids = opt.gpu_id_list
    if ids and opt.batchSize % len(ids) != 0:
        bad(f"--batchSize {opt.batchSize} must be a multiple of the number of GPUs ({len(ids)})")
    if opt.dataset_mode == "custom" and ("--label_dir" not in argv or "--image_dir" not in argv) \
            and not (opt.label_dir and opt.image_dir):
        bad("--dataset_mode custom needs --label_dir and --image_dir")
    if opt.style_image and not opt.use_vae:
        bad("--style_image needs a model trained with --use_vae")


def _validate_oasis(opt: Options, argv: list[str]) -> None:
    """--netG oasis: what the published generator does not have."""
    if opt.isTrain and opt.netD != "oasis":
        raise SpadeganError("--netG oasis trains with OASIS' discriminator and losses: add --netD oasis")
    if not opt.no_instance:
        raise SpadeganError("--netG oasis reads no instance edges (as published): add --no_instance")
    if opt.lr_g < 0 or opt.lr_d < 0:
        raise SpadeganError(f"--lr_g {opt.lr_g} / --lr_d {opt.lr_d} must be 0 (from --lr) or positive")
    w0 = opt.crop_size // 32
    if w0 < 1 or round(w0 / opt.aspect_ratio) < 1:
        raise SpadeganError(f"--crop_size {opt.crop_size} with --aspect_ratio {opt.aspect_ratio} is too small for "
                            "--netG oasis (it starts from crop_size / 32)")


def _validate_image_label(opt: Options, argv: list[str]) -> None:
    """--label_nc 0 (the label is an image) and --input_nc: what does not go with them."""
    if not opt.image_label:
        if opt.input_nc != 0:
            raise SpadeganError(f"--input_nc {opt.input_nc} only applies with --label_nc 0 (image labels); "
                                f"--label_nc {opt.label_nc} reads class ids")
        return
    why = "--label_nc 0 (the label is an image, not class ids)"
    if opt.input_nc not in (0, 1, 3):
        raise SpadeganError(f"--input_nc must be 1 (greyscale), 3 (RGB) or 0 (detect from the files), "
                            f"got {opt.input_nc}")
    if opt.contain_dontcare_label:
        src = ("--contain_dontcare_label" if "--contain_dontcare_label" in argv
               else f"--dataset_mode {opt.dataset_mode} (sets --contain_dontcare_label; use --dataset_mode custom)")
        raise SpadeganError(f"{why} has no dontcare class: drop {src}")
    if opt.instance_dir:
        raise SpadeganError(f"{why} takes no instance maps: drop --instance_dir {opt.instance_dir}")
    if opt.isTrain and opt.netD == "oasis":
        raise SpadeganError(f"--netD oasis segments images into class ids, which {why} does not have; "
                            "use --netD multiscale")
    if opt.use_3d_noise:
        raise SpadeganError(f"--use_3d_noise is not supported with {why}; drop it (or use --use_vae for styles)")
    if opt.spade_impl == "sparse":
        raise SpadeganError(f"--spade_impl sparse computes SPADE from class codes, which {why} does not have; "
                            "use --spade_impl dense or auto")


_NORM_RE = re.compile(r"^spade(\D+)(\d)x\d$")


def check_norm_string(text: str, flag: str = "norm_G", spade: bool = False) -> None:
    """Raise SpadeganError unless `text` is a norm string the networks understand."""
    t = text[len("spectral"):] if text.startswith("spectral") else text
    if spade:
        m = _NORM_RE.match(t)
        if not m or m.group(1) not in ("instance", "batch", "syncbatch"):
            raise SpadeganError(f"--{flag} {text!r} is not a SPADE norm: use e.g. "
                                "spectralspadesyncbatch3x3, spadeinstance5x5, spectralspadebatch3x3")
    elif t not in ("", "none", "instance", "batch", "sync_batch", "syncbatch"):
        raise SpadeganError(f"--{flag} {text!r} is not recognised: use [spectral]instance, "
                            "[spectral]batch, [spectral]sync_batch or spectral")


# ---- saving and loading -------------------------------------------------------------------
def format_options(opt: Options) -> str:
    """The official opt.txt text: one `key: value [default: x]` line per option."""
    defaults = getattr(opt, "_defaults", None) or {}
    lines = []
    for k, v in sorted(opt.to_dict().items()):
        comment = ""
        if k in defaults and v != defaults[k] and not (k == "how_many" and v == "inf"):
            comment = f"\t[default: {defaults[k]}]"
        lines.append("{:>25}: {:<30}{}".format(str(k), str(v), comment))
    return "\n".join(lines) + "\n"


def save_options(opt: Options, folder: str | os.PathLike | None = None,
                 formats: tuple[str, ...] | None = None) -> Path:
    """Write opt.txt, opt.pkl (argparse Namespace, readable by the official code) and opt.json;
    `formats`: only some of ("txt", "pkl", "json") (e.g. json alone beside an official OASIS
    run's own opt.pkl / opt.txt)."""
    folder = Path(folder) if folder is not None else opt.expr_dir
    folder.mkdir(parents=True, exist_ok=True)
    formats = formats or ("txt", "json", "pkl")
    d = opt.to_dict()
    if "txt" in formats:
        atomic_write_bytes(folder / "opt.txt", format_options(opt).encode())
    if "json" in formats:
        atomic_write_bytes(folder / "opt.json", json.dumps(d, indent=1, sort_keys=True).encode())
    if "pkl" in formats:
        atomic_write_bytes(folder / "opt.pkl", pickle.dumps(argparse.Namespace(**d)))
    return folder


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text


def load_options_file(folder_or_file: str | os.PathLike) -> dict[str, Any]:
    """Read saved options (opt.json, the official opt.pkl or opt.txt) as a dict.

    Nothing in them is executed: opt.pkl goes through `fileio.load_options_pickle` (a
    restricted unpickler that refuses anything but an argparse.Namespace of plain values,
    raising UnsafeFileError), and every options file is bounded to MAX_OPTIONS_BYTES.
    """
    p = Path(folder_or_file)
    folder = p if p.is_dir() else p.parent
    candidates = [p] if p.is_file() else [folder / "opt.json", folder / "opt.pkl", folder / "opt.txt"]
    for c in candidates:
        if not c.is_file():
            continue
        if c.suffix == ".pkl":
            return load_options_pickle(c)
        text = read_limited(c, MAX_OPTIONS_BYTES, "options file")
        try:
            if c.suffix == ".json":
                saved = json.loads(text)
                if not isinstance(saved, dict):
                    raise ValueError(f"a JSON {type(saved).__name__}, not an object")
                return saved
            out = {}
            for line in text.decode().splitlines():
                if ":" not in line or line.startswith("-"):
                    continue
                key, _, rest = line.partition(":")
                out[key.strip()] = _parse_value(rest.split("\t[default:")[0])
            return out
        except Exception as e:  # corrupt file: say which
            raise SpadeganError(f"cannot read options file {c}: {e}") from None
    raise SpadeganError(f"no options file (opt.json, opt.pkl or opt.txt) in {folder}")


def _coerce(key: str, value: Any) -> Any:
    """Give a value read from opt.txt (where '0' and 0 look alike) its field's type."""
    typ = str(FIELDS[key].type)
    if value is None or typ.endswith("None"):
        return value
    if typ == "str":
        return str(value)
    if typ == "float" and value != "inf":
        return float(value)
    if typ == "int" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return int(value)
    return value


def options_from_dict(saved: dict[str, Any], train: bool = False, **overrides: Any) -> Options:
    """Options from a saved dict (ours or the official), unknown keys ignored, with overrides."""
    netG = saved.get("netG", "spade")
    mode = saved.get("dataset_mode", "coco")
    values = _defaults(train, netG if netG in NETG_CHOICES else "spade",
                       mode if mode in DATASET_MODES else "custom", False)
    for k, v in saved.items():
        if k in FIELDS and k != "isTrain":
            values[k] = _coerce(k, v)
    if isinstance(values.get("gpu_ids"), list):  # some official pickles hold the parsed list
        values["gpu_ids"] = ",".join(str(i) for i in values["gpu_ids"]) or "-1"
    if values.get("how_many") == "inf":
        values["how_many"] = float("inf")
    values.update(overrides)
    values["isTrain"] = train
    return Options(**{k: values[k] for k in FIELDS})
