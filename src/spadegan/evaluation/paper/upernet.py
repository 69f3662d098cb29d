"""UperNet-ResNet101 (CSAILVision semantic-segmentation-pytorch), the segmenter of SPADE's ADE20K mIoU.

The network is written here in plain torch.nn with the attribute names of the released files,
`encoder_epoch_50.pth` (deep-stem ResNet-101 without avgpool/fc: `conv1..3`/`bn1..3`, then
`layer1..4` of Bottlenecks [3, 4, 23, 3]) and `decoder_epoch_50.pth` (UperNet: a pyramid pooling
module `ppm_*` on the last map, an FPN `fpn_in`/`fpn_out`, and `conv_last` fusing the four
levels at stride 4). Both are plain state_dicts. Every batch norm of the reference is a
SynchronizedBatchNorm2d, which in eval mode is a plain BatchNorm2d (eps 1e-5); its bookkeeping
buffers (`_tmp_running_mean`, `_tmp_running_var`, `_running_iter`, `num_batches_tracked`) are
ignored whether the file has them or not, every other key is required.

Preprocessings (`PREPROCESSINGS`, the first is the default):

- `rgb_imagenet`: the current release (`ade20k-resnet101-upernet/`, mit_semseg dataset.py): RGB,
  PIL `Image.BILINEAR` resize to the scale's size, /255, ImageNet mean/std.
- `bgr_legacy`: the SPADE-era `baseline-resnet101-upernet/` files (the code before 2019-08-03):
  `cv2.imread` BGR, `cv2.resize` INTER_LINEAR on the uint8 image, float 0..255 minus
  [102.9801, 115.9465, 122.7717] (B, G, R), std 1. OpenCV is not a dependency, so the resize is
  `cv2_resize_linear` below: OpenCV's fixed-point INTER_LINEAR for 8-bit images recomputed in
  integer arithmetic (bit-exact with the cv2 build checked; its docstring says which and where
  other builds might differ by one grey level).

Evaluation: `probabilities` is one pass at the image's own short side (test.py with
imgSizes = (short side,)): the size rounded up to a multiple of 32 (the image stretched to it
when that changes it), logits at stride 4 upsampled bilinearly to the image size, softmax.
`predict(images)` is the reference's default multi-scale protocol (eval.py / test.py): short
sides (300, 375, 450, 525, 600), long side at most 1000, sizes rounded up to 32, each scale
resized from the original image, the softmax probabilities at the original size averaged,
argmax. No flipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...errors import SpadeganError
from .weights import load_released

__all__ = [
    "RELEASED_FILES", "NUM_CLASSES", "PREPROCESSINGS", "BOOKKEEPING_SUFFIXES", "IMG_SIZES",
    "IMG_MAX_SIZE", "PADDING_CONSTANT", "ResNetEncoder", "UPerNet", "UperNetSegmenter",
    "scaled_size", "cv2_resize_linear", "pil_resize", "load",
]

RELEASED_FILES: tuple[str, ...] = ("encoder_epoch_50.pth", "decoder_epoch_50.pth")
NUM_CLASSES = 150
PREPROCESSINGS: tuple[str, ...] = ("rgb_imagenet", "bgr_legacy")

#: SynchronizedBatchNorm2d's buffers that eval mode never reads (old files may lack any of them).
BOOKKEEPING_SUFFIXES = ("num_batches_tracked", "_tmp_running_mean", "_tmp_running_var", "_running_iter")

#: config/ade20k-resnet101-upernet.yaml: DATASET.imgSizes, imgMaxSize, padding_constant.
IMG_SIZES: tuple[int, ...] = (300, 375, 450, 525, 600)
IMG_MAX_SIZE = 1000
PADDING_CONSTANT = 32

#: mit_semseg BaseDataset.normalize (RGB, after /255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the legacy code's Normalize(mean=..., std=[1, 1, 1]) on BGR 0..255 input.
LEGACY_BGR_MEAN = (102.9801, 115.9465, 122.7717)

BN_EPS = 1e-5
FC_DIM = 2048
FPN_DIM = 512
POOL_SCALES = (1, 2, 3, 6)
FPN_INPLANES = (256, 512, 1024, 2048)
LAYERS_RESNET101 = (3, 4, 23, 3)


# ---- network -----------------------------------------------------------------------------------
def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv3x3_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes, eps=BN_EPS), nn.ReLU(inplace=True))


def conv1x1_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False),
                         nn.BatchNorm2d(out_planes, eps=BN_EPS), nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with the stride, 1x1 to 4x the width) as in mit_semseg/models/resnet.py."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNetEncoder(nn.Module):
    """Deep-stem ResNet-101 (three 3x3 convs, 3->64->64->128) returning the 4 stage outputs (strides 4..32)."""

    def __init__(self, layers: Sequence[int] = LAYERS_RESNET101) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.conv2 = conv3x3(64, 64)
        self.bn2 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.conv3 = conv3x3(64, 128)
        self.bn3 = nn.BatchNorm2d(128, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 128
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion, eps=BN_EPS))
        modules = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        modules += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        conv_out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            conv_out.append(x)
        return conv_out


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UPerNet(nn.Module):
    """UperNet decoder (PPM on the stride-32 map + FPN), logits at stride 4 (mit_semseg/models/models.py)."""

    def __init__(self, num_class: int = NUM_CLASSES, fc_dim: int = FC_DIM, pool_scales: Sequence[int] = POOL_SCALES,
                 fpn_inplanes: Sequence[int] = FPN_INPLANES, fpn_dim: int = FPN_DIM) -> None:
        super().__init__()
        self.ppm_pooling = nn.ModuleList([nn.AdaptiveAvgPool2d(scale) for scale in pool_scales])
        self.ppm_conv = nn.ModuleList([conv1x1_bn_relu(fc_dim, 512) for _ in pool_scales])
        self.ppm_last_conv = conv3x3_bn_relu(fc_dim + len(pool_scales) * 512, fpn_dim)
        self.fpn_in = nn.ModuleList([conv1x1_bn_relu(planes, fpn_dim) for planes in fpn_inplanes[:-1]])
        self.fpn_out = nn.ModuleList([nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim)) for _ in fpn_inplanes[:-1]])
        self.conv_last = nn.Sequential(conv3x3_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim),
                                       nn.Conv2d(fpn_dim, num_class, 1))

    def forward(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        conv5 = conv_out[-1]
        size5 = conv5.shape[2:]
        # each pooled map is upsampled to conv5's size BEFORE its 1x1 conv (as the reference does)
        ppm_out = [conv5] + [conv(_upsample(pool(conv5), size5)) for pool, conv in zip(self.ppm_pooling, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat(ppm_out, 1))
        fpn_features = [f]
        for i in reversed(range(len(conv_out) - 1)):
            lateral = self.fpn_in[i](conv_out[i])
            f = lateral + _upsample(f, lateral.shape[2:])
            fpn_features.append(self.fpn_out[i](f))
        fpn_features.reverse()  # [P2, P3, P4, PPM]
        size = fpn_features[0].shape[2:]
        fusion = [fpn_features[0]] + [_upsample(x, size) for x in fpn_features[1:]]
        return self.conv_last(torch.cat(fusion, 1))


# ---- preprocessing -----------------------------------------------------------------------------
def round2nearest_multiple(x: int, p: int) -> int:
    """mit_semseg's rounding of a resize target: UP to a multiple of p."""
    return ((x - 1) // p + 1) * p


def scaled_size(height: int, width: int, short_side: int, max_size: int = IMG_MAX_SIZE,
                padding: int = PADDING_CONSTANT) -> tuple[int, int]:
    """The net input size of one test scale (mit_semseg TestDataset): short side -> `short_side`,
    long side at most `max_size`, each side truncated then rounded up to a multiple of `padding`."""
    scale = min(short_side / float(min(height, width)), max_size / float(max(height, width)))
    target = (round2nearest_multiple(int(height * scale), padding), round2nearest_multiple(int(width * scale), padding))
    if min(target) <= 0:
        raise SpadeganError(f"image of {height}x{width} is too thin for the UperNet segmenter: "
                            f"scale {scale:.4g} (short side {short_side}, long side at most {max_size}) "
                            f"gives a {target[0]}x{target[1]} input")
    return target


def pil_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (B, C, *size) with PIL `Image.resize(..., Image.BILINEAR)`, as the reference."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    out = [torch.from_numpy(np.array(Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
        (size[1], size[0]), Image.BILINEAR))).permute(2, 0, 1) for image in images]
    return torch.stack(out)


