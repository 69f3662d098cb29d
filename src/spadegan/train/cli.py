"""`spadegan train` and `spadegan test`: the official train.py / test.py command lines.

    spadegan train --name coco_exp --dataset_mode coco --dataroot ./datasets/coco_stuff
    spadegan test  --name coco_pretrained --dataset_mode coco --dataroot ./datasets/coco_stuff

train: parse -> dataset options resolved (e.g. custom without --instance_dir trains with
no_instance) -> dataset listed and validated -> VGG weights found (or a message saying how
to provide them / pass --no_vgg_loss) -> options printed and saved -> Trainer.run().
Under torchrun (`torchrun --nproc_per_node 2 -m spadegan.train.cli ...`) each process joins
the group and rank 0 alone prints and writes; --batchSize stays the global batch.

test: like the official test.py, options come from the command line (official checkpoint
folders hold opt.txt too, for reference); `checkpoints/<name>/<which_epoch>_net_G.pth` is
loaded (spadegan's or an official release) and
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
from ..options import Options, format_options, parse, save_options


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
    from ..data.datasets import create_dataset, resolve_dataset_options, validate_dataset
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
    from .distributed import cleanup_distributed, setup_distributed
    from .trainer import Trainer

    opt = parse(argv, train=True)
    info = setup_distributed(opt.torch_device)
    try:
        show = info.is_main
        # the VGG weights first: nothing should be written when training cannot start
        vgg = None if opt.no_vgg_loss else networks.load_vgg19(opt.vgg_weights or None, required=True)
        opt, dataset = _prepare_dataset(opt, show)
        if show:
            print("spadegan train " + " ".join(argv), flush=True)
            print(options_banner(opt), flush=True)
            save_options(opt)
            if info.enabled:
                print(f"DistributedDataParallel: {info.world_size} processes ({'nccl' if info.device.type == 'cuda' else 'gloo'}), "
                      f"{opt.batchSize // info.world_size} samples each of the global --batchSize {opt.batchSize}",
                      flush=True)
        trainer = Trainer(opt, dataset=dataset, dist=info, vgg=vgg)
        if show:
            print(f"training on {trainer.device}" + (f" with {trainer.amp_dtype} autocast" if trainer.amp_dtype else "")
                  + f", seed {trainer.seed}, starting at epoch {trainer.epoch}, iters {trainer.epoch_iter}", flush=True)
        trainer.run()
    finally:
        cleanup_distributed()
    return 0


# ---- test -------------------------------------------------------------------------------------
def _load_style_image(path: str, opt: Options) -> torch.Tensor:
    from PIL import Image
    p = Path(path)
    if not p.is_file():
        raise SpadeganError(f"--style_image {p}: no such file")
    try:
        img = Image.open(p).convert("RGB")
    except Exception as e:
        raise SpadeganError(f"--style_image {p}: cannot read image ({e})") from None
    w = opt.crop_size
    h = int(round(w / opt.aspect_ratio))
    img = img.resize((w, h), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1).unsqueeze(0)


def test_main(argv: list[str]) -> int:
    """`spadegan test [official test.py flags]`: synthesize the dataset's test split."""
    from tqdm import tqdm

    from .. import networks
    from ..checkpoint import load_network_weights, weights_file
    from ..data.semantics import instance_map, to_semantics
    from .state import mix_seed
    from ..visuals import image_to_numpy, label_to_numpy, save_png, write_results_page

    opt = parse(argv, train=False)
    opt, dataset = _prepare_dataset(opt, show=True)
    print(options_banner(opt), flush=True)
    device = opt.torch_device
    folder = opt.expr_dir
    G = networks.define_G(opt, init=False)
    load_network_weights(G, weights_file(folder, "G", opt.which_epoch) or folder / f"{opt.which_epoch}_net_G.pth",
                         opt, "G")
    G.eval().to(device)

    E = None
    random_styles = opt.use_vae and opt.num_samples > 1
    if opt.use_vae and not random_styles:
        e_path = weights_file(folder, "E", opt.which_epoch) or folder / f"{opt.which_epoch}_net_E.pth"
        if e_path.is_file():
            E = networks.define_E(opt, init=False)
            load_network_weights(E, e_path, opt, "E")
            E.eval().to(device)
        elif opt.style_image:
            raise SpadeganError(f"--style_image needs the style encoder {e_path}, which is missing")
        else:
            print(f"note: no {e_path.name}: drawing random styles instead of encoding the photos", flush=True)
            random_styles = True
    if opt.num_samples < 1:
        raise SpadeganError(f"--num_samples must be at least 1, got {opt.num_samples}")
    gen = torch.Generator().manual_seed(mix_seed(opt.seed if opt.seed is not None else 0, 7))
    style_z = None
    if opt.style_image:
        with torch.no_grad():
            mu, _ = E(_load_style_image(opt.style_image, opt).to(device))  # the mean: a deterministic style
        style_z = mu.float()

    out = Path(opt.results_dir) / opt.name / f"test_{opt.which_epoch}"
    img_dir = out / "images"
    n_total = len(dataset) if opt.how_many == float("inf") else min(len(dataset), int(opt.how_many))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n_total)),
                                         batch_size=opt.batchSize, shuffle=False,
                                         num_workers=max(0, int(opt.nThreads)),
                                         pin_memory=device.type == "cuda")
    samples = opt.num_samples if random_styles else 1
    rows: list[tuple[str, list[tuple[str, str]]]] = []
    used: set[str] = set()
    with torch.no_grad(), tqdm(total=n_total, desc="test", unit="img") as bar:
        for data in loader:
            label = data["label"].to(device)
            inst = instance_map(data, opt)
            inst = None if inst is None else inst.to(device)
            sem = to_semantics(label, inst, opt)
            real = data["image"].to(device).float()
            b = sem.size(0)
            fakes = []
            for k in range(samples):
                z = None
                if opt.use_vae:
                    if style_z is not None:
                        z = style_z.expand(b, -1)
                    elif random_styles:
                        z = torch.randn(b, opt.z_dim, generator=gen).to(device)
                    else:  # the official test: encode the photo, sample around it
                        mu, logvar = E(real)
                        z = networks.sample_z(mu.float(), logvar.float(), eps=torch.randn(mu.shape, generator=gen))
                fakes.append(image_to_numpy(G(sem, z=z)))
            labels, reals = label_to_numpy(data["label"], opt), image_to_numpy(data["image"])
            for j in range(b):
                stem = Path(data["path"][j]).stem
                while stem in used:  # the same file name in two folders (e.g. portraits)
                    stem += "_"
                used.add(stem)
                cells = [(f"images/input_label/{stem}.png", "input_label")]
                save_png(labels[j], img_dir / "input_label" / f"{stem}.png")
                for k in range(samples):
                    name = f"{stem}.png" if samples == 1 else f"{stem}_sample{k}.png"
                    save_png(fakes[k][j], img_dir / "synthesized_image" / name)
                    cells.append((f"images/synthesized_image/{name}",
                                  "synthesized_image" if samples == 1 else f"sample {k}"))
                save_png(reals[j], img_dir / "real_image" / f"{stem}.png")
                cells.append((f"images/real_image/{stem}.png", "real_image"))
                rows.append((stem, cells))
            bar.update(b)
    page = write_results_page(out, f"Experiment = {opt.name}, Phase = {opt.phase}, Epoch = {opt.which_epoch}",
                              rows, width=opt.display_winsize)
    print(f"wrote {len(rows)} results to {img_dir} ({page})", flush=True)
    return 0


def _main() -> int:
    """`python -m spadegan.train.cli ...` (what torchrun launches): the train command."""
    return run_command("train", train_main, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
