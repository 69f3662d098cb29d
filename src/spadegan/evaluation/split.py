"""What an evaluation scores: the eval split in memory, its synthesized images and the baseline.

- `EvalSplit` / `load_split`: label maps, photos (uint8) and instance maps of a split, read
  once at the model's size (`split_options` gives the test-time options for it);
- `load_networks` + `synthesize_split`: a checkpoint's images for every label map (VAE
  styles seeded, so epochs are compared on equal terms);
- `class_mean_colours` + `paint_baseline`: the trivial baseline, each class painted with its
  mean colour over the train split (`train_split`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.datasets import reading_options
from ..errors import SpadeganError
from ..synthesize.style_bank import StyleBank, random_styles, style_bank_for
from ..visuals import from_uint8, to_uint8


@dataclass
class EvalSplit:
    """An evaluation split in memory: N label maps, their photos (and instance maps).

    ``labels``: N x H x W long class ids (dontcare already mapped to ``label_nc``), or for
    image labels (``--label_nc 0``) the N x input_nc x H x W label images in [-1, 1];
    ``images``: N x 3 x H x W uint8; ``instances``: N x 1 x H x W float or None;
    ``names``: file stems; ``label_files``: the label maps' paths (scoring at their own size).
    """

    labels: torch.Tensor
    images: torch.Tensor
    instances: torch.Tensor | None
    names: list[str]
    label_files: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(opt: Any, how_many: int = 0, desc: str = "loading eval split") -> EvalSplit:
    """Read a dataset split (``opt``: resolved Options, test-time) into an :class:`EvalSplit`."""
    from tqdm.auto import tqdm

    from ..data.datasets import create_dataset
    from ..data.semantics import instance_map

    dataset = create_dataset(opt)
    n = len(dataset) if how_many <= 0 else min(len(dataset), how_many)
    labels, images, instances, names = [], [], [], []
    shape = None
    for i in tqdm(range(n), desc=desc, unit="img"):
        item = dataset[(i, 0)]
        lab = item["label"] if opt.image_label else item["label"][0].round().long()
        if shape is None:
            shape = tuple(lab.shape)
        elif tuple(lab.shape) != shape:  # only with preprocess modes that keep each image's size
            raise SpadeganError(
                f"{item['path']} gives a {tuple(lab.shape)} label map, the first one was {shape}; "
                "evaluate at one size (the eval uses preprocess_mode 'fixed' at --crop_size)")
        labels.append(lab)
        images.append(to_uint8(item["image"]))
        inst = instance_map(item, opt)
        if inst is not None:
            instances.append(inst.float())
        names.append(Path(item["path"]).stem)
    return EvalSplit(torch.stack(labels), torch.stack(images),
                     torch.stack(instances) if len(instances) == n and n else None, names,
                     [s.label for s in dataset.samples[:n]])


def split_options(model_opt: Any, args: argparse.Namespace, phase: str) -> Any:
    """Test-time options for reading ``phase`` of the eval dataset at the model's size."""
    mode = args.dataset_mode or ("custom" if args.label_dir else model_opt.dataset_mode)
    if args.label_dir and mode != "custom":
        raise SpadeganError(f"--label_dir is for --dataset_mode custom, not {mode}; use --dataroot for {mode}")
    if mode == "custom" and phase == args.phase and not (args.label_dir and args.image_dir):
        # the saved --label_dir is the training data: scoring on it would look great and mean nothing
        raise SpadeganError("--dataset_mode custom needs --label_dir and --image_dir of the eval split "
                            "(held-out label maps and their photos)")
    crop = args.crop_size or model_opt.crop_size
    changes: dict[str, Any] = dict(dataset_mode=mode)
    if args.dataroot:
        changes["dataroot"] = args.dataroot
    if mode == "custom" and phase == args.phase:
        if args.label_dir:
            changes.update(label_dir=args.label_dir, image_dir=args.image_dir)
        if args.instance_dir:
            changes["instance_dir"] = args.instance_dir
    return reading_options(model_opt, phase, crop, **changes)


