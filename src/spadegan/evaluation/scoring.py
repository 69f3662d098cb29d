"""Scoring images: the segmenter for mIoU / accuracy and FID / KID against one real set.

`load_scorer` reads a segmenter (a `save_segmenter` file or a TorchScript module);
`segmentation_scores` segments uint8 images and compares with the label maps;
`FIDScorer` holds the Inception network and the real images' features for FID/KID.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpadeganError
from ..fileio import files_sha256
from ..visuals import from_uint8
from .cache import StatsCache, split_digest


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


def scorer_classes(model: nn.Module) -> int | None:
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


class FIDScorer:
    """FID/KID against one fixed real set; the Inception net and real features are computed once."""

    def __init__(self, weights: str, real_u8: torch.Tensor, device: torch.device, batch_size: int,
                 kid_subset_size: int, cache: StatsCache | None = None) -> None:
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
        cache = cache or StatsCache(None)
        weights_path = Path(weights)  # load_fid_inception checked it exists (a test's stub loader may not)
        weights_id = files_sha256([weights_path]) if weights_path.is_file() else str(weights_path)
        key = cache.key("fid-real", weights_sha256=weights_id, split=split_digest(real_u8),
                        resize="pytorch-fid: bilinear to 299x299, align_corners=False, no antialias")
        self.real = cache.array(key)
        if self.real is None:
            self.real = self._features(real_u8, "FID: real images")
            cache.put_array(key, self.real)

    @property
    def available(self) -> bool:
        return self.model is not None

    def _features(self, images_u8: torch.Tensor, desc: str) -> np.ndarray:
        from tqdm.auto import tqdm

        from .fid import extract_features

        batches = tqdm(images_u8.split(self.batch_size), desc=desc, unit="batch", leave=False)
        return extract_features(self.model, batches, self.device, self.batch_size)

    def __call__(self, fake_u8: torch.Tensor, desc: str) -> dict[str, Any]:
        """FID, KID (torch-fidelity's subsets) and how FID's matrix square root was computed."""
        from .fid import fid_from_features_details, kid

        empty = {"fid": None, "kid_mean": None, "kid_std": None, "fid_method": None}
        if self.model is None:
            return empty
        fake = self._features(fake_u8, desc)
        if min(len(fake), len(self.real)) < 2:
            return empty
        # KID subsets cannot be larger than the sets: capped here, and metrics.json says so
        subset = min(self.kid_subset_size, len(fake), len(self.real))
        k_mean, k_std = kid(self.real, fake, subset_size=subset)
        details = fid_from_features_details(self.real, fake)
        method = {"method_used": details["method_used"], "eps_retry": details["eps_retry"],
                  "fallback": details["fallback"], "kid_subset_size": subset}
        return {"fid": details["fid"], "kid_mean": k_mean, "kid_std": k_std, "fid_method": method}
