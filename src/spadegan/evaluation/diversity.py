"""Style diversity of a VAE generator on the procedural landscapes, and the dark-photo check.

A model conditioned on a label map should paint one map in visibly different styles when
its style code changes. This module measures how different, against what the procedural
renderer itself does (``data/landscapes.py`` paints a scene in six style families: day,
sunset, dusk, night, winter, autumn; ``generate_scene(seed, look=...)`` paints the *same*
label map in any of them):

* **pairwise distances**: for N maps with K images each (K random styles of the model, or
  K style families of the renderer), the mean over maps of the mean over the K(K-1)/2
  pairs of the same map of

  - ``pixel``: the mean absolute difference of the two images, in [0, 1] per channel;
  - ``features``: the root-mean-square difference of the segmenter's pooled features
    (the seg_fd features, ``evaluation/segfd.py``: per-channel mean and std of every U-Net
    block), unscaled, in the space seg_fd measures (per-dimension scaling was tried and
    rejected: channels that never fire on the renderer's photos make it unbounded).

  Both are 0 for identical images. Also reported: the share of same-map pairs whose
  pixel distance is under :data:`NEAR_IDENTICAL` (styles that look alike). The real
  photos' level is the same measure on the renderer's K families of each map (K distinct
  families per map, drawn with the renderer's own family frequencies), and, as
  ``real_random``, on K families drawn independently with those frequencies: what K random
  styles of a model that draws the data's families as often as the data does would score
  (two draws of one family are the same render, distance 0), so the level random styles
  can reach; the distinct-family level is above it.
* **family reach**: each image is given the family whose *class colour profile* is
  nearest (:class:`FamilyClassifier`): the mean RGB of every class (sky, cloud, ...,
  flowers) the image's label map contains (at least ``MIN_CLASS_PIXELS`` pixels),
  compared with each family's mean over the renderer's images of that family, by the
  mean squared difference over the classes both have; ties go to the first family in
  ``STYLES`` order. Reported: how many of the six families the model's random styles
  reach, and how often each.
* **dark-photo check** (``dark_photo_check``): each map's own night render is encoded
  as the style; the result's mean brightness and the segmenter's mIoU against the map
  say whether the scene stays readable (next to the night renders' own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.landscapes import LANDSCAPE_CLASSES as _CLASSES, STYLE_WEIGHTS, STYLES, generate_scene
from ..errors import SpadeganError

__all__ = [
    "MIN_CLASS_PIXELS",
    "FAMILY_RULE",
    "NEAR_IDENTICAL",
    "pairwise_distances",
    "mean_pairwise_distance",
    "near_identical_share",
    "pixel_diversity",
    "feature_diversity",
    "class_colour_profiles",
    "FamilyClassifier",
    "render_looks",
    "mean_brightness",
    "family_looks",
    "random_family_level",
    "reach",
    "fit_family_classifier",
    "style_diversity",
    "dark_photo_check",
]

#: Independent draws of K families per map averaged for the ``real_random`` level (one draw of
#: 50 maps x 4 moves it by about +-0.01 in pixel distance).
RANDOM_FAMILY_DRAWS = 3
#: Two styles of one map whose mean absolute pixel difference is under this look alike
#: (the demo's "three random styles look the same"; 0.05 = 13 levels of 255 on average).
NEAR_IDENTICAL = 0.05

#: A class counts in an image's colour profile when its label map has at least this many pixels of it.
MIN_CLASS_PIXELS = 16

FAMILY_RULE = (
    "nearest family by class colour profile: the mean RGB (in [0, 1]) of every class with >= "
    f"{MIN_CLASS_PIXELS} pixels in the image's label map, against each family's mean over the "
    "renderer's images of that family; distance = mean squared difference over the classes both "
    "have; ties to the first family in STYLES order"
)


def pairwise_distances(x: np.ndarray, metric: str = "l1") -> np.ndarray:
    """N x K(K-1)/2 distances between the K rows of each of N groups (``x``: N x K x D).

    ``metric``: ``"l1"`` (mean absolute difference over D) or ``"rms"`` (root of the mean
    squared difference over D).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 2:
        raise SpadeganError(f"need N x K x D with N >= 1 and K >= 2 (K images per map), got {x.shape}")
    if metric not in ("l1", "rms"):
        raise SpadeganError(f"unknown metric {metric!r}; use 'l1' or 'rms'")
    out = []
    for i in range(x.shape[1]):
        for j in range(i + 1, x.shape[1]):
            d = x[:, i] - x[:, j]
            out.append(np.abs(d).mean(axis=1) if metric == "l1" else np.sqrt((d * d).mean(axis=1)))
    return np.stack(out, axis=1)