def train_split(model_opt: Any, args: argparse.Namespace, eval_opt: Any,
                          how_many: int = 0) -> EvalSplit | str:
    """The train split (its first ``how_many`` pairs; 0 = all) at the eval size, or the reason it
    is unavailable. It gives the baseline's colours and seg_fd's reference photos."""
    if eval_opt.dataset_mode == "custom":
        if not (args.baseline_label_dir and args.baseline_image_dir):
            return ("custom datasets need --baseline_label_dir and --baseline_image_dir (the train "
                    "split) for the class mean colours and seg_fd's reference photos")
        opt = eval_opt.replace(phase="train", label_dir=args.baseline_label_dir,
                               image_dir=args.baseline_image_dir, instance_dir="", no_instance=True)
    else:
        opt = eval_opt.replace(phase="train", no_instance=True)
    return load_split(opt, how_many, desc="loading train split")


def load_networks(weights: Path, model_opt: Any, device: torch.device, style: str, ema: bool = True
                   ) -> tuple[nn.Module, nn.Module | None]:
    """G (its moving average when the run kept one, unless `ema` is False) and, for
    `style == "encode"`, E of the same epoch. An official OASIS weights file (`<tag>_EMA.pth`
    / `<tag>_G.pth`, as `evaluate.resolve_model` chose it) is loaded as it is, with the
    architecture `model_opt` encodes (`oasis_checkpoint.oasis_data_options`)."""
    from ..checkpoint import averaged_generator, companion_weights, load_checkpoint
    from ..oasis_checkpoint import is_oasis_file, load_oasis_run, oasis_flags_from_options

    if is_oasis_file(weights):
        flags = oasis_flags_from_options(model_opt, model_opt.dataset_mode)
        return load_oasis_run(weights, device=device, **flags), None

    G = load_checkpoint(averaged_generator(weights, hint="--no_ema") if ema else weights, "G",
                        opt=model_opt, device=device, impl="auto")  # --spade_impl resolved for `device`
    E = None
    if model_opt.use_vae and style == "encode":
        e_path = companion_weights(weights, "E") or weights.parent / weights.name.replace("_net_G", "_net_E")
        if not e_path.is_file():
            raise SpadeganError(f"--style encode needs the style encoder {e_path}, which is missing; "
                                "use --style random")
        E = load_checkpoint(e_path, "E", opt=model_opt, device=device)
    return G, E


def random_style_bank(weights: Path, model_opt: Any, style: str, prior: str) -> StyleBank | None:
    """The style bank the random styles of the generator `weights` draw from (`style_bank_for`
    under `prior`), or None: N(0, I), `style == "encode"`, or a model without a VAE (official
    OASIS runs included: their options have no --use_vae)."""
    if style != "random":
        if prior == "bank":
            raise SpadeganError("--style_prior bank needs --style random (encoded styles do not draw from it)")
        return None
    return style_bank_for(weights, model_opt, prior)


