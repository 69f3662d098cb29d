"""SPADE: spatially-adaptive (de)normalisation (Park et al. 2019, eq. 1).

out = norm(x) * (1 + gamma(m)) + beta(m), where norm is parameter-free and gamma, beta are
convolutions of a shared 128-channel embedding of the label map m, resized (nearest) to x.

Two implementations of the same function, chosen by the caller (`impl`, recorded once on the
network, see `networks.SPADEGenerator`), each reading its own form of the label map:

* "dense", the reference: the one-hot semantics tensor, convolutions as written above;
* "sparse": `LabelCodes` (one code per pixel, see `label_codes`). The
  first convolution over the one-hot map becomes a sum of per-tap lookups. gamma and beta
  are constants of the code wherever all codes within reach of a pixel are equal and
  inside the image (always, for 1x1 kernels), so they are looked up in a per-code table
  made from the weights, and convolutions run only on the pixels near a code boundary,
  once per distinct window of codes there (along a boundary the same few windows repeat;
  see `CodeLevel.band_plan`). Where the distinct windows are many per pixel (small maps,
  noise-like labels) the level is computed densely from the looked-up hidden map
  instead. The multiply-add reads the tables through the pixels' rows
  (`_GatheredModulation`, whose backward sums each row's pixels by a one-hot product).
  Everything else is ordinary autograd operations on the weights, so the gradients are
  those of the dense layer up to float rounding.

The sparse mathematics is written once, here and in `label_codes`, for training and for the
synthesis engine (`spadegan.engine`, which adds only its own layout and fused kernels):
the per-code hidden vectors and gamma/beta constants (`hidden_constants`, `constant_table`),
the band's exact values (`band_values`), and the choice between them and the dense
computation (`runs_dense`).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from .label_codes import BandPlan, CodeLevel, LabelCodes, check_label_input, check_spade_impl, label_conv, tap_tables
from .norms import param_free_norm

NHIDDEN = 128  # fixed in the paper and the official checkpoints

#: a level's gamma/beta are computed densely where the lookup path would multiply more than
#: this many rows per pixel (the band's distinct hidden vectors, plus NHIDDEN for fixed costs):
#: in training (forward and backward) ...
SPARSE_THRESHOLD = 0.6
#: ... and in the synthesis engine (forward only), whose dense path is one channels-last
#: convolution while the band's per-tap product writes k*k rows per distinct window; the two
#: measured even at about 0.2-0.3 windows per pixel (benchmarks/README.md, Synthesis)
INFERENCE_SPARSE_THRESHOLD = 0.2


def runs_dense(level: CodeLevel, pw: int, groups: int, threshold: float | None = None) -> bool:
    """Whether a SPADE level's gamma/beta are computed densely rather than by lookups: where
    the band has more than `threshold` (default SPARSE_THRESHOLD) distinct hidden windows per
    pixel, counting NHIDDEN more for the lookup path's fixed costs. 1x1 kernels (pw 0) have no
    band: always lookups."""
    threshold = SPARSE_THRESHOLD if threshold is None else threshold
    if pw == 0 or NHIDDEN > threshold * level.n:  # the second without counting the windows
        return pw > 0
    return level.hidden_windows(pw, groups)[0].numel() + NHIDDEN > threshold * level.n


def hidden_constants(tables: torch.Tensor, bias: torch.Tensor, num_codes: int) -> torch.Tensor:
    """(G V, out): ReLU(the first conv) at a pixel whose whole window holds one code inside the
    image: every tap reads that code's row. `tables` (G, T, V + 1, out): per-tap lookup tables
    (`label_codes.tap_tables`; G groups of constants, one per image with 3D noise)."""
    return torch.relu(tables[:, :, :num_codes].sum(1) + bias).flatten(0, 1)


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, k, k) conv weight -> (in, k*k, out): the weight of each tap, tap-major."""
    return weight.permute(1, 2, 3, 0).reshape(weight.shape[1], -1, weight.shape[0])


