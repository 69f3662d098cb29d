"""fyu/drn DRN-D-105 for Cityscapes (`drn-d-105_ms_cityscapes.pth`): SPADE's Cityscapes mIoU model.

The network is fyu/drn `segment.py`'s `DRNSeg('drn_d_105', 19)`: `base` is the DRN-D-105
trunk (`drn.py` `DRN(Bottleneck, [1, 1, 3, 4, 23, 3, 1, 1], arch='D')` without its
`avgpool`/`fc`, so `base.0` .. `base.8` are `layer0` .. `layer8`), `seg` a 1x1 convolution
512 -> 19 (class scores at stride 8) and `up` a depthwise ConvTranspose2d(19, 19, 16, stride 8,
padding 4) holding a fixed bilinear kernel (`fill_up_weights`; never trained, but saved in the
file), followed by a log-softmax over the classes. The released file is the plain `DRNSeg`
state_dict; files saved before PyTorch 0.4 have no `num_batches_tracked` entries, later ones do.

Preprocessing (`rgb_cityscapes`, `segment.py test`): RGB uint8 -> float / 255 -> per channel
`(x - mean) / std` with `datasets/cityscapes/info.json`'s values as float32; no resize, no
padding. The network's output is 8*ceil(H/8) x 8*ceil(W/8); the reference does not bring it
back to H x W (it never needs to: Cityscapes sizes are multiples of 8). Here single-scale
outputs are CROPPED to the image's H x W: output pixel (i, j) is the one the reference pairs
with label pixel (i, j) whenever sizes are multiples of 8, the values stay exactly the
reference's, and nothing is interpolated (resizing 8*ceil(H/8) -> H would shift the map by up
to 7 pixels). Multi-scale (`segment.py test --ms`) follows `test_ms`: scales 1 (the image
itself) and 0.5, 0.75, 1.25, 1.5, 1.75 with PIL BICUBIC resizes to (int(w*s), int(h*s)); every
log-softmax map whose size differs from (h, w) (the scale-1 map too, when H or W is not a
multiple of 8) is resized to (h, w) per channel with PIL BILINEAR on float32 ('F' mode,
`resize_4d_tensor`), and the six maps are summed (log-probabilities, not averaged).

On CUDA the convolutions run in full float32 (cuDNN's TF32 switched off around each pass and
restored after): the reference's numbers were float32, and TF32's 10-bit mantissa over 105
layers moves the log-probabilities by far more than float rounding.

The default protocol is single scale: it is what users of this file ran (`--ms` crashes on the
labelled val split in the reference; SPADE/CLADE/GAN Compression scored single scale).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...device import say_once
from ...errors import SpadeganError
from .weights import load_released

__all__ = ["RELEASED_FILES", "NUM_CLASSES", "PREPROCESSINGS", "MEAN", "STD", "MS_SCALES",
           "DRNSeg", "DRNSegmenter", "bilinear_up_kernel", "check_up_kernel", "load"]

RELEASED_FILES: tuple[str, ...] = ("drn-d-105_ms_cityscapes.pth",)
NUM_CLASSES = 19
PREPROCESSINGS: tuple[str, ...] = ("rgb_cityscapes",)

#: fyu/drn `datasets/cityscapes/info.json` (RGB, images / 255); used as float32 like `Normalize`.
MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)
#: `segment.py test_seg`'s extra scales for `--ms` (the image itself is the first pass).
MS_SCALES = (0.5, 0.75, 1.25, 1.5, 1.75)

#: DRN-D-105: blocks per level and channels per level (`drn.py` `drn_d_105`, `DRN` defaults).
_LAYERS = (1, 1, 3, 4, 23, 3, 1, 1)
_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
_UP_KERNEL = 16


def _conv_layers(in_channels: int, channels: int, convs: int, stride: int = 1,
                 dilation: int = 1) -> nn.Sequential:
    """`DRN._make_conv_layers`: (3x3 conv, BN, ReLU) x convs; keys `i*3` (conv), `i*3+1` (BN)."""
    modules: list[nn.Module] = []
    for i in range(convs):
        modules += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3,
                              stride=stride if i == 0 else 1, padding=dilation,
                              dilation=dilation, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


class Bottleneck(nn.Module):
    """`drn.py` Bottleneck: 1x1, 3x3 (stride, dilation), 1x1 x4; always residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _bottleneck_layer(inplanes: int, planes: int, blocks: int, stride: int = 1,
                      dilation: int = 1) -> nn.Sequential:
    """`DRN._make_layer` with Bottleneck and new_level=False: every block at `dilation`.

    (The first block's dilation pair is (d // 2, d) only with new_level=True, and Bottleneck
    uses only the second entry; DRN-D's dilated levels 5 and 6 pass new_level=False.)
    """
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion))
    blocks_ = [Bottleneck(inplanes, planes, stride, dilation, downsample)]
    blocks_ += [Bottleneck(planes * Bottleneck.expansion, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*blocks_)


def _drn_d_105_base() -> nn.Sequential:
    """DRN-D-105 `layer0` .. `layer8` (output stride 8, 512 channels)."""
    c, n = _CHANNELS, _LAYERS
    layer0 = nn.Sequential(nn.Conv2d(3, c[0], 7, padding=3, bias=False),
                           nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
    return nn.Sequential(
        layer0,
        _conv_layers(c[0], c[0], n[0]),
        _conv_layers(c[0], c[1], n[1], stride=2),
        _bottleneck_layer(c[1], c[2], n[2], stride=2),
        _bottleneck_layer(c[2] * 4, c[3], n[3], stride=2),
        _bottleneck_layer(c[3] * 4, c[4], n[4], dilation=2),
        _bottleneck_layer(c[4] * 4, c[5], n[5], dilation=4),
        _conv_layers(c[5] * 4, c[6], n[6], dilation=2),  # DRN-D: plain convs, no residual
        _conv_layers(c[6], c[7], n[7], dilation=1),
    )


def bilinear_up_kernel(channels: int = NUM_CLASSES, size: int = _UP_KERNEL) -> torch.Tensor:
    """`segment.py fill_up_weights`: the fixed bilinear (channels, 1, size, size) kernel."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    axis = torch.tensor([1 - abs(i / f - c) for i in range(size)], dtype=torch.float64)
    return torch.outer(axis, axis).float().expand(channels, 1, size, size).clone()


class DRNSeg(nn.Module):
    """`segment.py` DRNSeg for DRN-D-105: forward -> (log-softmax at 8x, class scores at 1/8)."""

    def __init__(self, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.base = _drn_d_105_base()
        self.seg = nn.Conv2d(_CHANNELS[-1], classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(classes, classes, _UP_KERNEL, stride=8, padding=4,
                                     groups=classes, bias=False)
        self.up.weight.requires_grad_(False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_up_kernel(classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg_x = self.seg(self.base(x))
        return torch.log_softmax(self.up(seg_x), dim=1), seg_x


@contextmanager
def _float32_convolutions() -> Iterator[None]:
    """cuDNN convolutions without TF32 inside the block (the setting is restored after)."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


class DRNSegmenter:
    """A loaded DRN-D-105 (eval mode) on `device`, with the contract of `paper/__init__.py`."""

    num_classes = NUM_CLASSES

    def __init__(self, model: DRNSeg, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.mean = torch.tensor(MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, 3, H, W) -> the network input (`ToTensor` then `Normalize`)."""
        x = images.to(self.device).float().div(255)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def reference_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`DRNSeg(x)` as the reference returns it: (log-softmax (B, 19, 8*ceil(H/8),
        8*ceil(W/8)), class scores `seg_x` (B, 19, ceil(H/8), ceil(W/8))), on the device."""
        _check_batch(images)
        return self._run(images)

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _float32_convolutions():
            return self.model(self.normalize(images))

    @torch.no_grad()
    def log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Single-scale log-softmax, float32 (B, 19, H, W): the reference's output cropped to H x W."""
        height, width = images.shape[-2:]
        log_probs = self.reference_outputs(images)[0]
        if log_probs.shape[-2:] != (height, width):
            say_once("DRN-D-105 outputs 8*ceil(H/8) x 8*ceil(W/8) maps and fyu/drn's single-scale "
                     "test never resizes them; for image sizes that are not multiples of 8 the "
                     "extra bottom rows / right columns are cropped (pixel (i, j) stays pixel (i, j))")
        return log_probs[:, :, :height, :width]

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Single-scale class probabilities, float32 (B, 19, H, W) (exp of `log_probabilities`)."""
        return self.log_probabilities(images).exp()

    @torch.no_grad()
    def multiscale_log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """`test_ms`'s sum of log-softmax maps over the six scales, float32 (B, 19, H, W), CPU."""
        _check_batch(images)
        height, width = images.shape[-2:]
        if min(height, width) < 2:
            raise SpadeganError(f"multi-scale DRN-D-105 needs images of at least 2x2 (its 0.5 scale), "
                                f"got {height}x{width}")
        pictures = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images.cpu()]
        total: np.ndarray | int = 0
        for scale in (1.0, *MS_SCALES):
            if scale == 1.0:
                batch = images
            else:
                size = (int(width * scale), int(height * scale))
                batch = torch.stack([torch.from_numpy(np.array(p.resize(size, Image.BICUBIC)))
                                     for p in pictures]).permute(0, 3, 1, 2)
            log_probs = self._run(batch)[0]
            total = total + _resize_4d(log_probs, height, width)
        return torch.from_numpy(total)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, multiscale: bool | None = None) -> torch.Tensor:
        """Train ids, int64 (B, H, W): single scale by default, `multiscale=True` for `--ms`."""
        if multiscale:
            return self.multiscale_log_probabilities(images).argmax(dim=1)
        return self.log_probabilities(images).argmax(dim=1)


def _check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise SpadeganError(f"DRN-D-105 takes uint8 RGB (B, 3, H, W) batches, got "
                            f"{images.dtype} {tuple(images.shape)}")


def _resize_4d(tensor: torch.Tensor, height: int, width: int) -> np.ndarray:
    """`segment.py resize_4d_tensor`: each (b, c) map resized with PIL BILINEAR in 'F' mode."""
    maps = tensor.float().cpu().numpy()
    if maps.shape[2:] == (height, width):
        return maps
    out = np.empty(maps.shape[:2] + (height, width), dtype=np.float32)
    for b in range(maps.shape[0]):
        for c in range(maps.shape[1]):
            out[b, c] = np.asarray(Image.fromarray(maps[b, c]).resize((width, height), Image.BILINEAR))
    return out


def check_up_kernel(model: DRNSeg, path: Path) -> None:
    """The file's `up.weight` must be `fill_up_weights`' kernel: the reference never trains it,
    so any other value means the file is not the released DRNSeg (or was edited)."""
    expected = bilinear_up_kernel(model.up.weight.shape[0]).to(model.up.weight.device)
    deviation = (model.up.weight.detach().float() - expected).abs().max().item()
    if not deviation <= 1e-6:  # also catches NaN
        raise SpadeganError(
            f"{path}: up.weight is not the fixed bilinear upsampling kernel of fyu/drn's "
            f"fill_up_weights (max deviation {deviation:.3g}); DRNSeg never trains it, so this is "
            f"not the released file {RELEASED_FILES[0]}")


def load(files: Sequence[Path], preprocessing: str, device: torch.device) -> DRNSegmenter:
    """DRN-D-105 from `drn-d-105_ms_cityscapes.pth` (with or without `num_batches_tracked`)."""
    if preprocessing not in PREPROCESSINGS:
        raise SpadeganError(f"DRN-D-105 has no preprocessing {preprocessing!r}; "
                            f"choose one of {', '.join(PREPROCESSINGS)}")
    path = Path(files[0])
    model = DRNSeg()
    load_released(model, path, RELEASED_FILES[0])
    check_up_kernel(model, path)
    return DRNSegmenter(model, device)
