"""FID and KID: an InceptionV3 pool3 feature extractor plus the two distances.

The network reproduces the layout of the TensorFlow InceptionV3 graph that the original FID
code used, as ported to PyTorch in the widely used weights file
``pt_inception-2015-12-05-6726825d.pth`` (the file pytorch-fid downloads). Our parameter and
buffer names match that file so it loads with ``strict=True``. The port differs from a
stock torchvision InceptionV3 in three ways, all reproduced here because they change the
features: the average pools inside the A/C/E blocks ignore padded zeros (TensorFlow
semantics), the last E block pools with max instead of average, and the classifier has 1008
outputs.

Protocol (pinned to pytorch-fid 0.3.0 and torch-fidelity 0.4.0 by ``tests/test_fid_parity.py``
on ``shared/fixtures/fid_pytorch_fid``):

- Input: RGB in [0, 1] (uint8 / 255, as torchvision's ``ToTensor``), resized to 299 x 299
  with pytorch-fid's resize: ``torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False)``, no antialias, then ``2 x - 1``. This is clean-fid's
  ``mode="legacy_pytorch"``. clean-fid's ``mode="clean"`` is a different protocol: it resizes
  each channel of the 0..255 image as a float PIL image with antialiased bicubic filtering
  *and* feeds a different network (the StyleGAN2-ADA TorchScript TF-Inception with
  ``(x - 128) / 128``). Swapping in only its resize here would give numbers equal to neither
  tool, so spadegan offers no "clean" option with this network.
- FID: mean and unbiased covariance (``np.cov``, N - 1) of the float64 features, then
  ``|mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2)``. How ``Tr sqrt(S1 S2)`` was computed
  (pytorch-fid's scipy ``sqrtm``, its ``eps * I`` retry, the exact low-rank identity for sets
  with no more images than feature dimensions, or the symmetric ``eigh`` route) is returned
  by :func:`fid_from_features_details` / :func:`frechet_distance_details` as
  ``method_used`` and ``eps_retry``; a fallback the caller did not ask for is announced once.
- KID: torch-fidelity's unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, subsets drawn as
  torch-fidelity draws them (``numpy.random.RandomState(rng_seed)``, default 2020).

Nothing is downloaded: the weights come from a path the user gives. Without one the metric
is reported as *unavailable* with the reason, never computed with a substitute network
(random or differently trained weights give numbers that are not FID).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import say_once
from ..errors import SpadeganError
from ..fileio import load_torch_file

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FIDUnavailable",
    "FIDInceptionV3",
    "load_fid_inception",
    "activation_statistics",
    "frechet_distance",
    "frechet_distance_details",
    "fid_from_features",
    "fid_from_features_details",
    "FRECHET_METHODS",
    "FID_METHODS",
    "kid",
    "extract_features",
    "compute_fid_kid",
]

#: The file name pytorch-fid uses for the ported TF weights; used in messages only.
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"

_FEATURE_DIM = 2048
_NUM_TF_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused


class FIDUnavailable(SpadeganError):
    """FID/KID cannot be computed because the Inception weights were not provided.

    ``reason`` says why and how to fix it. ``compute_fid_kid`` turns this into an
    ``"unavailable"`` status instead of raising, so an evaluation run still reports mIoU etc.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------
# Network. Attribute names are dictated by the weights file's keys.
# ---------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """Bias-free convolution, batch norm (TF epsilon 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME-padded average pool divides by the number of real pixels only.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MixedA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_out: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], dim=1)