def constant_table(hidden_const: torch.Tensor, w_taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(G V, out): a k x k conv (`w_taps` (in, T, out), `bias`) of a hidden map that is one
    code's constant hidden vector under every tap (the gamma/beta constants)."""
    return torch.addmm(bias, hidden_const, w_taps.sum(1))


def band_values(plan: BandPlan, hidden_const: torch.Tensor, hidden_q: torch.Tensor, w_taps: torch.Tensor,
                bias: torch.Tensor, max_bytes: int | None = None) -> torch.Tensor:
    """(R, out): the k x k conv (weights `w_taps` (in, T, out), `bias`) of the hidden map at
    the band's distinct output rows (`plan.bags`), exactly.

    Each tap of the conv reads a hidden vector that is either a code's constant
    (`hidden_const` rows `plan.const_rows`) or one of the band's distinct hidden windows
    (`hidden_q`, at `plan.hidden_pixels`), or the zero padding, so the conv is a sum of per-tap
    lookups in one product (U constants + Qu windows + 1, in) x (in, T * out): R bags of T rows.
    `max_bytes`: the product is done in chunks of taps of at most about that size.
    """
    source = torch.cat([hidden_const[plan.const_rows], hidden_q.to(hidden_const.dtype),
                        hidden_const.new_zeros(1, hidden_const.shape[1])])  # the zero row: padding
    _, t, out = w_taps.shape
    n = t if max_bytes is None else max(1, min(t, max_bytes // max(1, source.shape[0] * out * source.element_size())))
    if n == t:
        per_tap = (source @ w_taps.flatten(1)).view(-1, out)  # row r, tap t: r * T + t
        return F.embedding_bag(plan.bags, per_tap, mode="sum") + bias
    rows = plan.bags // t
    values = None
    for t0 in range(0, t, n):
        t1 = min(t, t0 + n)
        per_tap = (source @ w_taps[:, t0:t1].flatten(1)).view(-1, out)
        idx = rows[:, t0:t1] * (t1 - t0) + torch.arange(t1 - t0, device=rows.device)
        part = F.embedding_bag(idx, per_tap, mode="sum")
        values = part if values is None else values.add_(part)
    return values.add_(bias)


#: maps of at least this many elements use `_GatheredModulation` (below, its Python backward
#: costs more than it saves; benchmarks/README.md, Training)
GATHERED_MODULATION_MIN = 1 << 17


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

    def forward(self, x: torch.Tensor, segmap: torch.Tensor | LabelCodes, impl: str = "dense") -> torch.Tensor:
        """`impl` "dense": `segmap` is the one-hot semantics tensor; "sparse": its `LabelCodes`."""
        check_label_input(check_spade_impl(impl), segmap, "this SPADE layer")
        normalized = self.param_free_norm(x)
        if impl == "sparse":
            return self._forward_sparse(normalized, segmap)
        if segmap.shape[2:] != x.shape[2:]:  # same size: nearest resizing would only copy
            segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    def _forward_sparse(self, normalized: torch.Tensor, codes: LabelCodes) -> torch.Tensor:
        level, pw, groups = self._level(codes, normalized.shape[2], normalized.shape[3])
        if normalized.numel() >= GATHERED_MODULATION_MIN and not runs_dense(level, pw, groups):
            # per-row tables, gathered inside the multiply-add
            table = self._modulation_lookup(codes, level, pw, groups).to(normalized.dtype)
            c = table.shape[1] // 2
            return _GatheredModulation.apply(normalized, table[:, :c], table[:, c:], level, pw, groups)
        scale, shift = self.modulation_sparse(codes, normalized.shape[2], normalized.shape[3])
        return torch.addcmul(shift.to(normalized.dtype), normalized, scale.to(normalized.dtype))

    # ---- the sparse implementation -----------------------------------------------------
    def modulation_sparse(self, codes: LabelCodes, h: int, w: int,
                          threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta), each (B, C, h, w), of the label map resized to h x w, by lookups
        (the "1 +" goes into gamma's bias, so the layer is one multiply-add). `threshold`:
        SPARSE_THRESHOLD unless given."""
        level, pw, groups = self._level(codes, h, w)
        if runs_dense(level, pw, groups, threshold):
            return self._modulation_dense(codes, level, pw)
        table = self._modulation_lookup(codes, level, pw, groups)
        return self._gather_maps(table, level.band_plan(pw, groups).rows, level)

    def _level(self, codes: LabelCodes, h: int, w: int) -> tuple[CodeLevel, int, int]:
        """The codes at h x w, the kernels' padding and the constants' table groups (B with
        3D noise, whose constants are per image)."""
        level = codes.at(h, w)
        return level, self.mlp_shared[0].kernel_size[0] // 2, 1 if codes.noise is None else level.B

    def _convs(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """(weight, bias) of gamma's conv (the "1 +" in its bias) and of beta's."""
        return (self.mlp_gamma.weight, self.mlp_gamma.bias + 1), (self.mlp_beta.weight, self.mlp_beta.bias)

    def _modulation_dense(self, codes: LabelCodes, level: CodeLevel, pw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta) by convolutions of the looked-up hidden map (the fallback)."""
        shared = self.mlp_shared[0]
        hidden = torch.relu(label_conv(level, shared.weight, shared.bias, codes.label_channels, codes.instance,
                                       code_noise=codes.code_noise()))
        hidden = hidden.view(level.B, level.H, level.W, -1).permute(0, 3, 1, 2).contiguous()
        return tuple(F.conv2d(hidden, wt, b, padding=pw) for wt, b in self._convs())

    def _modulation_lookup(self, codes: LabelCodes, level: CodeLevel, pw: int, groups: int) -> torch.Tensor:
        """(R, 2C): per-code constants everywhere, the exact convolution at the boundary pixels.

        gamma and beta are computed together (their weights side by side, 2C outputs). Every
        pixel reads one row of [per-code constants | the band's distinct values]
        (`level.band_plan(pw, groups).rows`). With 3D noise the constants are per (image,
        code): G = B table groups.
        """
        plan = level.band_plan(pw, groups)
        noise = codes.code_noise()
        shared = self.mlp_shared[0]
        tables = tap_tables(shared.weight, codes.label_channels, codes.instance, code_noise=noise)  # (G, T, V + 1, 128)
        hidden_const = hidden_constants(tables, shared.bias, level.V)  # (G V, 128)
        # (128, T, 2C): gamma's and beta's weights side by side, tap-major, in one copy
        convs = self._convs()
        w_taps = torch.cat([wt.permute(1, 2, 3, 0) for wt, _ in convs], dim=3).flatten(1, 2)
        bias = torch.cat([b for _, b in convs])
        table = constant_table(hidden_const, w_taps, bias)  # (G V, 2C)
        if plan.bags.numel():
            hidden_q = torch.relu(label_conv(level, shared.weight, shared.bias, codes.label_channels, codes.instance,
                                             flat=plan.hidden_pixels, code_noise=noise))  # (Qu, 128)
            table = torch.cat([table, band_values(plan, hidden_const, hidden_q, w_taps, bias).to(table.dtype)])
        return table

    @staticmethod
    def _gather_maps(table: torch.Tensor, rows: torch.Tensor, level: CodeLevel) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta): each pixel's row of `table` (R, 2C), as two contiguous NCHW maps."""
        c = table.shape[1] // 2
        return gather_rows(table[:, :c], rows, level), gather_rows(table[:, c:], rows, level)


def gather_rows(table: torch.Tensor, rows: torch.Tensor, level: CodeLevel) -> torch.Tensor:
    """(B, C, H, W): each pixel's row of `table` (R, C), contiguous NCHW (so the layer's
    output and the next conv's input are contiguous too)."""
    c = table.shape[1]
    if level.B == 1:  # a (C, N) gather is already NCHW
        return table.t().index_select(1, rows).view(1, c, level.H, level.W)
    # per-image gathers write (B, C, HW) directly, without a transposing copy
    idx = rows.view(level.B, 1, -1).expand(-1, c, -1)
    return torch.gather(table.t()[None].expand(level.B, -1, -1), 2, idx).view(level.B, c, level.H, level.W)


def sum_rows(values: torch.Tensor, level: CodeLevel, pw: int, groups: int, num_rows: int) -> torch.Tensor:
    """(num_rows, C): for a (B, C, H, W) map, the sum of each row's pixels (rows as in
    `level.band_plan(pw, groups).rows`): the backward of `gather_rows`, by one batched product
    with a one-hot matrix for the constants' rows (`level.row_sums`) instead of a scatter."""
    b, c = values.shape[:2]
    values = values.reshape(b, c, -1)
    plan = level.row_sums(pw, groups)
    if plan is None:
        idx = level.band_plan(pw, groups).rows.view(b, 1, -1).expand(-1, c, -1)
        return values.new_zeros(b, c, num_rows).scatter_add_(2, idx, values).sum(0).t()
    out = values.new_zeros(num_rows + 1, c)  # the last row takes the one-hot matrix's unused columns
    with torch.autocast(values.device.type, enabled=False):  # sums in the map's own dtype
        per_const = torch.bmm(values, plan.one_hot.to(values.dtype))  # (B, C, K)
    out.index_add_(0, plan.table_rows.view(-1), per_const.transpose(1, 2).reshape(-1, c))
    if plan.band_pixels.numel():
        hw = values.shape[2]
        band = values[plan.band_pixels // hw, :, plan.band_pixels % hw]  # (P, C)
        out.index_add_(0, plan.band_rows, band)
    return out[:num_rows]


class _GatheredModulation(torch.autograd.Function):
    """normalized * scale_table[rows] + shift_table[rows] (SPADE's multiply-add with
    per-row tables, rows = `level.band_plan(pw, groups).rows`): the same maths as gathering
    the maps and calling addcmul, with a backward that sums the tables' gradients by
    `sum_rows` and skips the full-size scalar products in addcmul's backward."""

    @staticmethod
    def forward(ctx, normalized, scale_table, shift_table, level, pw, groups):
        rows = level.band_plan(pw, groups).rows
        scale = gather_rows(scale_table, rows, level)
        out = gather_rows(shift_table, rows, level).addcmul_(normalized, scale)
        ctx.save_for_backward(normalized, scale)
        ctx.plan = (level, pw, groups, scale_table.shape[0])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        normalized, scale = ctx.saved_tensors
        level, pw, groups, num_rows = ctx.plan
        need_norm, need_scale, need_shift = ctx.needs_input_grad[:3]
        grad_norm = grad * scale if need_norm else None
        grad_scale = sum_rows(grad * normalized, level, pw, groups, num_rows) if need_scale else None
        grad_shift = sum_rows(grad, level, pw, groups, num_rows) if need_shift else None
        return grad_norm, grad_scale, grad_shift, None, None, None
