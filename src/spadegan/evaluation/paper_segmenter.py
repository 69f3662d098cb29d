"""The segmenters the papers scored with, loaded from their released files.

`load(name, files, preprocessing=None)` -> `PaperSegmenter`:

- `upernet101_ade20k`: CSAILVision UperNet-ResNet101 (`encoder_epoch_50.pth`,
  `decoder_epoch_50.pth`); preprocessing `rgb_imagenet` (the current release) or `bgr_legacy`
  (the SPADE-era `baseline-resnet101-upernet` files: BGR 0-255 minus a mean).
- `deeplabv2_cocostuff`: kazuto1011 DeepLabV2-ResNet101 with its multi-scale (MSC) wrapper
  (`deeplabv2_resnet101_msc-cocostuff164k-100000.pth`).
- `drn105_cityscapes`: fyu/drn DRN-D-105 (`drn-d-105_ms_cityscapes.pth`), 19 train ids.

`probabilities(image)` is the network run once on the image at its own size with the
reference's preprocessing, its class probabilities at the image's size; `predict(image)` is the
class map under the reference's default evaluation protocol. `targets(label)` turns a label map
of the dataset's own ids into the class ids the segmenter predicts (ignored pixels = 255);
`evaluation.paper_scoring` turns predictions into each reference's scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..device import resolve_device
from ..errors import SpadeganError
from .paper import deeplab, drn, upernet
from .paper.images import as_uint8_batch
from .paper.weights import check_files

__all__ = ["SEGMENTERS", "PaperSegmenter", "load", "IGNORE"]

#: Target id of pixels no score counts (dontcare, unlabelled, classes outside the benchmark).
IGNORE = 255


@dataclass(frozen=True)
class SegmenterInfo:
    """What a paper segmenter is: its dataset, network module and evaluation conventions."""

    dataset: str
    dataset_mode: str  # the --dataset_mode whose label files hold this dataset's ids
    network: ModuleType
    reference: str
    miou_over: str  # see paper_scoring.paper_scores: all_classes, labelled_classes or union_classes


SEGMENTERS: dict[str, SegmenterInfo] = {
    "upernet101_ade20k": SegmenterInfo(
        "ade20k", "ade20k", upernet, "CSAILVision/semantic-segmentation-pytorch eval.py", "all_classes"),
    "deeplabv2_cocostuff": SegmenterInfo(
        "cocostuff", "coco", deeplab, "kazuto1011/deeplab-pytorch main.py test + libs/utils/metric.py",
        "labelled_classes"),
    "drn105_cityscapes": SegmenterInfo(
        "cityscapes", "cityscapes", drn, "fyu/drn segment.py test", "union_classes"),
}


class PaperSegmenter:
    """A loaded paper segmenter (eval mode, no gradients)."""

    def __init__(self, name: str, network: Any, preprocessing: str, files: list[Path]) -> None:
        self.name = name
        self.info = SEGMENTERS[name]
        self.network = network
        self.preprocessing = preprocessing
        self.files = files
        self.num_classes = int(network.num_classes)

    @torch.no_grad()
    def probabilities(self, image: Any) -> torch.Tensor:
        """Class probabilities, float32 (C, H, W), of one uint8 RGB image (3, H, W) or (H, W, 3)."""
        batch = as_uint8_batch(image)
        if batch.shape[0] != 1:
            raise SpadeganError(f"probabilities takes one image, got a batch of {batch.shape[0]}")
        return self.network.probabilities(batch)[0].float().cpu()

    @torch.no_grad()
    def predict(self, image: Any, multiscale: bool | None = None) -> torch.Tensor:
        """The class map, int64 (H, W), under the reference's default protocol (or `multiscale`)."""
        batch = as_uint8_batch(image)
        if batch.shape[0] != 1:
            raise SpadeganError(f"predict takes one image, got a batch of {batch.shape[0]}")
        return self.network.predict(batch, multiscale)[0].cpu()

    @torch.no_grad()
    def predict_batch(self, images: torch.Tensor, multiscale: bool | None = None) -> torch.Tensor:
        """Class maps, int64 (B, H, W), of a uint8 RGB batch (B, 3, H, W) of one size."""
        return self.network.predict(as_uint8_batch(images), multiscale).cpu()

    def targets(self, label: Any) -> np.ndarray:
        """A label map of the dataset's own ids -> the segmenter's class ids, IGNORE elsewhere."""
        return dataset_targets(self.info.dataset, label)


def dataset_targets(dataset: str, label: Any) -> np.ndarray:
    """Label ids as the dataset's files hold them -> evaluation class ids (IGNORE = not scored)."""
    ids = np.asarray(label.cpu().numpy() if isinstance(label, torch.Tensor) else label).astype(np.int64)
    if dataset == "ade20k":  # 0 = "other" is ignored; class c is id c + 1
        return np.where(ids == 0, IGNORE, ids - 1)
    if dataset == "cocostuff":  # ids are the classes; 255 = unlabelled
        return np.where((ids >= 0) & (ids < 182), ids, IGNORE)
    if dataset == "cityscapes":  # the 35 label ids -> the 19 train ids (cityscapesScripts)
        return _CITYSCAPES_TABLE[np.clip(ids, 0, 255)]
    raise SpadeganError(f"unknown dataset {dataset!r}")


#: cityscapesScripts `labels.py`: labelId -> trainId for the 19 evaluated classes; every other
#: id (0..6, 9, 10, 14..16, 18, 29, 30, 34 and -1) is ignored.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CITYSCAPES_TABLE = np.full(256, IGNORE, dtype=np.int64)
_CITYSCAPES_TABLE[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())


def load(name: str, files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
         preprocessing: str | None = None, device: str | torch.device | None = "cpu") -> PaperSegmenter:
    """Load the paper segmenter `name` from its released file(s), as users download them.

    `preprocessing` picks one of the network's input conventions (None: its default, the one
    paired with the current release). Files are read with `weights_only=True`; a wrong or
    missing file raises a SpadeganError naming the expected one.
    """
    if name not in SEGMENTERS:
        raise SpadeganError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
    network_module = SEGMENTERS[name].network
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths = check_files(files, network_module.RELEASED_FILES, name)
    choices = network_module.PREPROCESSINGS
    chosen = choices[0] if preprocessing is None else preprocessing
    if chosen not in choices:
        raise SpadeganError(f"segmenter {name} has no preprocessing {chosen!r}; choose one of {', '.join(choices)}")
    network = network_module.load(paths, chosen, resolve_device(device))
    return PaperSegmenter(name, network, chosen, paths)
