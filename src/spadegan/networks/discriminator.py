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