class _ReductionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..e)."""

    def __init__(self, cin: int, mid: int) -> None:
        super().__init__()
        row, col = (1, 7), (7, 1)
        prow, pcol = (0, 3), (3, 0)
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, mid, 1)
        self.branch7x7_2 = _ConvBN(mid, mid, row, padding=prow)
        self.branch7x7_3 = _ConvBN(mid, 192, col, padding=pcol)
        self.branch7x7dbl_1 = _ConvBN(cin, mid, 1)
        self.branch7x7dbl_2 = _ConvBN(mid, mid, col, padding=pcol)
        self.branch7x7dbl_3 = _ConvBN(mid, mid, row, padding=prow)
        self.branch7x7dbl_4 = _ConvBN(mid, mid, col, padding=pcol)
        self.branch7x7dbl_5 = _ConvBN(mid, 192, row, padding=prow)
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], dim=1)


class _ReductionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches (Mixed_7b, Mixed_7c).

    ``max_pool=True`` reproduces the TF graph's last block, which pools with max.
    """

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        s = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], dim=1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], dim=1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], dim=1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in the TF FID graph; ``forward`` returns B x 2048 pool3 features.

    Input: float images B x 3 x H x W with values in [0, 1], any size (resized to 299 x 299
    bilinearly, then mapped to [-1, 1] as the TF graph expects). Construct it with random
    weights only for shape tests; use :func:`load_fid_inception` for real numbers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        # Unused for features, but part of the weights file, so needed for a strict load.
        self.fc = nn.Linear(_FEATURE_DIM, _NUM_TF_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features (B x 2048) of images in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise SpadeganError(
                f"FID Inception expects images shaped B x 3 x H x W, got {tuple(x.shape)}; "
                "convert grayscale/RGBA images to RGB first"
            )
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = x * 2.0 - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008-way classifier output (e.g. for an Inception Score); no dropout."""
        return self.fc(self.features(x))


def load_fid_inception(path: str | os.PathLike[str] | None,
                       device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load ``path`` strictly; eval mode, no grads.

    Raises :class:`FIDUnavailable` if ``path`` is ``None``/empty or does not exist, and
    :class:`SpadeganError` if the file exists but is not the FID Inception state_dict.
    """
    if path is None or str(path).strip() == "":
        raise FIDUnavailable(
            "no FID Inception weights given; pass the path of "
            f"'{FID_WEIGHTS_FILENAME}' (the pytorch-fid weights file) to enable FID/KID"
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FIDUnavailable(
            f"FID Inception weights file '{path}' does not exist; pass the path of a local "
            f"copy of '{FID_WEIGHTS_FILENAME}' to enable FID/KID"
        )
    state = load_torch_file(path, "FID Inception weights", f"; the file should be "
                            f"'{FID_WEIGHTS_FILENAME}' as distributed by pytorch-fid")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpadeganError(
            f"'{path}' holds a {type(state).__name__}, not a state_dict; expected "
            f"'{FID_WEIGHTS_FILENAME}'"
        )
    model = FIDInceptionV3()
    state = dict(state)
    # num_batches_tracked is a training counter that older PyTorch versions did not save;
    # filling it in keeps the load strict about everything that affects the output.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SpadeganError(
            f"'{path}' is not the FID InceptionV3 state_dict ({FID_WEIGHTS_FILENAME}): "
            f"{str(exc)[:600]}"
        ) from exc
    model.eval().requires_grad_(False)
    return model.to(device)


# ---------------------------------------------------------------------------------------
# Statistics and distances
# ---------------------------------------------------------------------------------------


def _as_float64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise SpadeganError(f"{name} contains NaN or infinite values; check the features")
    return arr


def activation_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of N x D features, in float64."""
    feats = _as_float64(features, "features")
    if feats.ndim != 2:
        raise SpadeganError(f"features must be N x D, got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise SpadeganError(
            f"need at least 2 feature vectors for a covariance, got {feats.shape[0]}; "
            "evaluate on more images"
        )
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


#: ``method`` values of :func:`frechet_distance_details` (statistics only) and of
#: :func:`fid_from_features_details` (features; adds "auto" and "lowrank").
FRECHET_METHODS = ("sqrtm", "eigh")
FID_METHODS = ("auto", "sqrtm", "eigh", "lowrank")


def _sym_sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; round-off negatives are clipped to 0."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2); the right-hand matrix is symmetric PSD,
    # so its eigenvalues are real and non-negative up to round-off.
    root1 = _sym_sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    vals = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def _trace_sqrt_product_lowrank(x: np.ndarray, y: np.ndarray, sigma_y: np.ndarray) -> float:
    # S1 = A^T A with A = centred rows of x / sqrt(N1 - 1): the non-zero eigenvalues of S1 S2
    # are those of the N1 x N1 symmetric PSD matrix A S2 A^T (exact, no D x D square root).
    a = (x - x.mean(axis=0)) / math.sqrt(x.shape[0] - 1)
    if y.shape[0] <= y.shape[1]:
        b = (y - y.mean(axis=0)) / math.sqrt(y.shape[0] - 1)
        inner = (a @ b.T) @ (b @ a.T)  # A S2 A^T with S2 = B^T B, never forming D x D
    else:
        inner = a @ sigma_y @ a.T
    vals = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def _scipy_sqrtm(m: np.ndarray) -> np.ndarray:
    try:
        from scipy import linalg
    except ImportError as exc:
        raise SpadeganError(
            "FID's method 'sqrtm' needs scipy; install it with `pip install scipy` (or `pip "
            "install spadegan[eval]`), or pass method='eigh' (or 'lowrank' for features)"
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular / ill-conditioned inputs
        out = linalg.sqrtm(m)
    return out[0] if isinstance(out, tuple) else out


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray,
                              eps: float) -> tuple[float, bool, str | None]:
    """pytorch-fid's ``calculate_frechet_distance`` core: (trace, eps_retry, fallback).

    ``fallback`` is None when scipy's result was used, else why the trace came from ``eigh``
    instead (where pytorch-fid raises ValueError).
    """
    covmean = _scipy_sqrtm(sigma1 @ sigma2)
    eps_retry = not np.all(np.isfinite(covmean))
    if eps_retry:
        # pytorch-fid's retry for a singular product: eps * I added to both covariances.
        say_once(f"FID: scipy sqrtm(sigma1 @ sigma2) gave non-finite values; retrying with {eps:g} * I "
                 "added to both covariances as pytorch-fid does (recorded as eps_retry)")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _scipy_sqrtm((sigma1 + offset) @ (sigma2 + offset))
    why = fallback = None
    if not np.all(np.isfinite(covmean)):
        why = fallback = "scipy sqrtm gave non-finite values even with the eps * I retry"
    elif np.iscomplexobj(covmean):
        # pytorch-fid's test: an imaginary diagonal part above 1e-3 means sqrtm failed.
        imag = np.diagonal(covmean).imag
        if not np.allclose(imag, 0, atol=1e-3):
            why = ("scipy sqrtm's result has an imaginary diagonal part above 1e-3 (pytorch-fid "
                   "raises ValueError)")
            fallback = f"{why}: up to {float(np.max(np.abs(imag))):.3g}"
        covmean = covmean.real
    if fallback is not None:
        say_once(f"FID: {why}; Tr sqrt(S1 S2) computed with method 'eigh' instead (recorded as "
                 "method_used='eigh')")
        return _trace_sqrt_product_eigh(sigma1, sigma2), eps_retry, fallback
    return float(np.trace(covmean)), eps_retry, None


def _distance(diff: np.ndarray, sigma1: np.ndarray, sigma2: np.ndarray, tr_covmean: float) -> float:
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    # The exact value is >= 0; only clip round-off, so real bugs still show as negatives.
    tol = 1e-8 * max(1.0, float(np.trace(sigma1) + np.trace(sigma2)))
    return 0.0 if -tol < value < 0.0 else value


def frechet_distance_details(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6,
                             method: str = "sqrtm") -> dict[str, Any]:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), with how it was computed.

    ``d = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr sqrt(S1 S2)``.

    ``method="sqrtm"`` (default) is pytorch-fid's ``calculate_frechet_distance``: scipy's
    matrix square root of ``S1 S2``; if that is not finite, again with ``eps * I`` added to
    both covariances. Where pytorch-fid would raise (still not finite, or an imaginary
    diagonal part above 1e-3) the trace comes from ``method="eigh"`` instead, which uses a
    symmetric eigendecomposition and is always real; that fallback is announced once.

    Returns a dict: ``fid`` (float), ``method`` (as asked), ``method_used`` ("sqrtm" or
    "eigh"), ``eps_retry`` (whether pytorch-fid's ``eps * I`` retry ran), ``fallback`` (None,
    or why ``method_used`` is not the method asked for).
    """
    m1, m2 = _as_float64(mu1, "mu1").ravel(), _as_float64(mu2, "mu2").ravel()
    s1, s2 = np.atleast_2d(_as_float64(sigma1, "sigma1")), np.atleast_2d(_as_float64(sigma2, "sigma2"))
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise SpadeganError(
            f"statistics shapes do not match: mu1 {m1.shape}, sigma1 {s1.shape}, "
            f"mu2 {m2.shape}, sigma2 {s2.shape}; both sets must use the same feature extractor"
        )
    eps_retry, fallback = False, None
    if method == "sqrtm":
        tr_covmean, eps_retry, fallback = _trace_sqrt_product_sqrtm(s1, s2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
    else:
        raise SpadeganError(f"unknown Frechet distance method '{method}'; use one of {FRECHET_METHODS}")
    return {"fid": _distance(m1 - m2, s1, s2, tr_covmean), "method": method,
            "method_used": "eigh" if fallback else method, "eps_retry": eps_retry,
            "fallback": fallback}


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6,
                     method: str = "sqrtm") -> float:
    """The ``fid`` of :func:`frechet_distance_details` (see there for ``method``)."""
    return frechet_distance_details(mu1, sigma1, mu2, sigma2, eps, method)["fid"]


def fid_from_features_details(feats1: Any, feats2: Any, method: str = "auto",
                              eps: float = 1e-6) -> dict[str, Any]:
    """Frechet distance between the Gaussians fitted to two N x D feature sets, with how.

    ``method``:

    - ``"auto"`` (default): ``"lowrank"`` when a set has no more rows than dimensions (its
      covariance is singular, where scipy's D x D ``sqrtm`` is slow, ~60 s at D = 2048, and
      only ~1e-5 accurate), else ``"sqrtm"``. The choice is this documented rule, so it is
      recorded in ``method_used`` but not announced.
    - ``"lowrank"`` (only when a set has N <= D rows): exact in float64. With
      ``S1 = A^T A`` (``A`` = centred rows of the smaller set / sqrt(N1 - 1)), the non-zero
      eigenvalues of ``S1 S2`` are those of the N1 x N1 symmetric PSD matrix ``A S2 A^T``;
      ``Tr sqrt(S1 S2)`` is the sum of their roots.
    - ``"sqrtm"`` / ``"eigh"``: :func:`frechet_distance_details` on the statistics.

    Returns the dict of :func:`frechet_distance_details` (``fid``, ``method``,
    ``method_used``, ``eps_retry``, ``fallback``) plus ``num_features`` ([N1, N2]).
    """
    x, y = _as_float64(feats1, "feats1"), _as_float64(feats2, "feats2")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise SpadeganError(f"features must be N x D with equal D, got {x.shape} and {y.shape}")
    if method not in FID_METHODS:
        raise SpadeganError(f"unknown FID method '{method}'; use one of {FID_METHODS}")
    mu1, s1 = activation_statistics(x)
    mu2, s2 = activation_statistics(y)
    low_rank = min(x.shape[0], y.shape[0]) <= x.shape[1]
    if method == "lowrank" and not low_rank:
        raise SpadeganError(
            f"FID method 'lowrank' needs a set with no more feature vectors than dimensions, got "
            f"{x.shape[0]} and {y.shape[0]} of dimension {x.shape[1]}; use 'sqrtm' or 'eigh'")
    used = method
    if method == "auto":
        used = "lowrank" if low_rank else "sqrtm"
    if used == "lowrank":
        # Factor the smaller set (lower rank, smaller inner matrix).
        small, large, s_large = (x, y, s2) if x.shape[0] <= y.shape[0] else (y, x, s1)
        tr_covmean = _trace_sqrt_product_lowrank(small, large, s_large)
        details = {"fid": _distance(mu1 - mu2, s1, s2, tr_covmean), "method": method,
                   "method_used": "lowrank", "eps_retry": False, "fallback": None}
    else:
        details = frechet_distance_details(mu1, s1, mu2, s2, eps, used)
        details["method"] = method
    details["num_features"] = [int(x.shape[0]), int(y.shape[0])]
    return details


def fid_from_features(feats1: Any, feats2: Any, method: str = "auto") -> float:
    """The ``fid`` of :func:`fid_from_features_details` (see there for ``method``)."""
    return fid_from_features_details(feats1, feats2, method)["fid"]


def _kid_subsets(n1: int, n2: int, m: int, num_subsets: int, seed: int | None,
                 rng_seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row indices (i1, i2) of each KID subset, in the order they are drawn."""
    if seed is not None:  # spadegan's former stream, kept so seeded numbers still reproduce
        gen = np.random.default_rng(seed)
        for _ in range(num_subsets):
            yield gen.choice(n1, m, replace=False), gen.choice(n2, m, replace=False)
        return
    rng = np.random.RandomState(rng_seed)  # torch-fidelity's kid_features_to_metric
    for _ in range(num_subsets):
        i1 = rng.choice(n1, m, replace=False)
        yield i1, rng.choice(n2, m, replace=False)


def kid(feats1: Any, feats2: Any, num_subsets: int = 100, subset_size: int = 1000,
        seed: int | None = None, rng_seed: int = 2020) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std (ddof 0) of unbiased MMD^2 over random subsets.

    torch-fidelity's KID (Binkowski et al., 2018): polynomial kernel
    ``k(x, y) = (x.y / D + 1)^3``; per subset ``i1 = rng.choice(N1, m, replace=False)`` then
    ``i2 = rng.choice(N2, m, replace=False)`` with ``rng = numpy.random.RandomState(rng_seed)``
    (torch-fidelity's default seed is 2020), so equal features give torch-fidelity's numbers.
    Computed in float64. ``subset_size`` larger than a set (torch-fidelity refuses) is capped
    at the smaller set's size, saying so once. ``seed`` (an int) instead draws from
    ``numpy.random.default_rng(seed)``, the stream spadegan used before, to reproduce
    earlier seeded numbers.
    """
    x, y = _as_float64(feats1, "feats1"), _as_float64(feats2, "feats2")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise SpadeganError(f"KID features must be N x D with equal D, got {x.shape} and {y.shape}")
    m = min(int(subset_size), x.shape[0], y.shape[0])
    if m < 2:
        raise SpadeganError(
            f"KID needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}"
        )
    if num_subsets < 1:
        raise SpadeganError(f"num_subsets must be >= 1, got {num_subsets}")
    if m < subset_size:
        say_once(f"KID: subset_size {subset_size} is more than the {m} feature vectors of the smaller "
                 f"set; using subsets of {m} (torch-fidelity would refuse)")
    gamma = 1.0 / x.shape[1]
    values = np.empty(num_subsets)
    for i, (i1, i2) in enumerate(_kid_subsets(x.shape[0], y.shape[0], m, num_subsets, seed, rng_seed)):
        a, b = x[i1], y[i2]
        k_aa = (a @ a.T * gamma + 1.0) ** 3
        k_bb = (b @ b.T * gamma + 1.0) ** 3
        k_ab = (a @ b.T * gamma + 1.0) ** 3
        # Unbiased estimator: drop the diagonal (self-similarity) terms of K_aa and K_bb.
        within = ((k_aa.sum(axis=1) - np.diagonal(k_aa)).sum()
                  + (k_bb.sum(axis=1) - np.diagonal(k_bb)).sum()) / (m * (m - 1))
        values[i] = within - 2.0 * k_ab.sum() / (m * m)
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------


def _image_batches(images: Iterable[Any], value_range: tuple[float, float]) -> Iterator[torch.Tensor]:
    """Yield float B x 3 x H x W tensors in [0, 1] from tensors, arrays or PIL images.

    Float tensors are taken to be in ``value_range``; uint8 tensors/arrays in 0..255.
    Numpy arrays and PIL images are H x W x 3 (or B x H x W x 3 arrays).
    """
    lo, hi = value_range
    for item in images:
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            item = item[0]  # e.g. (images, labels) pairs from a loader
        if not isinstance(item, torch.Tensor):
            arr = np.asarray(item)
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, axis=-1)
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
                raise SpadeganError(
                    f"cannot use an image array shaped {arr.shape}; expected H x W x 3 "
                    "(or B x H x W x 3) RGB"
                )
            item = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(0, 3, 1, 2)
        if item.dim() == 3:
            item = item[None]
        if item.dim() != 4 or item.shape[1] != 3:
            raise SpadeganError(
                f"image batch has shape {tuple(item.shape)}; expected B x 3 x H x W RGB"
            )
        if item.dtype == torch.uint8:
            yield item.float() / 255.0
        else:
            yield ((item.float() - lo) / (hi - lo)).clamp(0.0, 1.0)


@torch.no_grad()
def extract_features(model: FIDInceptionV3, images: Iterable[Any], device: str | torch.device = "cpu",
                     batch_size: int = 32, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Run ``model`` over all images (re-batched to ``batch_size``); returns N x 2048."""
    if batch_size < 1:
        raise SpadeganError(f"batch_size must be >= 1, got {batch_size}")
    out: list[np.ndarray] = []
    pending: list[torch.Tensor] = []
    count = 0

    def flush() -> None:
        nonlocal pending, count
        if pending:
            batch = torch.cat(pending).to(device)
            out.append(model(batch).double().cpu().numpy())
            pending, count = [], 0

    for batch in _image_batches(images, value_range):
        # Batches of different image sizes cannot be concatenated: flush on a size change.
        if pending and batch.shape[2:] != pending[0].shape[2:]:
            flush()
        for chunk in batch.split(batch_size):
            pending.append(chunk)
            count += chunk.shape[0]
            if count >= batch_size:
                flush()
    flush()
    if not out:
        return np.zeros((0, _FEATURE_DIM))
    return np.concatenate(out)


def compute_fid_kid(real_images_iter: Iterable[Any], fake_images_iter: Iterable[Any],
                    weights_path: str | os.PathLike[str] | None, device: str | torch.device = "cpu",
                    batch_size: int = 32, value_range: tuple[float, float] = (-1.0, 1.0),
                    kid_subsets: int = 100, kid_subset_size: int = 1000,
                    fid_method: str = "auto") -> dict[str, Any]:
    """FID and KID between two image collections.

    Each iterable yields image batches: float tensors B x 3 x H x W in ``value_range``
    (default [-1, 1], the generator's range), uint8 tensors, or H x W x 3 arrays/PIL images.

    Returns a dict with ``status`` ("ok" or "unavailable"), ``reason`` (why unavailable, or
    None), ``fid``, ``kid_mean``, ``kid_std`` (None when unavailable), ``num_real``,
    ``num_fake``, ``notes`` (caveats, e.g. too few images for a comparable FID) and how FID
    was computed: ``fid_method_used``, ``fid_eps_retry``, ``fid_fallback`` (the
    ``method_used``, ``eps_retry`` and ``fallback`` of :func:`fid_from_features_details`, to
    which ``fid_method`` is passed; None when unavailable). When the weights are unavailable
    the image iterables are not consumed. KID uses torch-fidelity's subsets (``kid``).
    """
    result: dict[str, Any] = {
        "status": "unavailable", "reason": None, "fid": None, "kid_mean": None,
        "kid_std": None, "num_real": 0, "num_fake": 0, "notes": [],
        "fid_method_used": None, "fid_eps_retry": None, "fid_fallback": None,
    }
    try:
        model = load_fid_inception(weights_path, device)
    except FIDUnavailable as exc:
        result["reason"] = exc.reason
        return result
    real = extract_features(model, real_images_iter, device, batch_size, value_range)
    fake = extract_features(model, fake_images_iter, device, batch_size, value_range)
    result["num_real"], result["num_fake"] = int(real.shape[0]), int(fake.shape[0])
    if min(real.shape[0], fake.shape[0]) < 2:
        result["reason"] = (
            f"need at least 2 real and 2 generated images, got {real.shape[0]} and "
            f"{fake.shape[0]}"
        )
        return result
    details = fid_from_features_details(real, fake, method=fid_method)
    result["fid"] = details["fid"]
    result["fid_method_used"], result["fid_eps_retry"] = details["method_used"], details["eps_retry"]
    result["fid_fallback"] = details["fallback"]
    result["kid_mean"], result["kid_std"] = kid(real, fake, kid_subsets, kid_subset_size)
    result["status"] = "ok"
    if min(real.shape[0], fake.shape[0]) < _FEATURE_DIM:
        result["notes"].append(
            f"FID from fewer than {_FEATURE_DIM} images per set is biased upwards and only "
            "comparable with runs using the same number of images; KID is less sensitive"
        )
    if math.isnan(result["fid"]):  # pragma: no cover - defensive
        result["notes"].append("FID is NaN: the feature statistics are degenerate")
    return result