def mean_pairwise_distance(x: np.ndarray, metric: str = "l1") -> float:
    """Mean over the N groups of the mean distance between the K(K-1)/2 pairs of each group
    (:func:`pairwise_distances`); 0 when every group's K rows are equal."""
    return float(pairwise_distances(x, metric).mean())


def _pixels(images_u8: torch.Tensor) -> np.ndarray:
    if images_u8.dim() != 5 or images_u8.dtype != torch.uint8:
        raise SpadeganError(f"expected N x K x 3 x H x W uint8 images, got {tuple(images_u8.shape)} "
                            f"{images_u8.dtype}")
    n, k = images_u8.shape[:2]
    return images_u8.reshape(n, k, -1).numpy() / 255.0


def pixel_diversity(images_u8: torch.Tensor) -> float:
    """Mean pairwise absolute pixel difference in [0, 1] of N x K x 3 x H x W uint8 images."""
    return mean_pairwise_distance(_pixels(images_u8), "l1")


def near_identical_share(images_u8: torch.Tensor, below: float = NEAR_IDENTICAL) -> float:
    """The share of same-map pairs of N x K x 3 x H x W images whose pixel distance is under ``below``."""
    return float((pairwise_distances(_pixels(images_u8), "l1") < below).mean())


def feature_diversity(feats: np.ndarray) -> float:
    """Mean pairwise RMS difference of N x K x D features (e.g. the seg_fd features)."""
    return mean_pairwise_distance(feats, "rms")


