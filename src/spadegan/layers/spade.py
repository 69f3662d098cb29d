"""SPADE: spatially-adaptive (de)normalisation (Park et al. 2019, eq. 1).

out = norm(x) * (1 + gamma(m)) + beta(m), where norm is parameter-free and gamma, beta are
convolutions of a shared 128-channel embedding of the label map m, resized (nearest) to x.

Two implementations of the same function, chosen by what the layer is given:

* a one-hot semantics tensor: the dense reference, convolutions as written above;
* `LabelCodes` (one code per pixel, see `label_codes`): the sparse implementation. The
  first convolution over the one-hot map becomes a sum of per-tap lookups. gamma and beta
  are constants of the code wherever all codes within reach of a pixel are equal and
  inside the image (always, for 1x1 kernels), so they are looked up in a per-code table
  made from the weights, and convolutions run only on the pixels near a code boundary.
  Where most pixels are near a boundary (small maps, noise-like labels) the level is
  computed densely from the looked-up hidden map instead. Forward and backward are
  ordinary autograd operations on the weights, so the gradients are those of the dense
  layer up to float rounding.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from .label_codes import CodeLevel, LabelCodes, label_conv, table_group, tap_tables
from .norms import param_free_norm

NHIDDEN = 128  # fixed in the paper and the official checkpoints

#: fraction of near-boundary pixels above which a level's gamma/beta are computed densely
SPARSE_THRESHOLD = 0.6


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

    def forward(self, x: torch.Tensor, segmap: torch.Tensor | LabelCodes) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if isinstance(segmap, LabelCodes):
            scale, shift = self.modulation_sparse(segmap, x.shape[2], x.shape[3])
            return torch.addcmul(shift.to(normalized.dtype), normalized, scale.to(normalized.dtype))
        if segmap.shape[2:] != x.shape[2:]:  # same size: nearest resizing would only copy
            segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    # ---- the sparse implementation -----------------------------------------------------
    def modulation_sparse(self, codes: LabelCodes, h: int, w: int,
                          threshold: float = SPARSE_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta), each (B, C, h, w), of the label map resized to h x w, by lookups
        (the "1 +" goes into gamma's bias, so the layer is one multiply-add)."""
        level = codes.at(h, w)
        shared = self.mlp_shared[0]
        k = shared.kernel_size[0]
        pw = k // 2
        convs = ((self.mlp_gamma.weight, self.mlp_gamma.bias + 1), (self.mlp_beta.weight, self.mlp_beta.bias))
        args = (codes.label_channels, codes.instance)
        noise = codes.code_noise()
        dense = k > 1 and (level.H <= 4 * pw or level.W <= 4 * pw
                           or level.boundary_fraction(pw) > threshold)
        if dense:
            hidden = torch.relu(label_conv(level, shared.weight, shared.bias, *args, code_noise=noise))
            hidden = hidden.view(level.B, level.H, level.W, -1).permute(0, 3, 1, 2).contiguous()
            return tuple(F.conv2d(hidden, wt, b, padding=pw) for wt, b in convs)
        return self._modulation_lookup(level, convs, args, noise)

    def _modulation_lookup(self, level: CodeLevel, convs: tuple, args: tuple[int, bool],
                           noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-code constants everywhere, the exact convolution at the boundary pixels.

        With 3D noise the constants are per (image, code): G = B table groups.
        """
        shared = self.mlp_shared[0]
        k = shared.kernel_size[0]
        pw, V = k // 2, level.V
        tables = tap_tables(shared.weight, *args, code_noise=noise)  # (G, T, V + 1, 128)
        groups = tables.shape[0]
        hidden_const = torch.relu(tables[:, :, :V].sum(1) + shared.bias).reshape(groups * V, -1)
        rows = level.code.reshape(-1)
        group = table_group(level, None, groups)
        if group is not None:
            rows = rows + group * V
        p, q = level.boundary(pw) if k > 1 else (rows[:0], rows[:0])
        cols = self._boundary_columns(level, p, q, hidden_const, args, noise) if p.numel() else None
        maps = []
        for wt, b in convs:
            const = torch.addmm(b, hidden_const, wt.sum(dim=(2, 3)).t())  # (G V, C)
            full = const.t().index_select(1, rows)  # (C, N): a fresh tensor, written in place below
            if cols is not None:
                full.index_copy_(1, p, torch.addmm(b, cols, wt.permute(2, 3, 1, 0).reshape(cols.shape[1], -1)).t())
            # contiguous NCHW (a copy only when B > 1), so the layer's output and the next conv's input are too
            maps.append(full.view(-1, level.B, level.H, level.W).permute(1, 0, 2, 3).contiguous())
        return maps[0], maps[1]

    def _boundary_columns(self, level: CodeLevel, p: torch.Tensor, q: torch.Tensor,
                          hidden_const: torch.Tensor, args: tuple[int, bool],
                          noise: torch.Tensor | None) -> torch.Tensor:
        """(P, k*k*128) the hidden vectors each boundary pixel's k x k conv reads (im2col),
        looked up (per-code constants, zero in the padding) or, at the pixels q, computed."""
        shared = self.mlp_shared[0]
        k = shared.kernel_size[0]
        pw, consts = k // 2, hidden_const.shape[0]
        hidden_q = torch.relu(label_conv(level, shared.weight, shared.bias, *args, flat=q,
                                         code_noise=noise))  # (Q, 128)
        with torch.no_grad():  # which row of [constants | zero | hidden_q] each tap reads
            cp, offs, wp = level.padded(pw)
            qrow = torch.full_like(cp, -1)
            qrow[level.window_base(q, pw) + pw * wp + pw] = torch.arange(q.numel(), device=cp.device)
            pos = level.window_base(p, pw)[:, None] + offs[None, :]
            row, code = qrow[pos], cp[pos]
            const_row = code
            if consts > level.V:  # per-image constants: offset by the image's group
                const_row = code + (p // (level.H * level.W))[:, None] * level.V
            idx = torch.where(row >= 0, row + consts + 1,
                              torch.where(code == level.V, consts, const_row))
        table = torch.cat([hidden_const, hidden_const.new_zeros(1, NHIDDEN), hidden_q])
        return F.embedding(idx, table).view(p.numel(), -1)  # tap-major, as the conv weights
