"""Realism measured in a segmenter's feature space: ``seg_fd`` and ``seg_kid``.

FID/KID need the standard InceptionV3 weights, which are not always at hand (nothing is
downloaded at run time), and mIoU only says whether the label map can be read back from an
image: a flat painting of each class in its mean colour can score *higher* than the real
photos. These two metrics say whether images *look like* the real ones to a network that
has learned the domain, with the segmenter the evaluation already uses (for the procedural
landscapes, the one shipped in the package):

* each image (uint8, resized to the segmenter's input size as for mIoU) runs through the
  segmenter; the output of every block of its U-Net (``enc0`` .. ``dec0``, seven scales
  from full resolution to 1/8 and back) is pooled over space into the per-channel **mean
  and standard deviation**. The std of early layers responds to texture and fine detail;
  the deep layers to which classes and layouts appear. Concatenated: ``30 * width``
  numbers per image (480 for the shipped width-16 segmenter).
* ``seg_fd``: the Fréchet distance between Gaussians fitted to two such feature sets
  (:func:`spadegan.evaluation.fid.fid_from_features`); ``seg_kid``: the unbiased MMD^2 with
  KID's cubic polynomial kernel (:func:`spadegan.evaluation.fid.kid`).

They are *not* FID/KID: the numbers depend on this particular segmenter and are comparable
only between runs scored with the same segmenter file, the same reference set and the same
number of images (Fréchet distances from a few hundred images are biased upwards, and more
so with more feature dimensions than images). Always read them next to the floor row, two
independent sets of real photos, which shows the distance sampling noise alone gives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpadeganError
from ..visuals import from_uint8

__all__ = [
    "FEATURE_LAYERS",
    "SEG_FD_DESCRIPTION",
    "feature_layers_missing",
    "pooled_features",
    "segmenter_features",
    "seg_distances",
]

#: The SmallSegmenter blocks whose outputs are pooled, from full resolution down and back up.
FEATURE_LAYERS: tuple[str, ...] = ("enc0", "enc1", "enc2", "bottom", "dec2", "dec1", "dec0")

SEG_FD_DESCRIPTION = (
    "seg_fd: Frechet distance, seg_kid: kernel (KID-style) distance, between the per-channel "
    "spatial mean and std of every U-Net block of the segmenter (its own features, not "
    "Inception: not FID/KID, comparable only with the same segmenter, reference set and "
    "number of images); lower = closer to real photos; the real row (two independent sets of "
    "real photos) is the floor sampling noise alone gives"
)


def feature_layers_missing(model: nn.Module, layers: Sequence[str] = FEATURE_LAYERS) -> str | None:
    """Why ``model``'s features cannot be hooked (None if they can).

    Forward hooks need an eager ``nn.Module`` with the named blocks; a TorchScript module
    or another architecture has no such layers.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return ("the segmenter is a TorchScript module; seg_fd needs a SmallSegmenter file "
                "(written by `spadegan eval --train_segmenter`) whose layers can be read")
    missing = [n for n in layers if not isinstance(getattr(model, n, None), nn.Module)]
    if missing:
        return (f"the segmenter ({type(model).__name__}) has no layers {', '.join(missing)}; "
                "seg_fd needs a SmallSegmenter file (written by `spadegan eval --train_segmenter`)")
    return None


@contextmanager
def pooled_features(model: nn.Module, layers: Sequence[str] = FEATURE_LAYERS) -> Iterator[list[torch.Tensor]]:
    """Collect pooled features of every forward pass of ``model`` while the block is active.

    Yields a list that receives, per forward pass, one B x D float32 tensor (on the CPU):
    for each layer in ``layers`` the per-channel spatial mean, then the per-channel spatial
    std, concatenated in layer order. Hooks are removed on exit. Collecting during the
    forward passes the mIoU scoring makes anyway costs almost nothing extra.
    """
    reason = feature_layers_missing(model, layers)
    if reason:
        raise SpadeganError(reason)
    collected: list[torch.Tensor] = []
    current: dict[str, torch.Tensor] = {}

    def grab(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            o = output.detach().float()
            current[name] = torch.cat([o.mean(dim=(2, 3)), o.std(dim=(2, 3), correction=0)], dim=1).cpu()
            if name == layers[-1]:  # the last block of this forward pass: one row per image
                collected.append(torch.cat([current.pop(n) for n in layers], dim=1))
        return hook

    handles = [getattr(model, n).register_forward_hook(grab(n)) for n in layers]
    try:
        yield collected
    finally:
        for h in handles:
            h.remove()


def _stack(collected: list[torch.Tensor]) -> np.ndarray:
    if not collected:
        return np.zeros((0, 0))
    return torch.cat(collected).double().numpy()


@torch.no_grad()
def segmenter_features(model: nn.Module, images_u8: torch.Tensor, device: torch.device | str = "cpu",
                       batch_size: int = 16, input_size: tuple[int, int] | None = None,
                       desc: str = "segmenter features") -> np.ndarray:
    """N x D pooled segmenter features (see :func:`pooled_features`) of uint8 images.

    ``images_u8``: N x 3 x H x W uint8. With ``input_size`` the images are first resized
    (bilinear, antialiased) to it, exactly as for mIoU scoring, so that features of every
    image set are taken at the scale the segmenter learned.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise SpadeganError(f"batch_size must be >= 1, got {batch_size}")
    if images_u8.dim() != 4 or images_u8.shape[1] != 3 or images_u8.dtype != torch.uint8:
        raise SpadeganError(f"expected N x 3 x H x W uint8 images, got {tuple(images_u8.shape)} "
                            f"{images_u8.dtype}")
    was_training = model.training
    model.eval()
    try:
        with pooled_features(model) as collected:
            for chunk in tqdm(images_u8.split(batch_size), desc=desc, unit="batch", leave=False):
                x = from_uint8(chunk).to(device)
                if input_size is not None and tuple(x.shape[-2:]) != tuple(input_size):
                    x = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False, antialias=True)
                model(x)
    finally:
        model.train(was_training)
    return _stack(collected)


def seg_distances(reference: np.ndarray, feats: np.ndarray, kid_subset_size: int = 1000,
                  kid_subsets: int = 100, seed: int = 0) -> dict[str, float | None]:
    """``seg_fd``, ``seg_kid_mean``, ``seg_kid_std`` between two N x D feature sets.

    The Fréchet distance uses the exact low-rank formula when a set has no more images than
    feature dimensions (see :func:`spadegan.evaluation.fid.fid_from_features`). With fewer
    than 2 images in a set every value is None.
    """
    from .fid import fid_from_features, kid

    reference, feats = np.asarray(reference), np.asarray(feats)
    if min(len(reference), len(feats)) < 2:
        return {"seg_fd": None, "seg_kid_mean": None, "seg_kid_std": None}
    k_mean, k_std = kid(reference, feats, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    return {"seg_fd": fid_from_features(reference, feats), "seg_kid_mean": k_mean, "seg_kid_std": k_std}