def class_colour_profiles(images_u8: torch.Tensor, labels: torch.Tensor, num_classes: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean RGB in [0, 1] of each class: (N x C x 3 means, N x C present mask).

    ``images_u8``: N x 3 x H x W uint8; ``labels``: N x H x W class ids. A class is present
    with at least :data:`MIN_CLASS_PIXELS` pixels; absent classes' means are NaN.
    """
    if images_u8.dim() != 4 or labels.dim() != 3 or images_u8.shape[0] != labels.shape[0] \
            or tuple(images_u8.shape[-2:]) != tuple(labels.shape[-2:]):
        raise SpadeganError(f"images {tuple(images_u8.shape)} and label maps {tuple(labels.shape)} do not match")
    n = images_u8.shape[0]
    img = images_u8.reshape(n, 3, -1).double() / 255.0
    onehot = torch.nn.functional.one_hot(labels.reshape(n, -1).long(), num_classes).double()  # N x P x C
    counts = onehot.sum(dim=1)  # N x C
    sums = torch.einsum("ncp,npk->nkc", img, onehot)  # N x C x 3
    present = counts >= MIN_CLASS_PIXELS
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    means[~present] = float("nan")
    return means.numpy(), present.numpy()


@dataclass
class FamilyClassifier:
    """Nearest style family by class colour profile (the rule is :data:`FAMILY_RULE`)."""

    families: tuple[str, ...]
    centroids: np.ndarray  # F x C x 3, NaN where a family never showed a class

    @classmethod
    def fit(cls, means: np.ndarray, present: np.ndarray, families: Sequence[str],
            names: Sequence[str] = STYLES) -> "FamilyClassifier":
        """Centroids from profiles (``class_colour_profiles``) of images of known ``families``."""
        fam = np.asarray(list(families))
        missing = [f for f in names if not (fam == f).any()]
        if missing:
            raise SpadeganError(f"no images of the families {', '.join(missing)} to fit the classifier on")
        cents = []
        for f in names:
            m, p = means[fam == f], present[fam == f]
            cnt = p.sum(axis=0)[:, None]
            with np.errstate(invalid="ignore"):
                cents.append(np.where(p[..., None], m, 0.0).sum(axis=0) / np.where(cnt > 0, cnt, np.nan))
        return cls(tuple(names), np.stack(cents))

    def predict(self, means: np.ndarray, present: np.ndarray) -> list[str]:
        """The nearest family of each profile (N x C x 3 means, N x C present)."""
        d = means[:, None] - self.centroids[None]  # N x F x C x 3
        both = present[:, None, :] & ~np.isnan(self.centroids[None, :, :, 0])  # N x F x C
        sq = np.where(both[..., None], d, 0.0) ** 2
        per = sq.sum(axis=(2, 3)) / np.maximum(both.sum(axis=2), 1) / 3.0
        per = np.where(both.any(axis=2), per, np.inf)
        if not np.isfinite(per).any(axis=1).all():
            raise SpadeganError("an image shares no class with any family's profile; cannot classify it")
        return [self.families[i] for i in per.argmin(axis=1)]


def render_looks(seeds: Sequence[int], looks: Sequence[Sequence[str]], size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The renderer's photos of each seed's map in the given families.

    Returns (N x H x W long label maps, N x K x 3 x H x W uint8 photos), ``looks[i]`` the K
    families of seed i (``generate_scene(seed, look=...)``: one label map, K colourings).
    """
    labels, photos = [], []
    for seed, fams in zip(seeds, looks, strict=True):
        row = []
        for f in fams:
            lab, img, _ = generate_scene(int(seed), size, look=f)
            row.append(torch.from_numpy(img).permute(2, 0, 1))
        labels.append(torch.from_numpy(lab).long())
        photos.append(torch.stack(row))
    if not labels:
        raise SpadeganError("render_looks needs at least one seed")
    return torch.stack(labels), torch.stack(photos)


def mean_brightness(images_u8: torch.Tensor) -> float:
    """Mean Rec. 601 luma in [0, 1] of N x 3 x H x W uint8 images."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    return float((images_u8.double() / 255.0 * w).sum(dim=1).mean())


def check_styles_per_map(k: int) -> None:
    """Raise unless 2 <= k <= the renderer's number of families (the measure's K)."""
    if not 2 <= k <= len(STYLES):
        raise SpadeganError(f"styles per map must be between 2 and {len(STYLES)} (the renderer's families), got {k}")


def family_looks(n: int, k: int, seed: int = 0, distinct: bool = True) -> list[list[str]]:
    """K families per map, drawn with the renderer's family frequencies (seeded): distinct,
    or (``distinct=False``) each drawn independently, as a random style is."""
    check_styles_per_map(k)
    rng = np.random.default_rng(seed)
    p = np.asarray(STYLE_WEIGHTS)
    return [[STYLES[i] for i in rng.choice(len(STYLES), k, replace=not distinct, p=p)] for _ in range(n)]


def reach(families: Sequence[str]) -> dict[str, Any]:
    """How many of the renderer's families occur in ``families``, and how often each."""
    hist = {f: int(sum(1 for x in families if x == f)) for f in STYLES}
    return {"families_reached": sum(1 for v in hist.values() if v), "of": len(STYLES), "histogram": hist}


def segment_features(model: nn.Module, images_u8: torch.Tensor, device: torch.device, batch_size: int,
                     input_size: tuple[int, int] | None) -> np.ndarray:
    """The seg_fd features (``segfd.segmenter_features``) of N x 3 x H x W uint8 images."""
    from .segfd import segmenter_features

    return segmenter_features(model, images_u8, device, batch_size, input_size, desc="diversity: features")