_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
_COEF_SCALE = np.float32(1 << _COEF_BITS)


def _cv2_linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR source indices and 11-bit weights along one axis (resize.cpp, 8-bit path)."""
    scale = 1.0 / (dst / src)  # scale_x = 1./inv_scale_x, in double
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(np.float32)
    if clamp_weights:  # columns: outside taps clamp the position and zero the fraction
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = src - 1
    w0 = np.rint((np.float32(1) - f) * _COEF_SCALE).astype(np.int64)  # saturate_cast<short>: round half even
    w1 = np.rint(f * _COEF_SCALE).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def cv2_resize_linear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (B, C, *size): `cv2.resize(img, (w, h))` (INTER_LINEAR) for 8-bit images.

    OpenCV is not a dependency; this recomputes its 8-bit algorithm (imgproc resize.cpp) in
    integers: half-pixel centres, float32 positions, 11-bit weights rounded half-to-even, the
    horizontal pass kept in int (scaled by 2048), the vertical pass as OpenCV's vector code
    computes it: ((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16), then + 2 >> 2. Equal size
    is a copy; an exact 2x shrink, which OpenCV hands to INTER_AREA (2x2 sum + 2 >> 2), gives
    the same values here. Checked bit-exact against opencv-python-headless 4.14.0 (x86-64 wheel)
    on 300 random size pairs, odd widths and shrinks included. Not checked: other builds (IPP,
    other CPUs' vector code, OpenCV 3.x of the SPADE era), whose arithmetic might move a value by
    one grey level of 255 (OpenCV's scalar formula (b0 * h0 + b1 * h1 + 2^21) >> 22 can).
    """
    (h, w), (th, tw) = images.shape[2:], size
    if (h, w) == (th, tw):
        return images.clone()
    src = images.numpy().astype(np.int64)
    x0, x1, a0, a1 = _cv2_linear_taps(w, tw, clamp_weights=True)
    y0, y1, b0, b1 = _cv2_linear_taps(h, th, clamp_weights=False)
    rows = src[:, :, :, x0] * a0 + src[:, :, :, x1] * a1  # (B, C, H, tw), scaled by 2048
    top = (b0[:, None] * (rows[:, :, y0] >> 4)) >> 16
    bottom = (b1[:, None] * (rows[:, :, y1] >> 4)) >> 16
    return torch.from_numpy(np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8))


