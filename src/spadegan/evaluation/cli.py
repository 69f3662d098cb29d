"""`spadegan eval`: the SPADE paper's evaluation protocol for a trained generator.

    spadegan eval --name landscapes_exp --dataroot datasets/landscapes --baseline
    spadegan eval --builtin --dataroot datasets/landscapes128 --baseline --out eval_builtin
    spadegan eval --checkpoint checkpoints/coco/20_net_G.pth --dataset_mode coco \\
        --dataroot datasets/coco_stuff --seg_weights my_segmenter.pt --fid_weights pt_inception.pth

What it measures, on the eval split (``--phase val`` by default) at the model's resolution:

* **mIoU / pixel accuracy**: a segmentation network is run on each synthesized image and
  its prediction compared with the label map the image was synthesized from. The same
  network on the real photos gives the upper bound (how good the scorer itself is).
  Weights come from ``--seg_weights`` (a file written by ``spadegan eval
  --train_segmenter`` or any TorchScript module mapping B x 3 x H x W images in [-1, 1] to
  B x label_nc x h x w logits); for the landscapes dataset the segmenter shipped in the
  package is the default. Without one, mIoU is reported as unavailable with the reason.
  Images are resized to the size the segmenter was trained at (recorded in its file, or
  ``--seg_size``) before segmenting; predictions are compared at the model's resolution.
* **FID / KID** between synthesized and real images with the standard InceptionV3 weights
  from ``--fid_weights``; without them they are reported as unavailable, never computed
  with a substitute network.
* **seg_fd / seg_kid** (realism that works offline; *not* FID/KID): the Fréchet distance
  and KID-style kernel distance between the segmenter's own pooled features (per-channel
  mean and std of each of its U-Net blocks, see ``evaluation/segfd.py``) of each image set
  and of a reference set: the first N real photos of the **train** split (N = the number
  of eval images). Every row is scored against that same reference, and every row renders
  the same eval label maps, so rows differ only in how the images are painted: the real
  row (the eval split's photos: two independent sets of real photos) is the floor that
  sampling noise alone gives, the baseline row shows what flat colours cost. Collected
  during the mIoU forward passes; ``--no_seg_fd`` skips them (and the reference photos).
* ``--baseline``: the trivial baseline, each class painted with its mean colour over the
  train split, scored the same way (a model must beat it clearly to be worth anything).

Generated and baseline images are quantised to 8 bits before scoring, as if saved to PNG
and read back (what the paper's protocol does). VAE models draw random styles
(``--style random``, z ~ N(0, I), seeded): the score then depends on the label map alone,
like the baseline's; ``--style encode`` encodes each real photo instead (as the official
test.py does), which lets the real image leak into the result.

Outputs: a table on stdout, ``metrics.json``, ``loss_curves.png`` (from the checkpoint's
``loss_log.txt``) and ``metrics_vs_epoch.png`` (each saved ``<epoch>_net_G.pth`` with
``--all_epochs``), ``samples.png`` (a few label / real / synthesized / baseline rows), in
the checkpoint folder or ``--out``.

``spadegan eval --train_segmenter --dataroot D --out FILE`` trains the small U-Net scorer on
a dataset's real train images (random crops and flips) and reports its val mIoU; that is
how the shipped landscapes segmenter was made (see ``src/spadegan/pretrained/README.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spadegan.device import resolve_device
from spadegan.errors import SpadeganError
from spadegan.visuals import from_uint8, to_uint8

__all__ = [
    "main",
    "build_parser",
    "BUILTIN_SEGMENTER",
    "builtin_model_dir",
    "EvalSplit",
    "load_split",
    "load_scorer",
    "class_mean_colours",
    "paint_baseline",
    "synthesize_split",
    "segmentation_scores",
    "train_segmenter_on_dataset",
]

_PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
#: The landscapes segmenter shipped in the package (made with ``--train_segmenter``).
BUILTIN_SEGMENTER = _PRETRAINED / "landscapes_segmenter.pt"


def builtin_model_dir() -> Path:
    """Folder of the built-in landscapes GauGAN model (``opt.json`` + ``latest_net_G.pth``)."""
    return _PRETRAINED / "landscapes"


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``spadegan eval`` argument parser (raises SpadeganError on bad flags)."""

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise SpadeganError(f"{self.prog}: {message} (see --help)")

    ap = _Parser(
        prog="spadegan eval",
        description="mIoU / pixel accuracy (segmenter on synthesized images vs input labels), "
                    "FID / KID and the trivial baseline for a trained model; or, with "
                    "--train_segmenter, train the small segmenter used as the scorer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m = ap.add_argument_group("model (one of --name, --checkpoint, --builtin)")
    m.add_argument("--name", default="", help="experiment name: reads checkpoints_dir/name")
    m.add_argument("--checkpoints_dir", default="./checkpoints", help="where experiments are saved")
    m.add_argument("--checkpoint", default="", help="a checkpoint folder or a <epoch>_net_G.pth file")
    m.add_argument("--builtin", action="store_true", help="the built-in landscapes model shipped in the package")
    m.add_argument("--which_epoch", default="latest", help="which <epoch>_net_G.pth of a folder to evaluate")
    m.add_argument("--all_epochs", action="store_true",
                   help="also evaluate every saved <epoch>_net_G.pth and plot metrics against epoch")
    m.add_argument("--style", choices=("random", "encode"), default="random",
                   help="VAE models: random styles z ~ N(0, I), or encode each real photo (official test.py)")
    d = ap.add_argument_group("data (default: the dataset the model was trained on)")
    d.add_argument("--dataset_mode", default="", help="coco, ade20k, cityscapes, facades, custom, landscapes")
    d.add_argument("--dataroot", default="", help="dataset root folder")
    d.add_argument("--label_dir", default="", help="custom mode: folder of label maps of the eval split")
    d.add_argument("--image_dir", default="", help="custom mode: folder of the matching photos")
    d.add_argument("--instance_dir", default="", help="custom mode: folder of instance maps, if the model uses them")
    d.add_argument("--phase", default="val", help="split to evaluate")
    d.add_argument("--how_many", type=int, default=0, help="evaluate only the first N pairs (0 = all)")
    d.add_argument("--crop_size", type=int, default=0,
                   help="evaluation width (0 = the model's crop_size); height from its aspect ratio")
    s = ap.add_argument_group("metrics")
    s.add_argument("--seg_weights", default="", help="segmenter weights (default for landscapes: the shipped one)")
    s.add_argument("--seg_size", type=int, default=0,
                   help="resize images to this height before segmenting (0 = the size the segmenter was "
                        "trained at, if its file says; -1 = never resize)")
    s.add_argument("--fid_weights", default="",
                   help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's InceptionV3 weights) for FID/KID")
    s.add_argument("--baseline", action="store_true", help="also score the class-mean-colour baseline")
    s.add_argument("--no_seg_fd", action="store_true",
                   help="skip seg_fd/seg_kid (distances in the segmenter's feature space to real train photos)")
    s.add_argument("--baseline_label_dir", default="",
                   help="custom mode: train label maps (the baseline's mean colours, seg_fd's reference photos)")
    s.add_argument("--baseline_image_dir", default="", help="custom mode: the matching train photos")
    s.add_argument("--kid_subset_size", type=int, default=1000, help="KID subset size (capped at the set size)")
    r = ap.add_argument_group("run")
    r.add_argument("--device", default="", help="cpu, cuda or cuda:N (default: cuda if available)")
    r.add_argument("--batch_size", type=int, default=16, help="images per forward pass")
    r.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random styles")
    r.add_argument("--out", default="",
                   help="output folder (default: the checkpoint folder; ./eval_builtin for --builtin). "
                        "With --train_segmenter: the segmenter file to write")
    r.add_argument("--no_plots", action="store_true", help="do not write PNG plots")
    r.add_argument("--num_visuals", type=int, default=6, help="rows in samples.png (0 = none)")
    t = ap.add_argument_group("--train_segmenter (train the scorer on real train images)")
    t.add_argument("--train_segmenter", action="store_true", help="train a segmenter instead of evaluating")
    t.add_argument("--label_nc", type=int, default=0, help="number of classes (0 = the dataset mode's)")
    t.add_argument("--steps", type=int, default=1000, help="training steps (batches)")
    t.add_argument("--seg_crop", type=int, default=96, help="random crop size of the training images")
    t.add_argument("--seg_width", type=int, default=16, help="U-Net base width")
    t.add_argument("--seg_batch", type=int, default=8, help="training batch size")
    t.add_argument("--seg_lr", type=float, default=3e-3, help="Adam learning rate (cosine-decayed to 0)")
    t.add_argument("--seg_balance", type=float, default=0.5,
                   help="class weights = pixel frequency ** -this (0 = unweighted): rare small classes count")
    t.add_argument("--seg_jitter", type=float, default=0.0,
                   help="strength of random brightness/contrast/saturation/tint changes (0 = none)")
    t.add_argument("--half", action="store_true", help="store the weights as float16 (half the file size)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spadegan eval``; returns the process exit code."""
    args = build_parser().parse_args(list(argv or []))
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if args.batch_size < 1:
        raise SpadeganError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.train_segmenter:
        return _train_segmenter_main(args)
    return _evaluate_main(args)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


@dataclass
class EvalSplit:
    """An evaluation split in memory: N label maps, their photos (and instance maps).

    ``labels``: N x H x W long class ids (dontcare already mapped to ``label_nc``);
    ``images``: N x 3 x H x W uint8; ``instances``: N x 1 x H x W float or None;
    ``names``: file stems.
    """

    labels: torch.Tensor
    images: torch.Tensor
    instances: torch.Tensor | None
    names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(opt: Any, how_many: int = 0, desc: str = "loading eval split") -> EvalSplit:
    """Read a dataset split (``opt``: resolved Options, test-time) into an :class:`EvalSplit`."""
    from tqdm.auto import tqdm

    from spadegan.data.datasets import create_dataset
    from spadegan.data.semantics import instance_map

    dataset = create_dataset(opt)
    n = len(dataset) if how_many <= 0 else min(len(dataset), how_many)
    labels, images, instances, names = [], [], [], []
    shape = None
    for i in tqdm(range(n), desc=desc, unit="img"):
        item = dataset[(i, 0)]
        lab = item["label"][0].round().long()
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
                     torch.stack(instances) if len(instances) == n and n else None, names)


def _split_options(model_opt: Any, args: argparse.Namespace, phase: str) -> Any:
    """Test-time options for reading ``phase`` of the eval dataset at the model's size."""
    mode = args.dataset_mode or ("custom" if args.label_dir else model_opt.dataset_mode)
    if args.label_dir and mode != "custom":
        raise SpadeganError(f"--label_dir is for --dataset_mode custom, not {mode}; use --dataroot for {mode}")
    if mode == "custom" and phase == args.phase and not (args.label_dir and args.image_dir):
        # the saved --label_dir is the training data: scoring on it would look great and mean nothing
        raise SpadeganError("--dataset_mode custom needs --label_dir and --image_dir of the eval split "
                            "(held-out label maps and their photos)")
    crop = args.crop_size or model_opt.crop_size
    changes: dict[str, Any] = dict(
        dataset_mode=mode, phase=phase, isTrain=False, no_flip=True, serial_batches=True,
        preprocess_mode="fixed", crop_size=crop, load_size=crop, seed=0,
    )
    if args.dataroot:
        changes["dataroot"] = args.dataroot
    if mode == "custom" and phase == args.phase:
        if args.label_dir:
            changes.update(label_dir=args.label_dir, image_dir=args.image_dir)
        if args.instance_dir:
            changes["instance_dir"] = args.instance_dir
    return model_opt.replace(**changes)


# ---------------------------------------------------------------------------------------
# segmenter (scorer)
# ---------------------------------------------------------------------------------------


def load_scorer(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> nn.Module:
    """A segmentation network from ``path``: a ``save_segmenter`` file or a TorchScript module.

    Either way the module maps B x 3 x H x W images in [-1, 1] to class logits.
    """
    from .segmenter import load_segmenter

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpadeganError(f"--seg_weights {path} does not exist")
    with warnings.catch_warnings():
        # torch.load warns when it meets a TorchScript archive, and TorchScript itself is
        # deprecated in recent torch; both are expected here, not news for the user.
        warnings.simplefilter("ignore")
        try:
            return load_segmenter(path, device)
        except SpadeganError as first:
            err = first
        try:
            return torch.jit.load(path, map_location=device).eval()
        except Exception:
            raise SpadeganError(
                f"{err}; it is not a TorchScript module either. Pass a file written by "
                "`spadegan eval --train_segmenter` or a scripted model mapping images in [-1, 1] "
                "to logits") from None


def _scorer_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    return int(n) if n is not None else None


@torch.no_grad()
def _predict(model: nn.Module, images_u8: torch.Tensor, size: tuple[int, int], device: torch.device,
             batch_size: int, desc: str, input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Class ids N x H x W of uint8 images.

    With ``input_size`` the images are first resized (bilinear, antialiased) to it, the size
    the segmenter was trained at; the logits are resized (bilinear) to ``size`` if needed.
    """
    from tqdm.auto import tqdm

    out = []
    for chunk in tqdm(images_u8.split(batch_size), desc=desc, unit="batch", leave=False):
        x = from_uint8(chunk).to(device)
        if input_size is not None and tuple(x.shape[-2:]) != tuple(input_size):
            x = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False, antialias=True)
        logits = model(x)
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out)


def segmentation_scores(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        ignore_index: int | None, device: torch.device, batch_size: int = 16,
                        desc: str = "segmenting", input_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """mIoU / accuracies of ``model``'s segmentation of ``images_u8`` against ``labels``.

    ``input_size``: resize the images to this (H, W) before segmenting (see ``_predict``).
    """
    from .miou import confusion_matrix, scores

    pred = _predict(model, images_u8, tuple(labels.shape[-2:]), device, batch_size, desc, input_size)
    if int(pred.max()) >= num_classes:
        raise SpadeganError(
            f"the segmenter predicts class {int(pred.max())} but the dataset has {num_classes} classes; "
            "use a segmenter trained on this dataset's classes")
    conf = confusion_matrix(pred, labels, num_classes, ignore_index=ignore_index)
    return scores(conf)


# ---------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------


def _load_networks(weights: Path, model_opt: Any, device: torch.device, style: str
                   ) -> tuple[nn.Module, nn.Module | None]:
    from spadegan.checkpoint import companion_weights, load_checkpoint

    G = load_checkpoint(weights, "G", opt=model_opt, device=device)
    E = None
    if model_opt.use_vae and style == "encode":
        e_path = companion_weights(weights, "E") or weights.parent / weights.name.replace("_net_G", "_net_E")
        if not e_path.is_file():
            raise SpadeganError(f"--style encode needs the style encoder {e_path}, which is missing; "
                                "use --style random")
        E = load_checkpoint(e_path, "E", opt=model_opt, device=device)
    return G, E


@torch.no_grad()
def synthesize_split(G: nn.Module, split: EvalSplit, opt: Any, device: torch.device, batch_size: int = 16,
                     seed: int = 0, E: nn.Module | None = None, desc: str = "synthesizing") -> torch.Tensor:
    """Synthesized images (N x 3 x H x W uint8) for every label map of ``split``.

    VAE generators get z ~ N(0, I) from a generator seeded with ``seed`` (the same codes
    for every checkpoint, so epochs are compared on equal terms), or, when ``E`` is given,
    z sampled around the encoding of the real photo.
    """
    from tqdm.auto import tqdm

    from spadegan.data.semantics import to_semantics
    from spadegan.networks import sample_z

    gen = torch.Generator().manual_seed(int(seed))
    out = []
    n = len(split)
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            label = split.labels[sl].unsqueeze(1).to(device)
            inst = split.instances[sl].to(device) if split.instances is not None else None
            if not opt.no_instance and inst is None:
                raise SpadeganError("this model uses instance maps (trained without --no_instance) but the "
                                    "eval split has none; pass --instance_dir or a dataset with instance maps")
            sem = to_semantics(label, inst, opt)
            z = None
            if opt.use_vae:
                b = sem.shape[0]
                eps = torch.randn(b, opt.z_dim, generator=gen)
                if E is not None:
                    mu, logvar = E(from_uint8(split.images[sl]).to(device))
                    z = sample_z(mu.float(), logvar.float(), eps=eps)
                else:
                    z = eps.to(device)
            fake = G(sem, z=z)
            out.append(to_uint8(fake))
            bar.update(sl.stop - sl.start)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------
# trivial baseline
# ---------------------------------------------------------------------------------------


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


def _baseline_train_split(model_opt: Any, args: argparse.Namespace, eval_opt: Any,
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


# ---------------------------------------------------------------------------------------
# FID / KID
# ---------------------------------------------------------------------------------------


class _FID:
    """FID/KID against one fixed real set; the Inception net and real features are computed once."""

    def __init__(self, weights: str, real_u8: torch.Tensor, device: torch.device, batch_size: int,
                 kid_subset_size: int) -> None:
        from .fid import FIDUnavailable, load_fid_inception

        self.model = None
        self.reason: str | None = None
        self.real: np.ndarray | None = None
        self.device, self.batch_size, self.kid_subset_size = device, batch_size, kid_subset_size
        try:
            self.model = load_fid_inception(weights or None, device)
        except FIDUnavailable as exc:
            self.reason = exc.reason
            return
        self.real = self._features(real_u8, "FID: real images")

    @property
    def available(self) -> bool:
        return self.model is not None

    def _features(self, images_u8: torch.Tensor, desc: str) -> np.ndarray:
        from tqdm.auto import tqdm

        from .fid import extract_features

        batches = tqdm(images_u8.split(self.batch_size), desc=desc, unit="batch", leave=False)
        return extract_features(self.model, batches, self.device, self.batch_size)

    def __call__(self, fake_u8: torch.Tensor, desc: str) -> dict[str, Any]:
        from .fid import fid_from_features, kid

        if self.model is None:
            return {"fid": None, "kid_mean": None, "kid_std": None}
        fake = self._features(fake_u8, desc)
        if min(len(fake), len(self.real)) < 2:
            return {"fid": None, "kid_mean": None, "kid_std": None}
        k_mean, k_std = kid(self.real, fake, subset_size=self.kid_subset_size)
        return {"fid": fid_from_features(self.real, fake), "kid_mean": k_mean, "kid_std": k_std}


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------


def _resolve_model(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(G weights file, checkpoint folder, description) from --builtin / --checkpoint / --name."""
    from spadegan.checkpoint import resolve_checkpoint

    given = [x for x in (args.builtin and "--builtin", args.checkpoint and "--checkpoint",
                         args.name and "--name") if x]
    if len(given) > 1:
        raise SpadeganError(f"give only one of --builtin, --checkpoint and --name (got {', '.join(given)})")
    if args.builtin:
        folder = builtin_model_dir()
        if not (folder / "latest_net_G.pth").is_file():
            raise SpadeganError(f"the built-in landscapes model is not installed ({folder / 'latest_net_G.pth'} "
                                "is missing); evaluate your own with --name or --checkpoint")
        path, desc = folder, "built-in landscapes model"
    elif args.checkpoint:
        path, desc = Path(args.checkpoint), args.checkpoint
    elif args.name:
        path = Path(args.checkpoints_dir) / args.name
        if not path.is_dir():
            raise SpadeganError(f"no checkpoint folder {path} (from --checkpoints_dir {args.checkpoints_dir} "
                                f"--name {args.name})")
        desc = args.name
    else:
        raise SpadeganError("say which model to evaluate: --name NAME, --checkpoint DIR_OR_FILE or --builtin")
    weights, folder = resolve_checkpoint(path, "G", args.which_epoch)
    return weights, folder, desc


def _epoch_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, G weights) of every `<epoch>_net_G` file; .pth before .safetensors (checkpoint rule)."""
    from spadegan.checkpoint import WEIGHT_SUFFIXES

    found: dict[int, Path] = {}
    for suffix in WEIGHT_SUFFIXES:
        for p in folder.glob(f"*_net_G{suffix}"):
            m = re.fullmatch(r"(\d+)_net_G" + re.escape(suffix), p.name)
            if m:
                found.setdefault(int(m.group(1)), p)
    return sorted(found.items())


def _latest_epoch_position(folder: Path) -> float | None:
    """Where 'latest' sits on the epoch axis, from iter.txt (and the loss log's epoch length)."""
    try:
        nums = [int(float(x)) for x in (folder / "iter.txt").read_text().replace(",", " ").split()]
    except (OSError, ValueError):
        return None
    if len(nums) < 2:
        return None
    epoch, into = nums[0], nums[1]
    if into == 0:
        return float(epoch - 1)  # saved at the end of epoch - 1
    log = folder / "loss_log.txt"
    if log.is_file():
        from .plots import parse_loss_log

        entries = parse_loss_log(log)
        length = max((e["iters"] for e in entries), default=0)
        if length > 0:
            return epoch - 1 + min(1.0, into / length)
    return None


def _weights_epoch(weights: Path, folder: Path) -> float | None:
    m = re.fullmatch(r"(\d+)_net_G\.(?:pth|safetensors)", weights.name)
    if m:
        return float(m.group(1))
    if weights.stem == "latest_net_G":
        return _latest_epoch_position(folder)
    return None


def _class_names(opt: Any, n: int) -> list[str]:
    from spadegan.data.palettes import classes_for_dataset_mode

    try:
        classes = classes_for_dataset_mode(opt.dataset_mode, opt.label_nc)
    except SpadeganError:
        classes = classes_for_dataset_mode("custom", opt.label_nc)
    names = {c.id: c.name for c in classes}
    return [names.get(i, f"class {i}") for i in range(n)]


def _row(seg: dict[str, Any] | None, fid: dict[str, Any] | None, names: list[str],
         seg_dist: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"miou": None, "pixel_accuracy": None, "mean_accuracy": None, "per_class_iou": None,
                           "seg_fd": None, "seg_kid_mean": None, "seg_kid_std": None}
    if seg is not None:
        row.update(miou=seg["miou"], pixel_accuracy=seg["pixel_accuracy"], mean_accuracy=seg["mean_accuracy"],
                   per_class_iou={n: (None if math.isnan(v) else v) for n, v in zip(names, seg["per_class_iou"])})
    if fid is not None:
        row.update(fid)
    if seg_dist is not None:
        row.update(seg_dist)
    return row


def _fmt(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"


def format_table(metrics: dict[str, Any]) -> str:
    """The results table printed by ``spadegan eval`` (mIoU and accuracy in percent)."""
    rows = [("synthesized", metrics["synthesized"]), ("real (mIoU bound, segFD floor)", metrics["real"])]
    if metrics.get("baseline") and metrics["baseline"].get("status", "ok") == "ok":
        rows.append(("baseline: class mean colours", metrics["baseline"]))
    fid_ok = metrics["fid_status"] == "ok"
    sfd = metrics.get("seg_fd") or {"status": "off"}
    sfd_ok = sfd["status"] == "ok"
    sfd_none = "off" if sfd["status"] == "off" else "unavail."
    head = (f"{'':30} {'mIoU':>6} {'acc':>6} {'m.acc':>6} {'FID':>8} {'KID x1e3':>9} "
            f"{'segFD':>7} {'segKID x1e3':>11}")
    lines = [head, "-" * len(head)]
    for title, r in rows:
        is_real = title.startswith("real")
        fid = "-" if is_real else (_fmt(r.get("fid")) if fid_ok else "unavail.")
        kid = "-" if is_real else (_fmt(None if r.get("kid_mean") is None else 1e3 * r["kid_mean"])
                                   if fid_ok else "unavail.")
        sfd_v = _fmt(r.get("seg_fd"), digits=3) if sfd_ok else sfd_none
        skid_v = (_fmt(None if r.get("seg_kid_mean") is None else 1e3 * r["seg_kid_mean"])
                  if sfd_ok else sfd_none)
        lines.append(f"{title:30} {_fmt(r['miou'], True):>6} {_fmt(r['pixel_accuracy'], True):>6} "
                     f"{_fmt(r['mean_accuracy'], True):>6} {fid:>8} {kid:>9} {sfd_v:>7} {skid_v:>11}")
    notes = []
    if metrics["segmenter"]["status"] != "ok":
        notes.append(f"mIoU unavailable: {metrics['segmenter']['reason']}")
    if not fid_ok:
        notes.append(f"FID/KID unavailable: {metrics['fid_reason']}")
    if sfd_ok:
        ref = sfd["reference"]
        notes.append(f"segFD/segKID: distances in the segmenter's feature space to {ref['num_images']} real "
                     f"{ref['phase']} photos (not FID/KID; lower = more like real photos; the real row is "
                     "the floor from two independent real sets); see metrics.json seg_fd.description")
    elif sfd["status"] == "unavailable":
        notes.append(f"segFD/segKID unavailable: {sfd['reason']}")
    if metrics.get("baseline") and metrics["baseline"].get("status") == "unavailable":
        notes.append(f"baseline unavailable: {metrics['baseline']['reason']}")
    notes += metrics.get("notes", [])
    return "\n".join(lines + [f"note: {n}" for n in notes])


def _samples_png(path: Path, split: EvalSplit, fake: torch.Tensor, baseline: torch.Tensor | None,
                 opt: Any, n: int) -> str:
    """A grid: one row per example with label (colours), real photo, synthesized, baseline."""
    from spadegan.visuals import label_palette, save_png

    n = min(n, len(split))
    pal = label_palette(opt)
    cols = []
    ids = split.labels[:n].clamp(0, pal.shape[0] - 1).numpy()
    cols.append(pal[ids])
    cols.append(split.images[:n].permute(0, 2, 3, 1).numpy())
    cols.append(fake[:n].permute(0, 2, 3, 1).numpy())
    if baseline is not None:
        cols.append(baseline[:n].permute(0, 2, 3, 1).numpy())
    h, w = ids.shape[1:]
    gap = 2
    grid = np.full((n * (h + gap) - gap, len(cols) * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        for j, col in enumerate(cols):
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = col[i]
    save_png(grid, path)
    return str(path)


def _write_json(path: Path, obj: Any) -> None:
    from spadegan.fileio import atomic_write_bytes

    def clean(v: Any) -> Any:  # JSON has no NaN: write null
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    atomic_write_bytes(path, (json.dumps(clean(obj), indent=2) + "\n").encode())


def _default_segmenter(eval_opt: Any, model_opt: Any) -> Path | None:
    if eval_opt.label_nc == 10 and "landscapes" in (eval_opt.dataset_mode, model_opt.dataset_mode):
        return BUILTIN_SEGMENTER if BUILTIN_SEGMENTER.is_file() else None
    return None


#: Metrics recorded per checkpoint in ``metrics.json`` "epochs" and plotted against epoch.
_HISTORY_KEYS = ("miou", "pixel_accuracy", "fid", "kid_mean", "seg_fd", "seg_kid_mean")


def _evaluate_main(args: argparse.Namespace) -> int:
    from spadegan.checkpoint import checkpoint_options

    t0 = time.time()
    device = resolve_device(args.device or None)
    weights, folder, desc = _resolve_model(args)
    model_opt = checkpoint_options(folder, train=False)
    model_opt = model_opt.replace(device=str(device))
    eval_opt = _split_options(model_opt, args, args.phase)
    out = Path(args.out) if args.out else (Path("eval_builtin") if args.builtin else folder)
    out.mkdir(parents=True, exist_ok=True)

    split = load_split(eval_opt, args.how_many, desc=f"loading {eval_opt.phase} split")
    h, w = split.labels.shape[-2:]
    num_classes = model_opt.label_nc
    ignore = model_opt.label_nc if model_opt.contain_dontcare_label else None
    names = _class_names(model_opt, num_classes)
    print(f"evaluating {desc} ({weights.name}) on {len(split)} {eval_opt.phase} pairs of "
          f"{eval_opt.dataset_mode} at {w}x{h} on {device}", flush=True)

    # the scorer
    seg_path: Path | None = Path(args.seg_weights) if args.seg_weights else _default_segmenter(eval_opt, model_opt)
    seg_info: dict[str, Any] = {"status": "ok", "reason": None, "weights": str(seg_path) if seg_path else None}
    scorer = None
    if seg_path is None:
        seg_info.update(status="unavailable", reason=(
            "no --seg_weights given (a segmenter for this dataset's classes; train one with "
            "`spadegan eval --train_segmenter`); only the landscapes dataset has a shipped default"))
    else:
        scorer = load_scorer(seg_path, device)
        n_seg = _scorer_classes(scorer)
        if n_seg is not None and n_seg != num_classes:
            raise SpadeganError(f"--seg_weights {seg_path} segments {n_seg} classes but the model has "
                                f"label_nc {num_classes}; use a segmenter trained on this dataset")
    # Objects must appear at the scale the segmenter learned: a 64 px model's images are
    # upsampled for a segmenter trained on 128 px photos (the real photos too, so the upper
    # bound is measured the same way); predictions are compared at the model's resolution.
    seg_h = args.seg_size if args.seg_size != 0 else (getattr(scorer, "image_size", None) or (0, 0))[0]
    seg_input = (int(seg_h), max(1, round(seg_h * w / h))) if seg_h and seg_h > 0 else None
    if seg_input == (h, w):
        seg_input = None
    seg_info["input_size"] = list(seg_input) if seg_input else [h, w]

    # seg_fd / seg_kid: the segmenter's pooled features, against real train photos
    from .segfd import FEATURE_LAYERS, SEG_FD_DESCRIPTION, feature_layers_missing, pooled_features

    sfd: dict[str, Any] = {"status": "ok", "reason": None, "description": SEG_FD_DESCRIPTION,
                           "segmenter": str(seg_path) if seg_path else None, "layers": list(FEATURE_LAYERS),
                           "pooling": "per-channel spatial mean and std", "feature_dim": None,
                           "input_size": seg_info["input_size"], "reference": None,
                           "kid_subset_size": None}
    same_photos = (eval_opt.phase == "train" if eval_opt.dataset_mode != "custom"
                   else bool(args.image_dir) and args.image_dir == args.baseline_image_dir)
    if args.no_seg_fd:
        sfd.update(status="off", reason="--no_seg_fd")
    elif same_photos:
        # the reference would be the evaluated photos themselves: the floor would read 0
        sfd.update(status="unavailable", reason="the eval split is the train split, which seg_fd uses as "
                                                "its reference photos; evaluate a held-out split")
    elif scorer is None:
        sfd.update(status="unavailable", reason="no segmenter (see mIoU)")
    else:
        missing = feature_layers_missing(scorer)
        if missing:
            sfd.update(status="unavailable", reason=missing)

    def seg_scores(images_u8: torch.Tensor, what: str) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        """mIoU scores and, if seg_fd is on, the pooled features from the same forward passes."""
        if scorer is None:
            return None, None

        def run() -> dict[str, Any]:
            return segmentation_scores(scorer, images_u8, split.labels, num_classes, ignore, device,
                                       args.batch_size, desc=f"segmenting {what}", input_size=seg_input)

        if sfd["status"] != "ok":
            return run(), None
        with pooled_features(scorer) as collected:
            scores_ = run()
        return scores_, torch.cat(collected).double().numpy()

    # the train split: the baseline's class colours (all of it) and seg_fd's reference (N photos)
    train: EvalSplit | str | None = None
    if args.baseline or sfd["status"] == "ok":
        train = _baseline_train_split(model_opt, args, eval_opt, 0 if args.baseline else len(split))
    ref_feats: np.ndarray | None = None
    if sfd["status"] == "ok":
        if isinstance(train, str):
            sfd.update(status="unavailable", reason=f"no reference photos: {train}")
        elif len(train) < 2:
            sfd.update(status="unavailable", reason=f"the train split has {len(train)} image(s); need >= 2")
        else:
            from .segfd import segmenter_features

            ref_imgs = train.images[:len(split)]
            ref_feats = segmenter_features(scorer, ref_imgs, device, args.batch_size, seg_input,
                                           desc="seg_fd: reference train photos")
            sfd.update(feature_dim=int(ref_feats.shape[1]),
                       kid_subset_size=min(args.kid_subset_size, len(ref_imgs), len(split)),
                       reference={"phase": "train", "num_images": len(ref_imgs),
                                  "names": [train.names[0], train.names[len(ref_imgs) - 1]]})
            if len(ref_imgs) < len(split):
                # FD's small-sample bias depends on both set sizes: say when they differ
                sfd["note"] = (f"seg_fd: the train split has only {len(ref_imgs)} photos for the reference, "
                               f"fewer than the {len(split)} eval images")

    def seg_dist(feats: np.ndarray | None) -> dict[str, Any] | None:
        from .segfd import seg_distances

        if feats is None or ref_feats is None:
            return None
        return seg_distances(ref_feats, feats, kid_subset_size=args.kid_subset_size, seed=args.seed)

    fid = _FID(args.fid_weights, split.images, device, args.batch_size, args.kid_subset_size)
    notes: list[str] = []
    if fid.available and len(split) < 2048:
        notes.append(f"FID from {len(split)} images per set is biased upwards; compare only runs with "
                     "the same number of images")
    if sfd.get("note"):
        notes.append(sfd["note"])

    # the model
    G, E = _load_networks(weights, model_opt, device, args.style)
    fake = synthesize_split(G, split, model_opt, device, args.batch_size, args.seed, E)
    del G, E
    seg_fake, feats_fake = seg_scores(fake, "synthesized")
    seg_real, feats_real = seg_scores(split.images, "real")
    metrics: dict[str, Any] = {
        "model": desc,
        "weights": str(weights),
        "which_epoch": args.which_epoch,
        "dataset": {"mode": eval_opt.dataset_mode, "dataroot": eval_opt.dataroot if eval_opt.dataset_mode != "custom"
                    else eval_opt.label_dir, "phase": eval_opt.phase, "num_images": len(split), "size": [w, h]},
        "num_classes": num_classes,
        "class_names": names,
        "style": args.style if model_opt.use_vae else None,
        "seed": args.seed,
        "segmenter": seg_info,
        "fid_status": "ok" if fid.available else "unavailable",
        "fid_reason": fid.reason,
        "fid_weights": args.fid_weights or None,
        "seg_fd": sfd,
        "synthesized": _row(seg_fake, fid(fake, "FID: synthesized"), names, seg_dist(feats_fake)),
        "real": _row(seg_real, None, names, seg_dist(feats_real)),
        "baseline": None,
        "epochs": [],
        "plots": {},
        "notes": notes,
    }

    baseline_imgs = None
    if args.baseline:
        if isinstance(train, str):
            metrics["baseline"] = {"status": "unavailable", "reason": train}
        else:
            assert train is not None
            colours, counts = class_mean_colours(train, num_classes)
            baseline_imgs = paint_baseline(split.labels, colours)
            seg_b, feats_b = seg_scores(baseline_imgs, "baseline")
            row = _row(seg_b, fid(baseline_imgs, "FID: baseline"), names, seg_dist(feats_b))
            row.update(status="ok", reason=None, train_images=len(train),
                       class_colours={n: [round(float(c), 2) for c in col] for n, col in zip(names, colours)})
            metrics["baseline"] = row

    # metric against epoch
    history: list[dict[str, Any]] = []
    this_epoch = _weights_epoch(weights, folder)
    if this_epoch is not None:
        history.append({"epoch": this_epoch, "which_epoch": weights.name.split("_net_")[0],
                        **{k: metrics["synthesized"].get(k) for k in _HISTORY_KEYS}})
    if args.all_epochs:
        from tqdm.auto import tqdm

        todo = [(e, p) for e, p in _epoch_checkpoints(folder) if p != weights]
        if not todo:
            notes.append(f"--all_epochs: no <epoch>_net_G.pth files in {folder} besides the evaluated one")
        for epoch, p in tqdm(todo, desc="epochs", unit="ckpt"):
            G, E = _load_networks(p, model_opt, device, args.style)
            f_e = synthesize_split(G, split, model_opt, device, args.batch_size, args.seed, E,
                                   desc=f"synthesizing (epoch {epoch})")
            seg, feats_e = seg_scores(f_e, f"epoch {epoch}")
            row_e = _row(seg, fid(f_e, f"FID: epoch {epoch}"), names, seg_dist(feats_e))
            history.append({"epoch": float(epoch), "which_epoch": str(epoch),
                            **{k: row_e.get(k) for k in _HISTORY_KEYS}})
    history.sort(key=lambda r: (r["epoch"], r["which_epoch"] == "latest"))
    metrics["epochs"] = history

    if not args.no_plots:
        log = folder / "loss_log.txt"
        if log.is_file():
            from .plots import parse_loss_log, plot_loss_log

            if parse_loss_log(log):
                metrics["plots"]["loss_curves"] = plot_loss_log(log, out / "loss_curves.png")
            else:
                notes.append(f"{log} has no loss lines; no loss plot")
        else:
            notes.append(f"no {log.name} in {folder}; no loss plot")
        if history:
            from .plots import plot_metrics

            plotted = [{k: v for k, v in r.items() if k != "which_epoch"} for r in history]
            metrics["plots"]["metrics_vs_epoch"] = plot_metrics(plotted, out / "metrics_vs_epoch.png")
    if args.num_visuals > 0:
        metrics["plots"]["samples"] = _samples_png(out / "samples.png", split, fake, baseline_imgs,
                                                   model_opt, args.num_visuals)
    metrics["seconds"] = round(time.time() - t0, 1)
    _write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'}" + "".join(f", {p}" for p in metrics["plots"].values()), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# training the scorer
# ---------------------------------------------------------------------------------------


class _CropBatches:
    """Re-iterable (images, labels) batches of random crops of a dataset's train split.

    Crops and flips come from the project's dataset transforms (``preprocess_mode`` crop),
    keyed by (seed, epoch, index); each pass over the data is one shuffled epoch. With
    ``jitter`` > 0 each image also gets a random photometric change (brightness, contrast,
    saturation, per-channel tint, of relative strength ``jitter``), so the segmenter learns
    classes from shape, texture and context more than from one palette's exact colours.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, jitter: float = 0.0) -> None:
        self.dataset, self.batch_size, self.jitter = dataset, batch_size, float(jitter)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        b, j = images.shape[0], self.jitter

        def draw(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.from_numpy(self.rng.uniform(lo, hi, (b, *shape)).astype(np.float32))

        x = (images + 1.0) / 2.0
        x = x * draw(1 - j, 1 + j, 1, 1, 1)  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * draw(1 - j, 1 + j, 1, 1, 1) + mean  # contrast
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * draw(1 - j, 1 + j, 1, 1, 1) + grey  # saturation
        x = x * draw(1 - j / 3, 1 + j / 3, 3, 1, 1)  # tint
        return (x.clamp(0, 1) * 2.0 - 1.0)

    def __iter__(self):
        order = self.rng.permutation(len(self.dataset))
        epoch = self.epoch
        self.epoch += 1
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            items = [self.dataset[(int(i), epoch)] for i in order[start:start + self.batch_size]]
            images = torch.stack([it["image"] for it in items])
            if self.jitter > 0:
                images = self._jitter(images)
            yield images, torch.stack([it["label"][0].round().long() for it in items])


def _native_size(dataset: Any) -> tuple[int, int]:
    from PIL import Image

    with Image.open(dataset.label_paths[0]) as im:
        return im.size


def class_frequencies(label_paths: list[str], num_classes: int) -> np.ndarray:
    """Pixel share of each class over label files (ids >= num_classes, e.g. 255, skipped)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from spadegan.data.transforms import label_image_to_ids

    counts = np.zeros(num_classes, np.float64)
    for path in tqdm(label_paths, desc="class frequencies", unit="img", leave=False):
        with Image.open(path) as im:
            ids = np.asarray(label_image_to_ids(im, path)).astype(np.int64).ravel()
        ids = ids[ids >= 0]
        counts += np.bincount(ids[ids < num_classes], minlength=num_classes)[:num_classes]
    total = counts.sum()
    if total == 0:
        raise SpadeganError(f"the label maps hold no pixel of classes 0..{num_classes - 1}")
    return counts / total


def balance_weights(freq: np.ndarray, power: float) -> np.ndarray:
    """Per-class loss weights ``freq ** -power``, scaled so the average pixel weighs 1.

    Absent classes get weight 0 (they have no pixels to weigh anyway).
    """
    w = np.zeros_like(freq)
    seen = freq > 0
    w[seen] = freq[seen] ** -power
    return w / float((freq * w).sum())


def train_segmenter_on_dataset(train_opt: Any, val_opt: Any | None, num_classes: int, steps: int,
                               crop: int, width: int, batch_size: int, lr: float, seed: int,
                               device: torch.device, ignore_index: int = 255, balance: float = 0.0,
                               jitter: float = 0.0) -> tuple[nn.Module, dict[str, Any] | None]:
    """Train a SmallSegmenter on ``train_opt``'s split; score it on ``val_opt``'s split.

    ``train_opt``/``val_opt``: resolved Options (dataset mode, root, phase). Random crops
    of ``crop`` pixels and flips; Adam with a cosine-decayed ``lr``; with ``balance`` > 0
    the loss weights classes by ``frequency ** -balance``; ``jitter`` is the strength of
    the photometric augmentation (see ``_CropBatches``). Returns the model and the val
    scores (None without ``val_opt``).
    """
    from spadegan.data.datasets import create_dataset

    from .segmenter import train_segmenter

    probe = create_dataset(train_opt)
    weights = None
    if balance > 0:
        weights = balance_weights(class_frequencies(probe.label_paths, num_classes), balance)
    w0, h0 = _native_size(probe)
    if crop > min(w0, h0):
        raise SpadeganError(f"--seg_crop {crop} is larger than the training images ({w0}x{h0})")
    opt = train_opt.replace(preprocess_mode="crop", crop_size=crop, load_size=max(w0, h0), isTrain=True,
                            no_flip=False, seed=seed)
    dataset = create_dataset(opt)
    model = train_segmenter(_CropBatches(dataset, batch_size, seed, jitter), num_classes, steps, lr=lr, device=device,
                            width=width, ignore_index=ignore_index, seed=seed, schedule="cosine",
                            class_weights=weights)
    val = None
    if val_opt is not None:
        split = load_split(val_opt, desc="loading val split")
        val = segmentation_scores(model, split.images, split.labels, num_classes, ignore_index, device,
                                  desc="segmenting val")
        val["num_images"] = len(split)
    return model, val


def _train_segmenter_main(args: argparse.Namespace) -> int:
    from spadegan.data.datasets import create_dataset
    from spadegan.options import parse

    from .segmenter import save_segmenter

    if not args.out:
        raise SpadeganError("--train_segmenter needs --out FILE (where to write the segmenter weights)")
    if args.steps < 1:
        raise SpadeganError(f"--steps must be >= 1, got {args.steps}")
    mode = args.dataset_mode or ("custom" if args.label_dir else "landscapes")
    flags = ["--dataset_mode", mode, "--phase", "train", "--no_instance"]
    if args.dataroot:
        flags += ["--dataroot", args.dataroot]
    if args.label_nc:
        flags += ["--label_nc", str(args.label_nc)]
    if mode == "custom":
        if not (args.label_dir and args.image_dir):
            raise SpadeganError("--train_segmenter on a custom dataset needs --label_dir and --image_dir "
                                "(the train split); --baseline_label_dir/--baseline_image_dir are not used")
        flags += ["--label_dir", args.label_dir, "--image_dir", args.image_dir]
    base = parse(flags, train=False)
    device = resolve_device(args.device or None)
    num_classes = base.label_nc
    # dontcare pixels (255) arrive as label_nc when the dataset mode maps them; ignore them
    ignore = base.label_nc if base.contain_dontcare_label else 255
    train_opt = base.replace(phase="train")
    probe_w, probe_h = _native_size(create_dataset(train_opt))
    val_opt = None
    if mode != "custom":
        val_opt = base.replace(phase=args.phase, preprocess_mode="fixed", crop_size=probe_w, load_size=probe_w,
                               aspect_ratio=probe_w / probe_h, isTrain=False, no_flip=True, seed=0)
    t0 = time.time()
    model, val = train_segmenter_on_dataset(train_opt, val_opt, num_classes, args.steps, args.seg_crop,
                                            args.seg_width, args.seg_batch, args.seg_lr, args.seed, device,
                                            ignore_index=ignore, balance=args.seg_balance,
                                            jitter=args.seg_jitter)
    train_s = time.time() - t0
    model.image_size = (probe_h, probe_w)  # the scale it learned; eval resizes other sizes to it
    save_segmenter(model.cpu(), args.out, half=args.half)
    size_kb = os.path.getsize(args.out) / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KB, width {args.seg_width}, {num_classes} classes, "
          f"{args.steps} steps in {train_s:.0f} s)")
    if val is not None:
        names = _class_names(base, num_classes)
        per = ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, val["per_class_iou"]) if not math.isnan(v))
        print(f"{args.phase} ({val['num_images']} real images): mIoU {100 * val['miou']:.2f}, pixel accuracy "
              f"{100 * val['pixel_accuracy']:.2f}, mean accuracy {100 * val['mean_accuracy']:.2f}")
        print(f"per-class IoU: {per}")
    return 0
