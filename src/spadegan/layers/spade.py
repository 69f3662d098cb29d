"""SPADE: spatially-adaptive (de)normalisation (Park et al. 2019, eq. 1).

out = norm(x) * (1 + gamma(m)) + beta(m), where norm is parameter-free and gamma, beta are
convolutions of a shared 128-channel embedding of the label map m, resized (nearest) to x.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from .norms import param_free_norm

NHIDDEN = 128  # fixed in the paper and the official checkpoints


def parse_spade_config(config_text: str) -> tuple[str, int]:
    """'spadesyncbatch3x3' -> ('syncbatch', 3)."""
    m = re.search(r"spade(\D+)(\d)x\d", config_text)
    if not config_text.startswith("spade") or m is None:
        raise SpadeganError(f"{config_text!r} is not a SPADE config such as spadesyncbatch3x3")
    return m.group(1), int(m.group(2))


class SPADE(nn.Module):
    """Spatially-adaptive normalisation of `norm_nc` channels conditioned on `label_nc` channels."""

    def __init__(self, config_text: str, norm_nc: int, label_nc: int):
        super().__init__()
        kind, ks = parse_spade_config(config_text)
        self.param_free_norm = param_free_norm(kind, norm_nc)
        pw = ks // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, NHIDDEN, ks, padding=pw), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(NHIDDEN, norm_nc, ks, padding=pw)
        self.mlp_beta = nn.Conv2d(NHIDDEN, norm_nc, ks, padding=pw)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if segmap.shape[2:] != x.shape[2:]:  # same size: nearest resizing would only copy
            segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)