def fit_family_classifier(seeds: Sequence[int], size: int) -> tuple[FamilyClassifier, dict[str, Any]]:
    """A :class:`FamilyClassifier` fitted on every family's render of each seed's map, and its
    accuracy on the same seeds' natural renders (each seed's own family, ``generate_scene``)."""
    labels, photos = render_looks(seeds, [list(STYLES)] * len(seeds), size)
    n, k = photos.shape[:2]
    means, present = class_colour_profiles(photos.reshape(n * k, *photos.shape[2:]),
                                           labels.repeat_interleave(k, dim=0), len(_CLASSES))
    clf = FamilyClassifier.fit(means, present, list(STYLES) * n)
    return clf, {"rule": FAMILY_RULE, "fit_seeds": [int(seeds[0]), int(seeds[-1])], "fit_images": n * k}


def _classify(clf: FamilyClassifier, images_u8: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Families of N x K x 3 x H x W images of N maps (flattened map-major)."""
    n, k = images_u8.shape[:2]
    means, present = class_colour_profiles(images_u8.reshape(n * k, *images_u8.shape[2:]),
                                           labels.repeat_interleave(k, dim=0), len(_CLASSES))
    return clf.predict(means, present)


def style_diversity(G: nn.Module, opt: Any, segmenter: nn.Module, seeds: Sequence[int], k: int, size: int,
                    clf: FamilyClassifier, device: torch.device, batch_size: int = 16,
                    input_size: tuple[int, int] | None = None, seed: int = 0, bank: Any = None
                    ) -> tuple[dict[str, Any], torch.Tensor]:
    """Pairwise pixel / feature distances of K random styles per map, against the renderer's
    K families of the same maps (the real photos' level), and the families the styles reach.

    Map i's style j is the generator's random style of ``synthesize_split(seed=seed + j)``
    (z ~ N(0, I), or from the style ``bank``); the renderer's K families of map i are ``family_looks(N, K, seed)[i]``.
    Returns the report and the model's images (N x K x 3 x H x W uint8).
    """
    from .split import EvalSplit, synthesize_split

    if not opt.use_vae:
        raise SpadeganError("style diversity needs a VAE generator (--use_vae): random styles come from z")
    looks = family_looks(len(seeds), k, seed)
    labels, real = render_looks(seeds, looks, size)
    split = EvalSplit(labels, real[:, 0].contiguous(), None, [str(s) for s in seeds])
    fake = torch.stack([synthesize_split(G, split, opt, device, batch_size, seed + j, None,
                                         desc=f"diversity: style {j + 1}/{k}", bank=bank) for j in range(k)], dim=1)
    n = len(seeds)
    feats = {name: segment_features(segmenter, imgs.reshape(n * k, *imgs.shape[2:]), device, batch_size,
                                    input_size).reshape(n, k, -1) for name, imgs in (("real", real), ("model", fake))}
    real_fams = _classify(clf, real, labels)
    truth = [f for row in looks for f in row]
    out: dict[str, Any] = {"maps": n, "styles_per_map": k, "seeds": [int(seeds[0]), int(seeds[-1])], "size": size}
    for name, imgs in (("model", fake), ("real", real)):
        out[name] = _distances(imgs, feats[name])
    out["real_random"] = random_family_level(seeds, k, size, segmenter, device, batch_size, input_size, seed)
    out["model"]["family_reach"] = reach(_classify(clf, fake, labels))
    out["real"]["family_reach"] = reach(real_fams)
    out["real"]["classifier_accuracy"] = float(np.mean([a == b for a, b in zip(real_fams, truth)]))
    out["ratio_to_real"] = {m: out["model"][m] / out["real"][m] for m in ("pixel", "features")}
    out["ratio_to_real_random"] = {m: out["model"][m] / out["real_random"][m] for m in ("pixel", "features")}
    out["definition"] = {
        "pixel": "mean over maps of the mean over the K(K-1)/2 pairs of the mean |a - b| in [0, 1]",
        "features": "the same with the RMS difference of the segmenter's pooled (seg_fd) features",
        "real": "the renderer's photos of the same maps in K distinct families (generate_scene look=)",
        "real_random": f"the same with the K families drawn independently (the level random styles can reach), "
                       f"mean of {RANDOM_FAMILY_DRAWS} draws",
        "model": f"random styles ({bank.describe() if bank is not None else 'z ~ N(0, I)'}), "
                 f"synthesize_split seeds {seed}..{seed + k - 1}",
        "near_identical_pairs": f"share of same-map pairs with pixel distance < {NEAR_IDENTICAL}",
        "family": FAMILY_RULE}
    return out, fake


def _distances(images_u8: torch.Tensor, feats: np.ndarray) -> dict[str, float]:
    return {"pixel": pixel_diversity(images_u8), "features": feature_diversity(feats),
            "near_identical_pairs": near_identical_share(images_u8)}


def random_family_level(seeds: Sequence[int], k: int, size: int, segmenter: nn.Module, device: torch.device,
                        batch_size: int = 16, input_size: tuple[int, int] | None = None, seed: int = 0
                        ) -> dict[str, Any]:
    """The distances of the renderer's photos of each map in K families drawn independently
    with its frequencies (``family_looks(distinct=False)``), the mean over
    :data:`RANDOM_FAMILY_DRAWS` seeded draws (``seed + 1`` ...), each draw's numbers listed."""
    n, draws = len(seeds), []
    for d in range(RANDOM_FAMILY_DRAWS):
        _, real = render_looks(seeds, family_looks(n, k, seed + 1 + d, distinct=False), size)
        feats = segment_features(segmenter, real.reshape(n * k, *real.shape[2:]), device, batch_size,
                                 input_size).reshape(n, k, -1)
        draws.append(_distances(real, feats))
    out: dict[str, Any] = {m: float(np.mean([x[m] for x in draws])) for m in draws[0]}
    out["draws"] = draws
    return out


def dark_photo_check(G: nn.Module, E: nn.Module, opt: Any, segmenter: nn.Module, seeds: Sequence[int], size: int,
                     device: torch.device, batch_size: int = 16, input_size: tuple[int, int] | None = None,
                     random_styles: torch.Tensor | None = None, seed: int = 0
                     ) -> tuple[dict[str, Any], torch.Tensor]:
    """Each map's own night render encoded as the style: the result's brightness and mIoU.

    Next to them: the night renders' own (the scorer reads real night photos that well), the
    day renders' brightness and, with ``random_styles`` (N x 3 x H x W, the model's random
    styles of the same maps), their mIoU. Returns the report and the encoded images.
    """
    from .scoring import segmentation_scores
    from .split import EvalSplit, synthesize_split

    labels, night = render_looks(seeds, [["night"]] * len(seeds), size)
    _, day = render_looks(seeds, [["day"]] * len(seeds), size)
    night, day = night[:, 0].contiguous(), day[:, 0].contiguous()
    split = EvalSplit(labels, night, None, [str(s) for s in seeds])
    encoded = synthesize_split(G, split, opt, device, batch_size, seed, E, desc="diversity: night photo encoded")

    def miou(images: torch.Tensor, what: str) -> float:
        return float(segmentation_scores(segmenter, images, labels, len(_CLASSES), None, device, batch_size,
                                         desc=f"segmenting {what}", input_size=input_size)["miou"])

    out = {"maps": len(seeds), "seeds": [int(seeds[0]), int(seeds[-1])],
           "encoded": {"brightness": mean_brightness(encoded), "miou": miou(encoded, "encoded night style")},
           "night_photos": {"brightness": mean_brightness(night), "miou": miou(night, "night photos")},
           "day_photos": {"brightness": mean_brightness(day)},
           "definition": "the style photo of each map is its own night render (generate_scene look='night'), "
                         "encoded by E (z sampled around the encoding, synthesize_split); brightness = mean "
                         "Rec. 601 luma in [0, 1]; mIoU = the shipped segmenter's against the map"}
    out["encoded"]["miou_pct_of_night_photos"] = 100 * out["encoded"]["miou"] / out["night_photos"]["miou"]
    if random_styles is not None:
        out["random_style"] = {"brightness": mean_brightness(random_styles),
                               "miou": miou(random_styles, "random styles")}
    return out, encoded