def preprocess(images: torch.Tensor, size: tuple[int, int], preprocessing: str) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> the float32 net input at `size` under `preprocessing`."""
    if preprocessing == "rgb_imagenet":
        x = pil_resize(images, size).float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        return (x - mean) / std
    if preprocessing == "bgr_legacy":
        x = cv2_resize_linear(images.flip(1), size).float()  # RGB -> BGR, as cv2.imread gives it
        return x - torch.tensor(LEGACY_BGR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    raise SpadeganError(f"UperNet segmenter has no preprocessing {preprocessing!r}; "
                        f"choose one of {', '.join(PREPROCESSINGS)}")


# ---- the segmenter -----------------------------------------------------------------------------
class UperNetSegmenter(nn.Module):
    """Encoder + decoder with the reference's preprocessing and evaluation protocols (eval mode)."""

    def __init__(self, preprocessing: str = PREPROCESSINGS[0]) -> None:
        super().__init__()
        if preprocessing not in PREPROCESSINGS:
            raise SpadeganError(f"UperNet segmenter has no preprocessing {preprocessing!r}; "
                                f"choose one of {', '.join(PREPROCESSINGS)}")
        self.encoder = ResNetEncoder()
        self.decoder = UPerNet()
        self.preprocessing = preprocessing
        self.num_classes = NUM_CLASSES
        self.img_sizes = IMG_SIZES
        self.img_max_size = IMG_MAX_SIZE

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    def _input(self, images: torch.Tensor, short_side: int) -> torch.Tensor:
        h, w = images.shape[2:]
        size = scaled_size(h, w, short_side, self.img_max_size)
        return preprocess(images.cpu(), size, self.preprocessing).to(self.device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's 4 maps (strides 4, 8, 16, 32) for the single-scale input."""
        self.eval()
        return self.encoder(self._input(images, min(images.shape[2:])))

    @torch.no_grad()
    def _scale_probabilities(self, images: torch.Tensor, short_side: int) -> torch.Tensor:
        """SegmentationModule(segSize=image size) at one scale: logits upsampled, then softmax."""
        self.eval()
        logits = self.decoder(self.encoder(self._input(images, short_side)))
        return F.softmax(_upsample(logits, images.shape[2:]), dim=1)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 150, H, W): one pass with imgSizes = (short side,) (scale 1 unless the
        rounding to 32 or the long-side cap of 1000 changes the size), as test.py computes scores."""
        return self._scale_probabilities(images, min(images.shape[2:]))

    @torch.no_grad()
    def multiscale_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 150, H, W): the softmax at each of `img_sizes`, averaged at the image size."""
        scores = torch.zeros(images.shape[0], self.num_classes, *images.shape[2:], device=self.device)
        for short_side in self.img_sizes:
            scores = scores + self._scale_probabilities(images, short_side) / len(self.img_sizes)
        return scores

    @torch.no_grad()
    def predict(self, images: torch.Tensor, multiscale: bool | None = None) -> torch.Tensor:
        """int64 (B, H, W); multiscale None = the reference's default (multi-scale), False = one pass."""
        scores = self.probabilities(images) if multiscale is False else self.multiscale_probabilities(images)
        return scores.argmax(dim=1)


def load(files: list[Path], preprocessing: str, device: torch.device) -> UperNetSegmenter:
    """The segmenter from `encoder_epoch_50.pth` and `decoder_epoch_50.pth` (that order)."""
    network = UperNetSegmenter(preprocessing)
    order = f" (files go in the order {', '.join(RELEASED_FILES)})"
    for module, path, name in zip((network.encoder, network.decoder), files, RELEASED_FILES):
        try:
            load_released(module, path, name, ignore_suffixes=BOOKKEEPING_SUFFIXES)
        except SpadeganError as error:
            raise SpadeganError(f"{error}{order}") from None
    return network.eval().to(device)
