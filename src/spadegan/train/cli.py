"""`spadegan train` and `spadegan test`: the official train.py / test.py command lines.

    spadegan train --name coco_exp --dataset_mode coco --dataroot ./datasets/coco_stuff
    spadegan test  --name coco_pretrained --dataset_mode coco --dataroot ./datasets/coco_stuff

train: parse -> dataset options resolved (e.g. custom without --instance_dir trains with
no_instance) -> dataset listed and validated -> VGG weights found (or a message saying how
to provide them / pass --no_vgg_loss) -> options printed -> Trainer (which saves them, --amp
as the precision chosen) -> Trainer.run().
Several --gpu_ids (`--gpu_ids 0,1`) start one DistributedDataParallel process per GPU
(`launch.py`); under torchrun (`torchrun --nproc_per_node 2 -m spadegan.train.cli ...`)
torchrun starts them. Either way each process joins the group and rank 0 alone prints and
writes; --batchSize stays the global batch.

test: like the official test.py, options come from the command line (official checkpoint
folders hold opt.txt too, for reference). An official OASIS run folder
(`checkpoints/<name>/models/<which_epoch>_EMA.pth`) runs its EMA generator on the split read at
its size, with its own test flags (--channels_G ...) where it has no opt.pkl, noise seeded by
--seed. Otherwise `checkpoints/<name>/<which_epoch>_net_G.pth` is
loaded (spadegan's or an official release) into a `Synthesizer` running the training network (not the
fast engine; its SPADE implementation, dense or sparse, as --spade_impl and the device choose:
`Synthesizer.network` names it) in fp32, and
`results/<name>/test_<which_epoch>/images/{input_label,synthesized_image,real_image}/<stem>.png`
plus an `index.html` grid are written. With --use_vae the style comes from the photo
beside each label map (the official behaviour), from `--style_image PATH`, or, with
`--num_samples K`, from K random codes per label map (seeded by --seed, default 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import SpadeganError, run_command
from ..options import Options, format_options, parse


def options_banner(opt: Options) -> str:
    """The options as the official code prints them at start-up."""
    return ("----------------- Options ---------------\n" + format_options(opt)
            + "----------------- End -------------------")


def _keep_defaults(new: Options, old: Options) -> Options:
    # opt.replace() drops the parse-time defaults that opt.txt's "[default: x]" comments use
    if hasattr(old, "_defaults") and not hasattr(new, "_defaults"):
        object.__setattr__(new, "_defaults", getattr(old, "_defaults"))
    return new


def _prepare_dataset(opt: Options, show: bool):
    from ..data.datasets import create_dataset, resolve_dataset_options
    from ..data.validate import validate_dataset
    opt = _keep_defaults(resolve_dataset_options(opt), opt)
    dataset = create_dataset(opt)
    report = validate_dataset(opt, dataset, progress=show)
    if show:
        for w in getattr(report, "warnings", []) or []:
            print(f"warning: {w}", flush=True)
        print(f"dataset [{opt.dataset_mode}] of size {len(dataset)} was created", flush=True)
    return opt, dataset


# ---- train ------------------------------------------------------------------------------------
def train_main(argv: list[str]) -> int:
    """`spadegan train [official train.py flags]`; returns the exit code (0 also after Ctrl-C)."""
    from .. import networks
    from .distributed import cleanup_distributed, rank_device, setup_distributed
    from .launch import launch, launch_devices
    from .trainer import Trainer

    opt = parse(argv, train=True)
    devices = launch_devices(opt)
    if devices is not None:
        print(f"spadegan train: starting {len(devices)} DistributedDataParallel processes, one per device: "
              + ", ".join(str(d) for d in devices), flush=True)
        return launch(train_main, argv, devices)
    info = setup_distributed(rank_device(opt))
    try:
        show = info.is_main
        # the VGG weights first: nothing should be written when training cannot start
        vgg = None if opt.no_vgg_loss else networks.load_vgg19(opt.vgg_weights or None, required=True)
        opt, dataset = _prepare_dataset(opt, show)
        if show:
            print("spadegan train " + " ".join(argv), flush=True)
            print(options_banner(opt), flush=True)
            if info.enabled:
                print(f"DistributedDataParallel: {info.world_size} processes ({'nccl' if info.device.type == 'cuda' else 'gloo'}), "
                      f"{opt.batchSize // info.world_size} samples each of the global --batchSize {opt.batchSize}",
                      flush=True)
        trainer = Trainer(opt, dataset=dataset, dist=info, vgg=vgg)
        if show:
            print(f"training on {trainer.device}" + (f" with {trainer.amp_dtype} autocast" if trainer.amp_dtype else "")
                  + f", seed {trainer.seed}, starting at epoch {trainer.epoch}, iters {trainer.epoch_iter}", flush=True)
        trainer.run()
    except BaseException:
        cleanup_distributed(finished=False)
        raise
    cleanup_distributed(finished=True)
    return 0


# ---- test -------------------------------------------------------------------------------------
def _test_synthesizer(opt: Options):
    """The checkpoint's generator as a Synthesizer running the training network in fp32, not the
    engine (the official test's images; `syn.network` names its SPADE implementation), and whether
    VAE styles are drawn at random."""
    from ..checkpoint import weights_file
    from ..synthesize import Synthesizer

    syn = Synthesizer.from_checkpoint(opt.expr_dir, device=opt.torch_device, precision="fp32", use_engine=False,
                                      which_epoch=opt.which_epoch, opt=opt)
    if opt.num_samples < 1:
        raise SpadeganError(f"--num_samples must be at least 1, got {opt.num_samples}")
    random_styles = opt.use_vae and opt.num_samples > 1
    if opt.use_vae and not random_styles and weights_file(opt.expr_dir, "E", opt.which_epoch) is None:
        e_path = opt.expr_dir / f"{opt.which_epoch}_net_E.pth"
        if opt.style_image:
            raise SpadeganError(f"--style_image needs the style encoder {e_path}, which is missing")
        print(f"note: no {e_path.name}: drawing random styles instead of encoding the photos", flush=True)
        random_styles = True
    return syn, random_styles


def _test_styles(opt: Options, syn, random_styles: bool):
    """A function (batch of photos) -> z for one sample of the batch: 3D noise (--use_3d_noise),
    a VAE style, or None.

    --style_image: the mean code of that photo (a deterministic style); random styles:
    z ~ N(0, I); otherwise the official test's: z sampled around the encoding of each photo.
    """
    from ..networks import sample_z
    from .state import mix_seed

    gen = torch.Generator().manual_seed(mix_seed(opt.seed if opt.seed is not None else 0, 7))
    if opt.use_3d_noise:  # OASIS-style models: one noise vector per image, seeded by --seed
        return lambda real: torch.randn(real.shape[0], opt.z_dim, generator=gen)
    if not opt.use_vae:
        return lambda real: None
    if opt.style_image:
        style_z, _ = syn.encode_style(syn.style_tensor(opt.style_image, (syn.height, syn.width))[None])
        return lambda real: style_z.expand(real.shape[0], -1)
    if random_styles:
        return lambda real: torch.randn(real.shape[0], opt.z_dim, generator=gen)

    def encoded(real: torch.Tensor) -> torch.Tensor:
        mu, logvar = syn.encode_style(real)
        return sample_z(mu, logvar, eps=torch.randn(mu.shape, generator=gen))
    return encoded


def _save_test_batch(data: dict, fakes: list[np.ndarray], opt: Options, img_dir: Path, used: set[str]) -> list:
    """input_label / synthesized_image / real_image PNGs of one batch; its rows of the page."""
    from ..visuals import image_to_numpy, label_to_numpy, save_png

    samples = len(fakes)
    labels, reals = label_to_numpy(data["label"], opt), image_to_numpy(data["image"])
    rows = []
    for j in range(len(labels)):
        stem = Path(data["path"][j]).stem
        while stem in used:  # the same file name in two folders (e.g. portraits)
            stem += "_"
        used.add(stem)
        cells = [(f"images/input_label/{stem}.png", "input_label")]
        save_png(labels[j], img_dir / "input_label" / f"{stem}.png")
        for k in range(samples):
            name = f"{stem}.png" if samples == 1 else f"{stem}_sample{k}.png"
            save_png(fakes[k][j], img_dir / "synthesized_image" / name)
            cells.append((f"images/synthesized_image/{name}", "synthesized_image" if samples == 1 else f"sample {k}"))
        save_png(reals[j], img_dir / "real_image" / f"{stem}.png")
        cells.append((f"images/real_image/{stem}.png", "real_image"))
        rows.append((stem, cells))
    return rows


def _checkpoint_folder(argv: list[str]) -> Path:
    """checkpoints_dir/name as the command line gives them (the official defaults otherwise)."""
    import argparse

    from ..options import FIELDS

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--name", default=FIELDS["name"].default)
    pre.add_argument("--checkpoints_dir", default=FIELDS["checkpoints_dir"].default)
    known, _ = pre.parse_known_args(argv)
    return Path(known.checkpoints_dir) / known.name


#: OASIS test flags spadegan's parser also has (the same meaning for an OASIS run)
_SHARED_OASIS_FLAGS = ("dataset_mode", "crop_size", "label_nc", "aspect_ratio", "z_dim")


def _oasis_test_setup(argv: list[str], folder: Path):
    """(Options for the dataset and the results, the OASISSynthesizer, noise per batch) of an
    official OASIS run folder: its own test flags (channels_G, ...) taken out of argv, the
    rest parsed as spadegan's; the test split read at OASIS' size (its dataset class: fixed
    resize to crop_size x crop_size / aspect_ratio, no flip), labels in spadegan's ids."""
    import argparse

    from ..oasis_checkpoint import add_oasis_flags, oasis_data_options, oasis_flags
    from ..synthesize import Synthesizer
    from .state import mix_seed

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_oasis_flags(pre, skip=_SHARED_OASIS_FLAGS)
    own, rest = pre.parse_known_args(argv)
    opt = parse(rest, train=False)
    given = {t[2:].split("=")[0] for t in rest if t.startswith("--")}
    flags = {**oasis_flags(own), **{k: getattr(opt, k) for k in _SHARED_OASIS_FLAGS if k in given}}
    syn = Synthesizer.from_checkpoint(folder, device=opt.torch_device, precision="fp32", use_engine=False,
                                      which_epoch=opt.which_epoch, **flags)
    oopt, data = syn.oasis_opt, oasis_data_options(syn.oasis_opt)
    opt = opt.replace(dataset_mode=data.dataset_mode, label_nc=data.label_nc, no_instance=True,
                      contain_dontcare_label=data.contain_dontcare_label, crop_size=oopt.crop_size,
                      load_size=oopt.crop_size, aspect_ratio=oopt.aspect_ratio, preprocess_mode="fixed",
                      no_flip=True, use_vae=False)
    gen = torch.Generator().manual_seed(mix_seed(opt.seed if opt.seed is not None else 0, 7))
    return opt, syn, (lambda real: None if oopt.no_3dnoise else torch.randn(real.shape[0], oopt.z_dim, generator=gen))


def test_main(argv: list[str]) -> int:
    """`spadegan test [official test.py flags]`: synthesize the dataset's test split."""
    from tqdm import tqdm

    from ..data.semantics import instance_map
    from ..oasis_checkpoint import dataset_ids, is_oasis_run
    from ..visuals import image_to_numpy, write_results_page

    oasis = is_oasis_run(_checkpoint_folder(argv))
    if oasis:  # an official OASIS run: its generator reads the dataset's own ids
        opt, syn, style_of = _oasis_test_setup(argv, _checkpoint_folder(argv))
        random_styles = False
    else:
        opt = parse(argv, train=False)
    opt, dataset = _prepare_dataset(opt, show=True)
    print(options_banner(opt), flush=True)
    if not oasis:
        syn, random_styles = _test_synthesizer(opt)
        style_of = _test_styles(opt, syn, random_styles)
    samples = opt.num_samples if random_styles else 1
    out = Path(opt.results_dir) / opt.name / f"test_{opt.which_epoch}"
    n_total = len(dataset) if opt.how_many == float("inf") else min(len(dataset), int(opt.how_many))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n_total)),
                                         batch_size=opt.batchSize, shuffle=False,
                                         num_workers=max(0, int(opt.nThreads)),
                                         pin_memory=syn.device.type == "cuda")
    rows: list[tuple[str, list[tuple[str, str]]]] = []
    used: set[str] = set()
    with tqdm(total=n_total, desc="test", unit="img") as bar:
        for data in loader:
            # class ids, or the label image itself (--label_nc 0)
            label = data["label"].float() if opt.image_label else data["label"][:, 0].long()
            if oasis or getattr(syn, "oasis_opt", None) is not None:  # an OASIS generator (also --netG oasis)
                label = dataset_ids(label, opt)
            inst = instance_map(data, opt)
            inst = None if inst is None else inst[:, 0]
            real = data["image"].float()
            fakes = [image_to_numpy(syn.generate(label, inst, style_of(real))) for _ in range(samples)]
            rows += _save_test_batch(data, fakes, opt, out / "images", used)
            bar.update(len(label))
    page = write_results_page(out, f"Experiment = {opt.name}, Phase = {opt.phase}, Epoch = {opt.which_epoch}",
                              rows, width=opt.display_winsize)
    print(f"wrote {len(rows)} results to {out / 'images'} ({page})", flush=True)
    return 0


def _main() -> int:
    """`python -m spadegan.train.cli ...` (what torchrun launches): the train command."""
    return run_command("train", train_main, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
