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
* **The papers' segmenters** (``--segmenter upernet101_ade20k|deeplabv2_cocostuff|drn105_cityscapes
  --segmenter_weights FILE [FILE]``): the networks SPADE's Table 1 used, loaded from their
  released files, with each reference's preprocessing, prediction protocol and mIoU /
  accuracy accounting (``evaluation/paper_scoring.py``); the protocol is written to
  ``metrics.json`` (``segmenter.protocol``). ``docs/evaluation.md`` gives the commands.
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

Models conditioned on label images (``--label_nc 0``: edges, sketches, colour layouts) have
no class ids: mIoU and the baseline do not apply and the table and ``metrics.json``
(``miou_status: "n/a"``) say so; FID/KID are computed as usual, and seg_fd/seg_kid with the
features of the segmenter given by ``--seg_weights`` (there is no default one for them).

Generated and baseline images are quantised to 8 bits before scoring, as if saved to PNG
and read back (what the paper's protocol does). VAE models draw random styles
(``--style random``, seeded; from the checkpoint's style bank when it has one, else
z ~ N(0, I): ``--style_prior``): the score then depends on the label map alone,
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

import torch

from ..errors import SpadeganError
from ..synthesize.style_bank import STYLE_PRIORS

from .evaluate import evaluate
from .paper_scoring import SEG_RESOLUTIONS
from .paper_segmenter import SEGMENTERS
from .scorer_training import train_scorer_main

__all__ = ["main", "build_parser"]


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def _add_paper_segmenter_flags(group: argparse._ArgumentGroup) -> None:
    """--segmenter and the flags of the papers' protocol (evaluation/paper_scoring.py)."""
    group.add_argument("--segmenter", default="", choices=("",) + tuple(SEGMENTERS),
                   help="score mIoU / accuracy with a paper's segmenter, loaded from its released files "
                        "(--segmenter_weights) and scored as its reference does (docs/evaluation.md)")
    group.add_argument("--segmenter_weights", nargs="+", default=[], metavar="FILE",
                   help="the released file(s) of --segmenter, as downloaded: upernet101_ade20k: "
                        "encoder_epoch_50.pth decoder_epoch_50.pth; deeplabv2_cocostuff: "
                        "deeplabv2_resnet101_msc-cocostuff164k-100000.pth; drn105_cityscapes: "
                        "drn-d-105_ms_cityscapes.pth")
    group.add_argument("--segmenter_preprocessing", default="",
                   help="the segmenter's input convention (default: the one of its current release); "
                        "upernet101_ade20k: rgb_imagenet or bgr_legacy (the SPADE-era baseline-resnet101-upernet)")
    group.add_argument("--segmenter_multiscale", choices=("default", "on", "off"), default="default",
                   help="multi-scale prediction: the reference's default (UperNet: multi-scale over its test "
                        "sizes; DeepLab: its MSC wrapper; DRN: single scale), or forced on/off")
    group.add_argument("--seg_resolution", choices=SEG_RESOLUTIONS, default="model",
                   help="with --segmenter: 'model' segments images at the generator's size against label maps "
                        "resized there (nearest); 'label' upsamples each image (bilinear) to its label map's "
                        "original size and scores there")


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
    m.add_argument("--no_ema", action="store_true",
                   help="runs trained with --ema_decay: evaluate G's last weights, not their moving average")
    m.add_argument("--style", choices=("random", "encode"), default="random",
                   help="VAE models: random styles (see --style_prior), or encode each real photo (official test.py)")
    m.add_argument("--style_prior", choices=STYLE_PRIORS, default="auto",
                   help="--style random: from the checkpoint's style bank (`spadegan style-bank`), from N(0, I) "
                        "(normal), or auto: the bank when the checkpoint has one")
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
    _add_paper_segmenter_flags(s)
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
    r.add_argument("--cache_dir", default="",
                   help="where the real images' statistics (FID features, the paper segmenter's real-photo "
                        "scores) are kept between runs (default: $XDG_CACHE_HOME/spadegan/eval)")
    r.add_argument("--no_cache", action="store_true", help="recompute the real images' statistics every run")
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
    from ..oasis_checkpoint import add_oasis_flags
    add_oasis_flags(ap, skip=("dataset_mode", "crop_size", "label_nc"))
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spadegan eval``; returns the process exit code."""
    args = build_parser().parse_args(list(argv or []))
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if args.batch_size < 1:
        raise SpadeganError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.train_segmenter:
        return train_scorer_main(args)
    return evaluate(args)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# segmenter (scorer)
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# trivial baseline
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# FID / KID
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# training the scorer
# ---------------------------------------------------------------------------------------


