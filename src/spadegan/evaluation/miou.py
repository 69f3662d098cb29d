"""Segmentation scores (mIoU, pixel accuracy) from an accumulated confusion matrix.

SPADE papers score generated images by segmenting them with an off-the-shelf network and
comparing with the input label map; this module does the comparison. Accumulating one
confusion matrix over the whole set (rather than averaging per-image IoUs) is the standard
dataset-level mIoU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import SpadeganError

__all__ = ["confusion_matrix", "scores"]


def _to_numpy_int(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise SpadeganError(f"{name} must hold integer class ids, got fractional values")
    elif arr.dtype.kind not in "iub":
        raise SpadeganError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64).ravel()


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255,
                     conf: np.ndarray | None = None) -> np.ndarray:
    """num_classes x num_classes counts, rows = target class, columns = predicted class.

    ``pred`` and ``target`` are same-shaped integer maps (torch or numpy, any shape). Pixels
    whose target equals ``ignore_index`` are skipped. Pass the previous result as ``conf``
    to accumulate over a dataset (it is updated in place and returned).
    """
    if num_classes < 1:
        raise SpadeganError(f"num_classes must be >= 1, got {num_classes}")
    p = _to_numpy_int(pred, "pred")
    t = _to_numpy_int(target, "target")
    pred_shape = tuple(pred.shape) if hasattr(pred, "shape") else None
    target_shape = tuple(target.shape) if hasattr(target, "shape") else None
    if p.shape != t.shape:
        raise SpadeganError(
            f"prediction shape {pred_shape} does not match label shape {target_shape}; "
            "resize the segmentation (nearest) to the label size first"
        )
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    bad_t = (t < 0) | (t >= num_classes)
    if bad_t.any():
        raise SpadeganError(
            f"label value {int(t[bad_t][0])} is outside 0..{num_classes - 1}; check "
            f"num_classes ({num_classes}) or set ignore_index to the dontcare id"
        )
    bad_p = (p < 0) | (p >= num_classes)
    if bad_p.any():
        raise SpadeganError(
            f"predicted class {int(p[bad_p][0])} is outside 0..{num_classes - 1}; the "
            f"segmenter must predict exactly num_classes ({num_classes}) classes"
        )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    counts = counts.reshape(num_classes, num_classes)
    if conf is None:
        return counts.astype(np.int64)
    if conf.shape != (num_classes, num_classes):
        raise SpadeganError(
            f"cannot accumulate into a confusion matrix of shape {conf.shape} with "
            f"num_classes={num_classes}"
        )
    conf += counts
    return conf


def scores(conf: Any) -> dict[str, Any]:
    """Scores from a confusion matrix (rows = target, columns = prediction).

    Returns ``miou``, ``pixel_accuracy``, ``mean_accuracy`` (floats) and
    ``per_class_iou``, ``per_class_accuracy`` (lists of floats). A class absent from both
    prediction and target has an undefined IoU (NaN) and is left out of ``miou``; a class
    absent from the target has an undefined accuracy and is left out of ``mean_accuracy``.
    All values are NaN for an empty matrix.
    """
    c = np.asarray(conf.cpu().numpy() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise SpadeganError(f"confusion matrix must be square, got shape {c.shape}")
    tp = np.diag(c)
    per_target = c.sum(axis=1)
    per_pred = c.sum(axis=0)
    union = per_target + per_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(per_target > 0, tp / per_target, np.nan)
    total = c.sum()

    def nanmean(v: np.ndarray) -> float:
        # np.nanmean warns on all-NaN input; an empty evaluation is simply NaN.
        finite = v[~np.isnan(v)]
        return float(finite.mean()) if finite.size else float("nan")

    return {
        "miou": nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": nanmean(acc),
        "per_class_iou": [float(v) for v in iou],
        "per_class_accuracy": [float(v) for v in acc],
    }