@torch.no_grad()
def synthesize_split(G: nn.Module, split: EvalSplit, opt: Any, device: torch.device, batch_size: int = 16,
                     seed: int = 0, E: nn.Module | None = None, desc: str = "synthesizing",
                     bank: StyleBank | None = None) -> torch.Tensor:
    """Synthesized images (N x 3 x H x W uint8) for every label map of ``split``.

    VAE generators get z ~ N(0, I) from a generator seeded with ``seed`` (the same codes
    for every checkpoint, so epochs are compared on equal terms), or from the style ``bank``
    when one is given (`StyleBank.draw`, same generator), or, when ``E`` is given, z sampled
    around the encoding of the real photo; 3D-noise (OASIS) generators get their
    noise vectors from the same seeded generator. Class maps are fed in the form G was built to
    read (`G.spade_impl`: `load_networks` builds the sparse SPADE where --spade_impl chooses it,
    the CPU by default).
    """
    from tqdm.auto import tqdm

    from ..layers.label_codes import LabelCodes
    from ..networks import sample_z
    from ..networks.oasis import OASISGenerator

    if isinstance(G, OASISGenerator):
        return synthesize_split_oasis(G, split, opt, device, batch_size, seed, desc)
    sparse = opt.netG == "spade" and G.spade_impl == "sparse"  # the form G reads, recorded when built
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    n = len(split)
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            if opt.image_label:  # the label image is the generator's input
                sem = split.labels[sl].to(device)
            else:
                label = split.labels[sl].unsqueeze(1).to(device)
                inst = split.instances[sl].to(device) if split.instances is not None else None
                if not opt.no_instance and inst is None:
                    raise SpadeganError("this model uses instance maps (trained without --no_instance) but the "
                                        "eval split has none; pass --instance_dir or a dataset with instance maps")
                codes = LabelCodes.from_label(label, inst, opt)
                sem = codes if sparse else codes.semantics()
            z = None
            if opt.use_3d_noise:
                z = torch.randn(sem.size(0), opt.z_dim, generator=gen).to(device)
            elif opt.use_vae:
                if E is not None:
                    eps = torch.randn(sem.size(0), opt.z_dim, generator=gen)
                    mu, logvar = E(from_uint8(split.images[sl]).to(device))
                    z = sample_z(mu.float(), logvar.float(), eps=eps)
                else:  # N(0, I) draws the same numbers as eps above: the same codes as before banks
                    z = random_styles(sem.size(0), opt.z_dim, gen, bank).to(device)
            fake = G(sem, z=z)
            out.append(to_uint8(fake))
            bar.update(sl.stop - sl.start)
    return torch.cat(out)


@torch.no_grad()
def synthesize_split_oasis(G: nn.Module, split: EvalSplit, opt: Any, device: torch.device, batch_size: int = 16,
                           seed: int = 0, desc: str = "synthesizing") -> torch.Tensor:
    """`synthesize_split` for an official OASIS generator: the split's ids (dontcare mapped to
    `label_nc` as spadegan's datasets do) back to the dataset's own ids (the files', 255 =
    dontcare), then OASIS' channels (`oasis_label_channels`); one noise vector per image
    from a generator seeded with `seed` (none with --no_3dnoise)."""
    from tqdm.auto import tqdm

    from ..oasis_checkpoint import dataset_ids, oasis_label_channels, oasis_semantics
    from ..synthesize.oasis import generator_at

    oopt = G.oasis_opt
    gen = torch.Generator().manual_seed(int(seed))
    G = generator_at(G, tuple(split.labels.shape[-2:]))
    out = []
    n = len(split)
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            ids = dataset_ids(split.labels[sl], opt)
            semantics = oasis_semantics(oasis_label_channels(ids, oopt.dataset_mode), oopt.semantic_nc).to(device)
            z = None if oopt.no_3dnoise else torch.randn(ids.shape[0], oopt.z_dim, generator=gen).to(device)
            out.append(to_uint8(G(semantics, z)))
            bar.update(sl.stop - sl.start)
    return torch.cat(out)


def class_mean_colours(split: EvalSplit, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB (num_classes x 3, float) of each class's pixels, and the pixel counts.

    Classes with no pixels get mid-grey. Ids >= ``num_classes`` (dontcare) are skipped.
    """
    sums = np.zeros((num_classes, 3), np.float64)
    counts = np.zeros(num_classes, np.int64)
    for lab, img in zip(split.labels, split.images):
        ids = lab.reshape(-1).numpy()
        keep = ids < num_classes
        ids = ids[keep]
        rgb = img.reshape(3, -1).numpy().T[keep].astype(np.float64)
        counts += np.bincount(ids, minlength=num_classes)
        for c in range(3):
            sums[:, c] += np.bincount(ids, weights=rgb[:, c], minlength=num_classes)
    means = np.full((num_classes, 3), 127.5)
    seen = counts > 0
    means[seen] = sums[seen] / counts[seen, None]
    return means, counts


def paint_baseline(labels: torch.Tensor, colours: np.ndarray) -> torch.Tensor:
    """Paint each class with its colour: N x H x W ids -> N x 3 x H x W uint8."""
    table = torch.from_numpy(np.clip(np.round(colours), 0, 255).astype(np.uint8))
    ids = labels.clamp(0, table.shape[0] - 1)  # dontcare (== num_classes) gets the last colour
    return table[ids].permute(0, 3, 1, 2).contiguous()
