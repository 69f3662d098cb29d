"""SPADE: spatially-adaptive (de)normalisation (Park et al. 2019, eq. 1).

out = norm(x) * (1 + gamma(m)) + beta(m), where norm is parameter-free and gamma, beta are
convolutions of a shared 128-channel embedding of the label map m, resized (nearest) to x.

Two implementations of the same function, chosen by what the layer is given:

* a one-hot semantics tensor: the dense reference, convolutions as written above;
* `LabelCodes` (one code per pixel, see `label_codes`): the sparse implementation. The
  first convolution over the one-hot map becomes a sum of per-tap lookups. gamma and beta
  are constants of the code wherever all codes within reach of a pixel are equal and
  inside the image (always, for 1x1 kernels), so they are looked up in a per-code table
  made from the weights, and convolutions run only on the pixels near a code boundary
  (there, as lookups of the constants plus the product of the non-constant hidden vectors).
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

        gamma and beta are computed together (their weights side by side, 2C outputs). Every
        pixel reads one row of [per-code constants | boundary pixels' values], so a single
        gather writes each map. With 3D noise the constants are per (image, code): G = B
        table groups.
        """
        shared = self.mlp_shared[0]
        k = shared.kernel_size[0]
        pw, V = k // 2, level.V
        tables = tap_tables(shared.weight, *args, code_noise=noise)  # (G, T, V + 1, 128)
        groups = tables.shape[0]
        hidden_const = torch.relu(tables[:, :, :V].sum(1) + shared.bias).reshape(groups * V, -1)
        weight = torch.cat([wt for wt, _ in convs])  # (2C, 128, k, k)
        bias = torch.cat([b for _, b in convs])
        table = torch.addmm(bias, hidden_const, weight.sum(dim=(2, 3)).t())  # (G V, 2C)
        rows = level.code.reshape(-1)
        group = table_group(level, None, groups)
        if group is not None:
            rows = rows + group * V
        p, q = level.boundary(pw) if k > 1 else (rows[:0], rows[:0])
        if p.numel():
            band = self._boundary_values(level, p, q, hidden_const, weight, bias, args, noise)  # (P, 2C)
            table = torch.cat([table, band])
            rows = rows.index_put((p,), torch.arange(p.numel(), device=rows.device) + hidden_const.shape[0])
        return self._gather_maps(table, rows, level)

    @staticmethod
    def _gather_maps(table: torch.Tensor, rows: torch.Tensor, level: CodeLevel) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta): each pixel's row of `table` (R, 2C), as two contiguous NCHW maps
        (so the layer's output and the next conv's input are contiguous too)."""
        c = table.shape[1] // 2
        halves = (table[:, :c].t(), table[:, c:].t())  # (C, R)
        if level.B == 1:  # a (C, N) gather is already NCHW
            return tuple(h.index_select(1, rows).view(1, c, level.H, level.W) for h in halves)
        # per-image gathers write (B, C, HW) directly, without a transposing copy
        idx = rows.view(level.B, 1, -1).expand(-1, c, -1)
        return tuple(torch.gather(h[None].expand(level.B, -1, -1), 2, idx).view(level.B, c, level.H, level.W)
                     for h in halves)

    def _boundary_values(self, level: CodeLevel, p: torch.Tensor, q: torch.Tensor,
                         hidden_const: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         args: tuple[int, bool], noise: torch.Tensor | None) -> torch.Tensor:
        """(P, out): the k x k conv (`weight`, `bias`) of the hidden map at the pixels p, exactly.

        The hidden map is its code's constant everywhere except at the pixels q, so the conv is
        split as conv(constants) + conv(hidden - constants): the first a sum of per-tap tables
        of the constants (lookups), the second nonzero only through taps that land on q, made
        from one product (Q, 128) x (128, taps * out) whose rows are added to the pixels they
        reach. That multiplies Q rows (about half of P: q is the inner part of p's band)
        instead of P im2col columns.
        """
        shared = self.mlp_shared[0]
        k, out = shared.kernel_size[0], weight.shape[0]
        pw, taps, consts = k // 2, k * k, hidden_const.shape[0]
        with torch.no_grad():
            const_q = _const_rows(level, q, level.code.reshape(-1)[q], consts)
            idx_const, target, used = self._band_indices(level, p, q, pw, consts)
        hidden_q = torch.relu(label_conv(level, shared.weight, shared.bias, *args, flat=q,
                                         code_noise=noise))  # (Q, 128)
        delta = hidden_q - hidden_const[const_q]
        w_taps = weight.permute(1, 2, 3, 0).reshape(NHIDDEN, taps * out)  # (128, T * out), tap-major
        # per-tap tables of the constants the band reads (a few of the classes, not all of them)
        per_tap = (hidden_const[used] @ w_taps).view(used.numel(), taps, out).transpose(0, 1)  # (T, U, out)
        per_tap = torch.cat([per_tap, weight.new_zeros(taps, 1, out)], 1).reshape(-1, out)
        band = F.embedding_bag(idx_const, per_tap, mode="sum")  # (P + 1, out), the last row zero
        band = band.index_add(0, target, (delta @ w_taps).view(-1, out).to(band.dtype))  # (autocast: bf16)
        return band[:-1] + bias

    @staticmethod
    def _band_indices(level: CodeLevel, p: torch.Tensor, q: torch.Tensor, pw: int,
                      consts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For `_boundary_values`: `used`, the U constants (rows of hidden_const) the band's
        taps read; (P + 1, T) rows of the per-tap tables of those (tap t's block starts at
        t * (U + 1) and ends in a zero row, for taps in the padding; the extra last bag reads
        only zero rows); and (Q * T,) the row of p that tap t of each q pixel feeds (P, the
        extra row, where that pixel is in the padding)."""
        cp, offs, wp = level.padded(pw)
        taps, centre = offs.numel(), pw * wp + pw
        pos = level.window_base(p, pw)[:, None] + offs[None, :]  # (P, T) padded positions
        code = cp[pos]
        const_row = torch.where(code == level.V, consts, _const_rows(level, p, code, consts))  # consts: the padding
        present = torch.zeros(consts + 1, dtype=torch.bool, device=p.device)
        present[const_row] = True
        used = present[:consts].nonzero().squeeze(1)
        compact = torch.full((consts + 1,), used.numel(), dtype=torch.long, device=p.device)
        compact[used] = torch.arange(used.numel(), device=p.device)
        tap = torch.arange(taps, device=p.device)
        idx_const = compact[const_row] + tap * (used.numel() + 1)
        idx_const = torch.cat([idx_const, (used.numel() + tap * (used.numel() + 1))[None]])
        prow = torch.full_like(cp, p.numel())
        prow[level.window_base(p, pw) + centre] = torch.arange(p.numel(), device=cp.device)
        # tap t of pixel x reads x's window position offs[t]: q feeds the pixel centred at q - offs[t] + centre
        target = prow[(level.window_base(q, pw) + centre)[:, None] - offs[None, :] + centre]
        return idx_const, target.reshape(-1), used


def _const_rows(level: CodeLevel, flat: torch.Tensor, code: torch.Tensor, consts: int) -> torch.Tensor:
    """The rows of the constants table (`consts` = groups x V) for codes read by the pixels
    `flat` (`code`: one row per pixel, any trailing shape): the code itself, offset by the
    pixel's image where the constants are per image (3D noise)."""
    group = table_group(level, flat, consts // level.V)
    return code if group is None else code + group.view(-1, *([1] * (code.dim() - 1))) * level.V
