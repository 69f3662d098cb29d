"""Discriminators: MultiscaleDiscriminator of NLayerDiscriminator PatchGANs.

`D(cat([semantics, image], 1))` returns one list per scale of the intermediate features
(the last entry is the patch prediction), used for the GAN and feature-matching losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import nonspade_norm_layer
from ..options import Options
from .base import BaseNetwork


class NLayerDiscriminator(BaseNetwork):
    """PatchGAN with `n_layers_D` 4x4 convs; the last hidden one has stride 1."""

    def __init__(self, opt: Options):
        super().__init__()
        self.get_intermediate_features = not opt.no_ganFeat_loss
        kw = 4
        padw = int(math.ceil((kw - 1.0) / 2))
        nf = opt.ndf
        input_nc = opt.semantic_nc + opt.output_nc
        norm_layer = nonspade_norm_layer(opt.norm_D)
        sequence = [[nn.Conv2d(input_nc, nf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, False)]]
        for n in range(1, opt.n_layers_D):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == opt.n_layers_D - 1 else 2
            sequence += [[norm_layer(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=padw)),
                          nn.LeakyReLU(0.2, False)]]
        sequence += [[nn.Conv2d(nf, 1, kw, stride=1, padding=padw)]]
        for n, layers in enumerate(sequence):  # groups named model0.. as in the checkpoints
            self.add_module("model" + str(n), nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        results = [x]
        for submodel in self.children():
            results.append(submodel(results[-1]))
        return results[1:] if self.get_intermediate_features else results[-1]


class MultiscaleDiscriminator(BaseNetwork):
    """`num_D` discriminators on the input downsampled by 2 each time."""

    def __init__(self, opt: Options):
        super().__init__()
        self.get_intermediate_features = not opt.no_ganFeat_loss
        for i in range(opt.num_D):
            self.add_module("discriminator_%d" % i, NLayerDiscriminator(opt))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for D in self.children():
            out = D(x)
            result.append(out if self.get_intermediate_features else [out])
            x = self.downsample(x)
        return result


# ---- OASIS: a U-Net that segments real images and spots fake pixels ---------------------------
def oasis_depth(crop_size: int, aspect_ratio: float = 1.0) -> int:
    """Encoder depth of the OASIS discriminator: 6 blocks (the paper's, 256 px down to 4 px),
    fewer for smaller crops so that the bottleneck keeps at least 4 px on its short side."""
    short = min(crop_size, round(crop_size / aspect_ratio))
    return max(1, min(6, int(math.log2(max(short, 1))) - 2))


class OASISResBlock(nn.Module):
    """Residual block of the OASIS discriminator: (LReLU) conv3x3 -> LReLU -> conv3x3, with
    average-pool downsampling (encoder) or nearest upsampling (decoder) and a learned 1x1
    shortcut when the width changes; spectral norm on every conv."""

    def __init__(self, fin: int, fout: int, norm_layer, resample: str, first: bool = False):
        super().__init__()
        self.resample, self.first = resample, first
        self.learned_shortcut = fin != fout
        self.conv1 = norm_layer(nn.Conv2d(fin, fout, 3, padding=1))
        self.conv2 = norm_layer(nn.Conv2d(fout, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = norm_layer(nn.Conv2d(fin, fout, 1))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        elif self.first:  # pool before the 1x1 conv: the same result, 4x fewer FLOPs
            x = F.avg_pool2d(x, 2)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.resample == "down" and not self.first:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = x if self.first else F.leaky_relu(x, 0.2)
        if self.resample == "up":
            dx = F.interpolate(dx, scale_factor=2.0, mode="nearest")
        dx = self.conv2(F.leaky_relu(self.conv1(dx), 0.2))
        if self.resample == "down":
            dx = F.avg_pool2d(dx, 2)
        return self.shortcut(x) + dx


class OASISDiscriminator(BaseNetwork):
    """`--netD oasis` (Schönfeld et al., ICLR 2021): a U-Net of residual blocks that reads the
    image alone and predicts, for every pixel, one of the label classes or "fake".

    Output: (B, 1 + label_channels, H, W) logits; channel 0 is "fake", channel 1 + c is
    class c (the label channels, dontcare included, as the one-hot semantics counts them).
    Widths follow the paper at --ndf 64 (encoder 128, 128, 256, 256, 512, 512; decoder back
    to 64 with skip connections), scaled with --ndf.
    """

    def __init__(self, opt: Options):
        super().__init__()
        depth = oasis_depth(opt.crop_size, opt.aspect_ratio)
        nf = opt.ndf
        widths = [opt.output_nc] + [nf * 2, nf * 2, nf * 4, nf * 4, nf * 8, nf * 8][:depth]
        norm_layer = nonspade_norm_layer("spectral" if "spectral" in opt.norm_D else "none")
        self.down = nn.ModuleList(OASISResBlock(widths[i], widths[i + 1], norm_layer, "down", first=i == 0)
                                  for i in range(depth))
        ups = [OASISResBlock(widths[-1], widths[-2] if depth > 1 else nf, norm_layer, "up")]
        for i in range(1, depth):
            fout = widths[-2 - i] if i < depth - 1 else nf
            ups.append(OASISResBlock(2 * widths[-1 - i], fout, norm_layer, "up"))
        self.up = nn.ModuleList(ups)
        self.classifier = nn.Conv2d(nf, opt.label_nc + int(opt.contain_dontcare_label) + 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for blk in self.down:
            x = blk(x)
            skips.append(x)
        x = self.up[0](x)
        for i, blk in enumerate(self.up[1:], start=1):
            x = blk(torch.cat([skips[-1 - i], x], dim=1))
        return self.classifier(x)
