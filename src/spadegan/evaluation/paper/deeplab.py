"""DeepLabV2-ResNet101 with its multi-scale (MSC) wrapper: the SPADE paper's COCO-Stuff segmenter.

Written to load kazuto1011/deeplab-pytorch's released `deeplabv2_resnet101_msc-cocostuff164k-100000.pth`
as it is (a flat state_dict of the `MSC` module, every key starting with `base.`) and to reproduce
that repository's COCO-Stuff 164k evaluation (`main.py test`):

- preprocessing `bgr_caffe`: the uint8 image in BGR order on the 0..255 scale minus the caffe means
  (B, G, R) = (104.008, 116.669, 122.675), computed in float64 and rounded once to float32 (what
  `numpy float32 -= float64` does); no std division, no resize, no padding;
- network: dilated ResNet-101 (output stride 8; stride 2 on layer3's 1x1 `reduce` conv, a
  ceil-mode 3x3 max pool in the stem, dilation 2 in layer4 and 4 in layer5), then ASPP = the SUM
  of four 3x3 convs with bias (dilation 6, 12, 18, 24); MSC runs it on the image and on bilinear
  0.5x and 0.75x copies and keeps the element-wise max of the three logit maps (at the
  full-scale map's size);
- post-processing: logits bilinearly upsampled to the image size, softmax, argmax. The
  reference's optional DenseCRF step (`main.py crf`) is not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SpadeganError
from ...fileio import read_state_dict
from .images import as_uint8_batch
from .weights import load_released

__all__ = ["RELEASED_FILES", "NUM_CLASSES", "PREPROCESSINGS", "MEAN_BGR", "MSC_SCALES",
           "ATROUS_RATES", "DeepLabV2", "MSC", "DeepLabV2Segmenter", "load"]

RELEASED_FILES: tuple[str, ...] = ("deeplabv2_resnet101_msc-cocostuff164k-100000.pth",)
NUM_CLASSES = 182
PREPROCESSINGS: tuple[str, ...] = ("bgr_caffe",)

#: caffe's ImageNet means in (B, G, R) order on the 0..255 scale (configs/cocostuff164k.yaml).
MEAN_BGR: tuple[float, float, float] = (104.008, 116.669, 122.675)
#: The extra scales of the MSC wrapper (hard-coded in the reference's DeepLabV2_ResNet101_MSC).
MSC_SCALES: tuple[float, ...] = (0.5, 0.75)
#: ASPP dilations (= paddings) of DeepLabV2's four branches.
ATROUS_RATES: tuple[int, ...] = (6, 12, 18, 24)
N_BLOCKS: tuple[int, ...] = (3, 4, 23, 3)
BN_EPS = 1e-5


class _ConvBnReLU(nn.Sequential):
    """conv (no bias) -> BatchNorm -> optional ReLU; children named `conv`, `bn` as in the file."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, relu: bool) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch, eps=BN_EPS))
        if relu:
            self.add_module("relu", nn.ReLU())


