"""Residual blocks: SPADEResnetBlock (SPADE generator) and ResnetBlock (pix2pixHD)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .label_codes import LabelCodes
from .spade import SPADE
from .spectral import conv2d_output_scaled, spectral_norm


class SPADEResnetBlock(nn.Module):
    """SPADE -> LReLU -> conv, twice, plus a (learned when fin != fout) shortcut.

    `norm_G` like 'spectralspadesyncbatch3x3': 'spectral' puts spectral norm on the convs,
    the rest configures the SPADE layers. `semantic_nc` is the label-map channel count.
    """

    def __init__(self, fin: int, fout: int, norm_G: str, semantic_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, 3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
        if "spectral" in norm_G:
            spectral_norm(self.conv_0)
            spectral_norm(self.conv_1)
            if self.learned_shortcut:
                spectral_norm(self.conv_s)
        spade_config = norm_G.replace("spectral", "")
        self.norm_0 = SPADE(spade_config, fin, semantic_nc)
        self.norm_1 = SPADE(spade_config, fmiddle, semantic_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(spade_config, fin, semantic_nc)

    @staticmethod
    def _conv(conv: nn.Conv2d, x: torch.Tensor, impl: str) -> torch.Tensor:
        # the sparse implementation also takes spectral norm's cheaper order of operations; the
        # dense reference keeps the official one (the rounding of official checkpoints' outputs)
        return conv2d_output_scaled(conv, x) if impl == "sparse" else conv(x)

    def shortcut(self, x: torch.Tensor, seg: torch.Tensor | LabelCodes, impl: str = "dense") -> torch.Tensor:
        return self._conv(self.conv_s, self.norm_s(x, seg, impl), impl) if self.learned_shortcut else x

    def forward(self, x: torch.Tensor, seg: torch.Tensor | LabelCodes, impl: str = "dense") -> torch.Tensor:
        """`impl`: the SPADE implementation, "dense" (`seg` the one-hot semantics tensor) or
        "sparse" (`seg` its `LabelCodes`); see `layers.spade`."""
        x_s = self.shortcut(x, seg, impl)
        dx = self._conv(self.conv_0, F.leaky_relu(self.norm_0(x, seg, impl), 2e-1), impl)
        dx = self._conv(self.conv_1, F.leaky_relu(self.norm_1(dx, seg, impl), 2e-1), impl)
        return x_s + dx


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: reflection-padded conv -> norm -> act -> conv -> norm."""

    def __init__(self, dim: int, norm_layer: Callable[[nn.Module], nn.Module],
                 activation: nn.Module | None = None, kernel_size: int = 3):
        super().__init__()
        pw = (kernel_size - 1) // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pw), norm_layer(nn.Conv2d(dim, dim, kernel_size)),
            activation if activation is not None else nn.ReLU(False),
            nn.ReflectionPad2d(pw), norm_layer(nn.Conv2d(dim, dim, kernel_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)
