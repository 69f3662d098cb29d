"""A small U-Net segmenter for scoring generated images on datasets without a public one.

The mIoU protocol segments each synthesized image and compares the result with the label map
it was generated from. For COCO-Stuff/ADE20K/Cityscapes the papers use published segmenters;
for our own procedural landscapes (10 classes) we train this compact network on the real
images instead. It is a plain U-Net (three 2x downsamplings, GroupNorm so that train and
eval modes behave the same even for tiny batches), about 0.85M parameters at ``width=32``,
fast enough to train on a CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpadeganError
from ..fileio import atomic_torch_save, load_torch_file
from ..visuals import from_uint8

__all__ = ["SmallSegmenter", "train_segmenter", "save_segmenter", "load_segmenter", "segment"]

_FORMAT = "spadegan-small-segmenter"
_FORMAT_VERSION = 1


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = math.gcd(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
    )


class SmallSegmenter(nn.Module):
    """Tiny U-Net: images B x 3 x H x W in [-1, 1] -> logits B x num_classes x H x W.

    Any H, W work: inputs are padded to a multiple of 8 and the logits cropped back.
    ``image_size`` (H, W), when known, is the size of the images it was trained on (crops
    were taken from images of that size): object scale matters to a CNN, so images of another
    size are best resized to it before segmenting. It is saved by :func:`save_segmenter`.
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        if num_classes < 2:
            raise SpadeganError(f"a segmenter needs num_classes >= 2, got {num_classes}")
        if width < 4:
            raise SpadeganError(f"segmenter width must be >= 4, got {width}")
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.image_size: tuple[int, int] | None = None
        w = self.width
        self.enc0 = _block(3, w)
        self.enc1 = _block(w, 2 * w)
        self.enc2 = _block(2 * w, 4 * w)
        self.bottom = _block(4 * w, 4 * w)
        self.dec2 = _block(8 * w, 2 * w)
        self.dec1 = _block(4 * w, w)
        self.dec0 = _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            # Replicate (not zeros) so the border does not look like a black object.
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        s0 = self.enc0(x)
        s1 = self.enc1(F.max_pool2d(s0, 2))
        s2 = self.enc2(F.max_pool2d(s1, 2))
        y = self.bottom(F.max_pool2d(s2, 2))

        def up(t: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            t = F.interpolate(t, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return torch.cat([t, skip], dim=1)

        y = self.dec2(up(y, s2))
        y = self.dec1(up(y, s1))
        y = self.dec0(up(y, s0))
        return self.head(y)[..., :h, :w]


def _unpack(item: Any) -> tuple[Any, Any]:
    if isinstance(item, dict):
        try:
            return item["image"], item["label"]
        except KeyError as exc:
            raise SpadeganError(
                f"training batches given as dicts need 'image' and 'label' keys, got {sorted(item)}"
            ) from exc
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise SpadeganError(
        f"training batches must be (images, labels) pairs or dicts, got {type(item).__name__}"
    )


def _prepare_images(images: Any) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise SpadeganError(f"segmenter images must be B x 3 x H x W, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return from_uint8(images)
    return images.float()


def _prepare_labels(labels: Any, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.dim() == 4 and labels.shape[1] == num_classes and labels.is_floating_point():
        labels = labels.argmax(dim=1)  # one-hot semantics maps
    elif labels.dim() == 2:
        labels = labels[None]
    if labels.dim() != 3:
        raise SpadeganError(
            f"segmenter labels must be B x H x W (or B x 1 x H x W) class ids, got "
            f"{tuple(labels.shape)}"
        )
    return labels.long()


def _cycle(data: Iterable[Any]) -> Iterator[Any]:
    """Repeat ``data`` forever; fail clearly if it is an exhausted one-shot iterator."""
    while True:
        seen = False
        for item in data:
            seen = True
            yield item
        if not seen:
            raise SpadeganError(
                "the segmenter training data yielded no batches (an exhausted iterator?); "
                "pass a re-iterable such as a list or DataLoader"
            )


def _check_training_settings(num_classes: int, steps: int, lr: float, schedule: str,
                             class_weights: Any) -> torch.Tensor | None:
    """The class weights as a tensor (None without them), or a SpadeganError for bad settings."""
    if steps < 1:
        raise SpadeganError(f"segmenter training steps must be >= 1, got {steps}")
    if lr <= 0:
        raise SpadeganError(f"segmenter learning rate must be > 0, got {lr}")
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        if weight.numel() != num_classes or not torch.isfinite(weight).all() or (weight < 0).any():
            raise SpadeganError(
                f"class_weights must be {num_classes} finite non-negative numbers, got {weight.tolist()}")
    if schedule not in ("constant", "cosine"):
        raise SpadeganError(f"segmenter lr schedule must be 'constant' or 'cosine', got {schedule!r}")
    return weight


def _training_batch(item: Any, num_classes: int, ignore_index: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of one training batch, checked and randomly flipped left-right."""
    images, labels = _unpack(item)
    images = _prepare_images(images)
    labels = _prepare_labels(labels, num_classes)
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
        raise SpadeganError(
            f"image batch {tuple(images.shape)} and label batch {tuple(labels.shape)} "
            "do not match in batch size or H x W"
        )
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    valid = labels[labels != ignore_index]
    bad = valid[(valid < 0) | (valid >= num_classes)]
    if bad.numel():
        raise SpadeganError(
            f"label value {int(bad[0])} is outside 0..{num_classes - 1}; check "
            f"num_classes ({num_classes}) or ignore_index ({ignore_index})"
        )
    return images, labels


def train_segmenter(images_labels_iterable: Iterable[Any], num_classes: int, steps: int,
                    lr: float = 1e-3, device: str | torch.device = "cpu", progress: bool = True,
                    width: int = 32, ignore_index: int = 255, seed: int | None = 0,
                    schedule: str = "constant", class_weights: Any = None) -> SmallSegmenter:
    """Train a :class:`SmallSegmenter` with Adam and cross-entropy for ``steps`` batches.

    The iterable yields ``(images, labels)`` pairs (or dicts with ``image``/``label``):
    images B x 3 x H x W in [-1, 1] (or uint8), labels B x H x W class ids, where
    ``ignore_index`` marks unlabeled pixels. It is re-iterated when exhausted. Each sample is
    flipped left-right with probability 1/2; there are no vertical flips because scene
    layouts (sky above ground) are not upside-down symmetric. ``schedule="cosine"`` decays the
    learning rate from ``lr`` to 0 along a half cosine (better for short budgets than a
    constant rate). ``class_weights`` (``num_classes`` floats) weight the cross-entropy per
    class, e.g. to keep rare small classes from being ignored. Returns the model in eval mode.
    """
    weight = _check_training_settings(num_classes, steps, lr, schedule, class_weights)
    if weight is not None:
        weight = weight.to(device)
    with torch.random.fork_rng(devices=[]):  # reproducible init without touching global RNG
        if seed is not None:
            torch.manual_seed(seed)
        model = SmallSegmenter(num_classes, width)
    model.to(device).train()
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(seed)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    sched = None
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="segmenter", unit="step")
    data = _cycle(images_labels_iterable)
    try:
        for _ in range(steps):
            images, labels = _training_batch(next(data), num_classes, ignore_index, gen)
            logits = model(images.to(device))
            loss = F.cross_entropy(logits, labels.to(device), weight=weight, ignore_index=ignore_index)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if sched is not None:
                sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
    finally:
        if bar is not None:
            bar.close()
    return model.eval()


def save_segmenter(model: SmallSegmenter, path: str | os.PathLike[str], half: bool = False) -> None:
    """Write the weights plus ``num_classes``/``width`` so :func:`load_segmenter` can rebuild it.

    ``half=True`` stores floating-point tensors as float16 (half the file size, for shipping
    in the package); :func:`load_segmenter` casts them back to float32.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    payload = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "num_classes": model.num_classes,
        "width": model.width,
        "image_size": list(model.image_size) if getattr(model, "image_size", None) else None,
        "state_dict": {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
                       for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)  # an interrupted save never leaves a truncated file behind


def load_segmenter(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SmallSegmenter:
    """Rebuild a segmenter written by :func:`save_segmenter`; returned in eval mode."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpadeganError(
            f"segmenter file '{path}' does not exist; train one with train_segmenter() and "
            "save it with save_segmenter()"
        )
    payload = load_torch_file(path, "segmenter file")
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise SpadeganError(
            f"'{path}' is not a spadegan segmenter file (expected one written by save_segmenter())"
        )
    if payload.get("version") != _FORMAT_VERSION:
        raise SpadeganError(
            f"segmenter file '{path}' has format version {payload.get('version')}, this "
            f"spadegan reads version {_FORMAT_VERSION}; retrain or upgrade spadegan"
        )
    model = SmallSegmenter(int(payload["num_classes"]), int(payload["width"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise SpadeganError(f"segmenter file '{path}' has mismatching weights: {exc}") from exc
    size = payload.get("image_size")  # absent in files written before it existed
    model.image_size = (int(size[0]), int(size[1])) if size else None
    return model.to(device).eval()


@torch.no_grad()
def segment(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Class ids (B x H x W, long, on the input's device) for images in [-1, 1].

    Runs in eval mode without gradients, ``batch_size`` images at a time; the model's
    train/eval mode is restored afterwards.
    """
    x = _prepare_images(images)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(chunk.to(device)).argmax(dim=1) for chunk in x.split(max(1, batch_size))]
    finally:
        model.train(was_training)
    return torch.cat(out).to(x.device)