class _Bottleneck(nn.Module):
    """ResNet bottleneck with the stride on the 1x1 `reduce` conv (caffe ResNet)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, downsample: bool) -> None:
        super().__init__()
        mid_ch = out_ch // 4
        self.reduce = _ConvBnReLU(in_ch, mid_ch, 1, stride, 0, 1, True)
        self.conv3x3 = _ConvBnReLU(mid_ch, mid_ch, 3, 1, dilation, dilation, True)
        self.increase = _ConvBnReLU(mid_ch, out_ch, 1, 1, 0, 1, False)
        self.shortcut = _ConvBnReLU(in_ch, out_ch, 1, stride, 0, 1, False) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.increase(self.conv3x3(self.reduce(x)))
        return F.relu(h + self.shortcut(x))


class _ResLayer(nn.Sequential):
    """`n_blocks` bottlenecks `block1..blockN`; the first one strides and projects the shortcut."""

    def __init__(self, n_blocks: int, in_ch: int, out_ch: int, stride: int, dilation: int) -> None:
        super().__init__()
        for i in range(n_blocks):
            self.add_module(f"block{i + 1}", _Bottleneck(
                in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, dilation, downsample=i == 0))


class _Stem(nn.Sequential):
    """7x7/2 conv + BN + ReLU, then a 3x3/2 max pool with ceil_mode=True (caffe's pooling)."""

    def __init__(self, out_ch: int) -> None:
        super().__init__()
        self.add_module("conv1", _ConvBnReLU(3, out_ch, 7, 2, 3, 1, True))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabV2: the sum of dilated 3x3 convs `c0..c3`."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int]) -> None:
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(in_ch, out_ch, 3, 1, padding=rate, dilation=rate, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(stage(x) for stage in self.children())


class DeepLabV2(nn.Module):
    """Dilated ResNet-101 (output stride 8) + ASPP: logits at 1/8 of the input size."""

    def __init__(self, n_classes: int = NUM_CLASSES, n_blocks: Sequence[int] = N_BLOCKS,
                 atrous_rates: Sequence[int] = ATROUS_RATES) -> None:
        super().__init__()
        ch = [64 * 2 ** p for p in range(6)]
        self.layer1 = _Stem(ch[0])
        self.layer2 = _ResLayer(n_blocks[0], ch[0], ch[2], 1, 1)
        self.layer3 = _ResLayer(n_blocks[1], ch[2], ch[3], 2, 1)
        self.layer4 = _ResLayer(n_blocks[2], ch[3], ch[4], 1, 2)
        self.layer5 = _ResLayer(n_blocks[3], ch[4], ch[5], 1, 4)
        self.aspp = _ASPP(ch[5], n_classes, atrous_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        return self.aspp(x)


class MSC(nn.Module):
    """Multi-scale inputs: the element-wise max of `base` on the image and on rescaled copies.

    Each copy is `F.interpolate(x, scale_factor=p, bilinear, align_corners=False)` (torch's
    scale-factor semantics, as the reference calls it) and its logits are resized bilinearly to
    the full-scale logits' size before the max. Eval-mode behaviour only.
    """

    def __init__(self, base: nn.Module, scales: Sequence[float] = MSC_SCALES) -> None:
        super().__init__()
        self.base = base
        self.scales = tuple(scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        size = logits.shape[2:]
        maps = [logits]
        for p in self.scales:
            scaled = self.base(F.interpolate(x, scale_factor=p, mode="bilinear", align_corners=False))
            maps.append(F.interpolate(scaled, size=size, mode="bilinear", align_corners=False))
        return torch.max(torch.stack(maps), dim=0)[0]


def preprocess_bgr_caffe(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> float32 BGR minus the caffe means (float64 arithmetic, one rounding)."""
    bgr = images.flip(1).to(torch.float64)
    mean = torch.tensor(MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    return (bgr - mean).to(torch.float32)


class DeepLabV2Segmenter:
    """The loaded MSC network (eval mode, on `device`) with the reference's pre/post-processing."""

    def __init__(self, msc: MSC, device: torch.device) -> None:
        self.msc = msc.to(device).eval()
        self.device = device
        self.num_classes = NUM_CLASSES

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        batch = as_uint8_batch(images)
        height, width = batch.shape[-2:]
        if min(height, width) * min(MSC_SCALES) < 1:  # the 0.5x copy would be empty
            raise SpadeganError(f"deeplabv2_cocostuff needs images of at least 2x2 pixels, got {height}x{width}")
        return preprocess_bgr_caffe(batch).to(self.device)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, multiscale: bool = True) -> torch.Tensor:
        """Raw logits at 1/8 of the image size, float32 (B, 182, h, w): MSC's max, or the
        base network alone when `multiscale` is False."""
        x = self._input(images)
        return self.msc(x) if multiscale else self.msc.base(x)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, multiscale: bool = True) -> torch.Tensor:
        """Softmax of the logits upsampled bilinearly (align_corners=False) to the image size,
        float32 (B, 182, H, W). MSC is part of the network: the default runs it once."""
        size = tuple(as_uint8_batch(images).shape[-2:])
        logits = self.logits(images, multiscale)
        return F.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), dim=1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, multiscale: bool | None = None) -> torch.Tensor:
        """Class ids, int64 (B, H, W): argmax of `probabilities`, the reference's protocol.

        `multiscale` None or True: the MSC network (image + 0.5x + 0.75x, element-wise max), which
        is how the reference evaluates; False: the base DeepLabV2 alone on the image, without the
        MSC branches. The reference's optional DenseCRF post-processing is not applied.
        """
        return self.probabilities(images, multiscale is not False).argmax(dim=1)


def _legacy_keys(path: Path) -> list[str]:
    """Keys of an older deeplab-pytorch file (`scale.` prefix, `proj` shortcuts, `aspp.stages`)."""
    state = read_state_dict(path, f"segmenter weights ({RELEASED_FILES[0]})")
    return [key for key in state
            if key.startswith("scale.") or ".proj." in key or ".aspp.stages." in key]


def load(files: Sequence[Path], preprocessing: str, device: torch.device) -> DeepLabV2Segmenter:
    """The MSC DeepLabV2 from the released file (keys `base.*`, with or without BN counters)."""
    if preprocessing not in PREPROCESSINGS:
        raise SpadeganError(f"deeplabv2_cocostuff has no preprocessing {preprocessing!r}; "
                            f"choose one of {', '.join(PREPROCESSINGS)}")
    (path,) = files
    msc = MSC(DeepLabV2())
    try:
        load_released(msc, path, RELEASED_FILES[0])
    except SpadeganError as error:
        legacy = _legacy_keys(Path(path))
        if not legacy:
            raise
        raise SpadeganError(
            f"{path} is an older deeplab-pytorch file (keys such as {legacy[0]!r}: `scale.` prefixes / "
            f"`proj` shortcuts), which the reference code does not load either; download the current "
            f"release {RELEASED_FILES[0]} (GitHub release v1.0 of kazuto1011/deeplab-pytorch)") from error
    return DeepLabV2Segmenter(msc, device)
