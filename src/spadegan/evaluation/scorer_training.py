"""`spadegan eval --train_segmenter`: train the small U-Net scorer on a dataset's real train
images (random crops, flips, optional photometric jitter and class balancing) and report its
val mIoU; that is how the shipped landscapes segmenter was made."""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import resolve_device
from ..errors import SpadeganError
from .report import class_names
from .scoring import segmentation_scores
from .split import load_split


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


def native_size(dataset: Any) -> tuple[int, int]:
    from PIL import Image

    with Image.open(dataset.label_paths[0]) as im:
        return im.size


def class_frequencies(label_paths: list[str], num_classes: int) -> np.ndarray:
    """Pixel share of each class over label files (ids >= num_classes, e.g. 255, skipped)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..data.transforms import label_image_to_ids

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
    from ..data.datasets import create_dataset

    from .segmenter import train_segmenter

    probe = create_dataset(train_opt)
    weights = None
    if balance > 0:
        weights = balance_weights(class_frequencies(probe.label_paths, num_classes), balance)
    w0, h0 = native_size(probe)
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


def train_scorer_main(args: argparse.Namespace) -> int:
    from ..data.datasets import create_dataset
    from ..options import parse

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
    probe_w, probe_h = native_size(create_dataset(train_opt))
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
        names = class_names(base, num_classes)
        per = ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, val["per_class_iou"]) if not math.isnan(v))
        print(f"{args.phase} ({val['num_images']} real images): mIoU {100 * val['miou']:.2f}, pixel accuracy "
              f"{100 * val['pixel_accuracy']:.2f}, mean accuracy {100 * val['mean_accuracy']:.2f}")
        print(f"per-class IoU: {per}")
    return 0
