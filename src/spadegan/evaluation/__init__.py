"""Evaluation: FID/KID (InceptionV3 from a user-given weights file), mIoU, a small
segmenter for datasets without a public one, seg_fd/seg_kid (realism in that segmenter's
feature space, for when the Inception weights are unavailable), and training/metric plots.

The papers' segmenters (UperNet-101 for ADE20K, DeepLabV2 for COCO-Stuff, DRN-D-105 for
Cityscapes) load from their released files: `paper_segmenter.load`; their accounting is in
`paper_scoring`.

Heavy optional dependencies (scipy for FID, matplotlib for plots) are imported only when
the function needing them runs, so importing this package stays cheap.
"""

from .fid import (
    FID_WEIGHTS_FILENAME,
    FIDInceptionV3,
    FIDUnavailable,
    activation_statistics,
    compute_fid_kid,
    extract_features,
    fid_from_features,
    fid_from_features_details,
    frechet_distance_details,
    frechet_distance,
    kid,
    load_fid_inception,
)
from .miou import confusion_matrix, scores
from .plots import parse_loss_log, plot_loss_log, plot_metrics
from .segfd import (
    FEATURE_LAYERS,
    seg_distances,
    segmenter_features,
)
from .segmenter import (
    SmallSegmenter,
    load_segmenter,
    save_segmenter,
    segment,
    train_segmenter,
)

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FIDInceptionV3",
    "FIDUnavailable",
    "activation_statistics",
    "compute_fid_kid",
    "extract_features",
    "fid_from_features",
    "fid_from_features_details",
    "frechet_distance_details",
    "frechet_distance",
    "kid",
    "load_fid_inception",
    "confusion_matrix",
    "scores",
    "parse_loss_log",
    "plot_loss_log",
    "plot_metrics",
    "FEATURE_LAYERS",
    "seg_distances",
    "segmenter_features",
    "SmallSegmenter",
    "load_segmenter",
    "save_segmenter",
    "segment",
    "train_segmenter",
]
