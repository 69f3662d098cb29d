"""mIoU and accuracy as the papers computed them, with their published segmenters.

The SPADE paper (Sec. 4) scores generated images with a segmenter per dataset; each
reference repository turns its predictions into numbers its own way, and the differences
are large enough to make tables incomparable (SPADE #100: Cityscapes accuracy 93.5 vs 81.9
from the ignored pixels alone). This module reproduces each reference's accounting from one
confusion matrix summed over the whole split (never a mean of per-image scores):

- ADE20K (CSAILVision `eval.py`, `intersectionAndUnion`): ids 1..150 are classes 0..149, 0
  ("other") is ignored; mIoU is the mean over **all 150 classes** of I / (U + 1e-10), so a
  class absent from both the labels and the predictions counts as 0; pixel accuracy over
  labelled pixels.
- COCO-Stuff (deeplab-pytorch `metric.scores`): 182 classes, 255 ignored; mIoU is the
  nanmean of per-class IoU over classes with at least one labelled pixel; also its mean
  accuracy and frequency-weighted IoU.
- Cityscapes (fyu/drn `fast_hist`, `per_class_iu`): the 35 label ids mapped to the 19 train
  ids (cityscapesScripts), everything else ignored; mIoU = nanmean of per-class IoU.

Pixel accuracy is reported twice: over the scored pixels only (what each reference's own
histogram gives) and over all pixels with ignored ones counted as wrong
(`pixel_accuracy_all_pixels`, the convention behind SPADE's ~82 % on Cityscapes; TSIT #1,
CC-FPSE #4). `ACCOUNTING` describes each choice for metrics.json.

Resolution protocols (`SEG_RESOLUTIONS`): `model` segments the images at the generator's
size against label maps resized there with nearest neighbour (OASIS #5, CLADE #3);
`label` upsamples each generated image (bilinear) to its label map's original size and
scores at full resolution (how OASIS #18 reproduced SPADE's Cityscapes mIoU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpadeganError
from ..fileio import files_sha256
from .miou import confusion_matrix
from .paper_segmenter import IGNORE, SEGMENTERS, PaperSegmenter, dataset_targets

__all__ = ["ACCOUNTING", "SEG_RESOLUTIONS", "paper_scores", "file_ids", "PaperScorer",
           "segmenter_class_names"]

SEG_RESOLUTIONS = ("model", "label")

ACCOUNTING: dict[str, dict[str, Any]] = {
    "ade20k": {
        "reference": "CSAILVision/semantic-segmentation-pytorch eval.py (intersectionAndUnion, accuracy)",
        "labels": "ADE20K ids 1..150 -> classes 0..149; id 0 ('other') ignored",
        "miou": "mean over all 150 classes of intersection / (union + 1e-10), summed over the split "
                "(classes absent from labels and predictions count as 0)",
    },
    "cocostuff": {
        "reference": "kazuto1011/deeplab-pytorch libs/utils/metric.py scores",
        "labels": "COCO-Stuff ids 0..181 are the classes; 255 (unlabelled) ignored",
        "miou": "nanmean of per-class IoU over classes with at least one labelled pixel, summed over the split",
    },
    "cityscapes": {
        "reference": "fyu/drn segment.py (fast_hist, per_class_iu)",
        "labels": "the 35 label ids -> 19 train ids (cityscapesScripts labels.py); all other ids ignored",
        "miou": "nanmean of per-class IoU, i.e. over classes labelled or predicted (a non-empty union), "
                "summed over the split",
    },
}
_PIXEL_ACCURACY = ("pixel_accuracy: correct / scored pixels (ignored pixels left out, as the reference's "
                   "histogram); pixel_accuracy_all_pixels: correct / all pixels (ignored pixels count as "
                   "wrong; SPADE's Cityscapes accuracy, SPADE #100)")


def paper_scores(conf: np.ndarray, ignored_pixels: int, miou_over: str) -> dict[str, Any]:
    """A reference's scores from a confusion matrix (rows = label, columns = prediction).

    `miou_over`: "all_classes" (ADE20K: I / (U + 1e-10) averaged over every class),
    "labelled_classes" (COCO-Stuff: classes with at least one labelled pixel) or
    "union_classes" (Cityscapes: nanmean, i.e. classes labelled or predicted).
    """
    c = np.asarray(conf, dtype=np.float64)
    tp, per_label, per_pred = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    union = per_label + per_pred - tp
    scored = c.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
        acc = tp / per_label
    if miou_over == "all_classes":
        miou = float(np.mean(tp / (union + 1e-10)))
    elif miou_over in ("labelled_classes", "union_classes"):
        present = per_label > 0 if miou_over == "labelled_classes" else union > 0
        miou = float(np.mean(iou[present])) if present.any() else float("nan")
    else:
        raise SpadeganError(f"unknown mIoU accounting {miou_over!r}")
    freq = per_label / scored if scored else per_label
    fw = freq > 0
    return {
        "miou": miou,
        "pixel_accuracy": float(tp.sum() / scored) if scored else float("nan"),
        "pixel_accuracy_all_pixels": float(tp.sum() / (scored + ignored_pixels)) if scored + ignored_pixels else float("nan"),
        "mean_accuracy": float(np.nanmean(acc[per_label > 0])) if (per_label > 0).any() else float("nan"),
        "frequency_weighted_iou": float((freq[fw] * iou[fw]).sum()) if fw.any() else float("nan"),
        "per_class_iou": [float(v) for v in iou],
        "per_class_accuracy": [float(v) for v in acc],
        "scored_pixels": int(scored),
        "ignored_pixels": int(ignored_pixels),
    }


def file_ids(labels: torch.Tensor, opt: Any) -> np.ndarray:
    """An eval split's label ids -> the ids the dataset's label files hold.

    The split maps dontcare (255) to `label_nc`; ade20k mode keeps its ids 0..150 as they are
    (`data/datasets.py`), so there the ids are the files' already.
    """
    ids = labels.cpu().numpy().astype(np.int64)
    if opt.dataset_mode != "ade20k" and opt.contain_dontcare_label:
        ids = np.where(ids == opt.label_nc, 255, ids)
    return ids


class PaperScorer:
    """A paper segmenter's mIoU / accuracy of image sets against one split's label maps."""

    def __init__(self, segmenter: PaperSegmenter, multiscale: bool | None, resolution: str,
                 batch_size: int, device: torch.device) -> None:
        if resolution not in SEG_RESOLUTIONS:
            raise SpadeganError(f"--seg_resolution {resolution!r}: choose one of {', '.join(SEG_RESOLUTIONS)}")
        self.segmenter, self.multiscale, self.resolution = segmenter, multiscale, resolution
        self.batch_size, self.device = batch_size, device
        self.dataset = segmenter.info.dataset

    def protocol(self) -> dict[str, Any]:
        """Everything that decides the numbers, for metrics.json."""
        seg = self.segmenter
        return {
            "segmenter": seg.name, "dataset": self.dataset, "files": [str(p) for p in seg.files],
            "files_sha256": files_sha256(seg.files), "preprocessing": seg.preprocessing,
            "prediction": ("multi-scale" if self.multiscale else "single-scale" if self.multiscale is False
                           else "the reference's default"),
            "multiscale": self.multiscale,
            "resolution": self.resolution,
            "resolution_rule": ("images at the generator's size, label maps resized to it with nearest neighbour"
                                if self.resolution == "model" else
                                "generated images upsampled (bilinear, align_corners=False) to each label "
                                "map's original size, scored at full resolution"),
            "accounting": {**ACCOUNTING[self.dataset], "pixel_accuracy": _PIXEL_ACCURACY,
                           "miou_over": SEGMENTERS[seg.name].miou_over},
            "reference": SEGMENTERS[seg.name].reference,
        }

    def _predict_model_size(self, images_u8: torch.Tensor, desc: str) -> torch.Tensor:
        from tqdm.auto import tqdm

        out = [self.segmenter.predict_batch(chunk, self.multiscale)
               for chunk in tqdm(images_u8.split(self.batch_size), desc=desc, unit="batch", leave=False)]
        return torch.cat(out)

    def scores(self, images_u8: torch.Tensor, labels: np.ndarray | None,
               label_files: Sequence[str] | None, desc: str) -> dict[str, Any]:
        """Scores of N uint8 images against the split's label ids (model resolution: `labels`,
        N x H x W file ids) or its label files (label resolution: read at their own size)."""
        info = SEGMENTERS[self.segmenter.name]
        n = self.segmenter.num_classes
        conf = np.zeros((n, n), dtype=np.int64)
        ignored = 0
        if self.resolution == "model":
            assert labels is not None
            pred = self._predict_model_size(images_u8, desc).numpy()
            pairs = zip(pred, labels)
        else:
            pairs = self._label_size_pairs(images_u8, label_files, desc)
        for pred_map, label_map in pairs:
            target = dataset_targets(self.dataset, label_map)
            ignored += int((target == IGNORE).sum())
            conf = confusion_matrix(pred_map, target, n, ignore_index=IGNORE, conf=conf)
        return paper_scores(conf, ignored, info.miou_over)

    def _label_size_pairs(self, images_u8: torch.Tensor, label_files: Sequence[str] | None, desc: str):
        """(prediction, label ids) per image, the image upsampled to its label file's size."""
        from tqdm.auto import tqdm

        from ..data.files import open_image

        if not label_files or len(label_files) != len(images_u8):
            raise SpadeganError("--seg_resolution label needs the split's label files")
        for image, path in tqdm(list(zip(images_u8, label_files)), desc=desc, unit="img", leave=False):
            label = np.asarray(open_image(path)).astype(np.int64)
            if label.ndim != 2:
                raise SpadeganError(f"{path}: a label map must be a single-channel id image, got shape {label.shape}")
            size = label.shape[-2:]
            big = image[None].float()
            if tuple(big.shape[-2:]) != tuple(size):
                big = F.interpolate(big, size=size, mode="bilinear", align_corners=False)
            big = big.round().clamp(0, 255).to(torch.uint8)
            yield self.segmenter.predict_batch(big, self.multiscale)[0].numpy(), label


def segmenter_class_names(name: str) -> list[str]:
    """The names of a paper segmenter's output classes, in channel order."""
    from ..data.palettes import load_classes
    from .paper_segmenter import CITYSCAPES_TRAIN_IDS

    dataset = SEGMENTERS[name].dataset
    if dataset == "ade20k":  # channel c is ADE20K id c + 1
        by_id = {c.id: c.name for c in load_classes("ade20k")}
        return [by_id[i + 1] for i in range(150)]
    if dataset == "cocostuff":
        by_id = {c.id: c.name for c in load_classes("coco")}
        return [by_id.get(i, f"class {i}") for i in range(182)]
    by_id = {c.id: c.name for c in load_classes("cityscapes")}
    by_train = {train: by_id[label] for label, train in CITYSCAPES_TRAIN_IDS.items()}
    return [by_train[i] for i in range(19)]
