"""Weight folding: turn a trained faithful generator's layers into plain inference tensors.

Everything here is done once, in float64, when the engine is built:

* spectral norm -> the eval-mode weight `weight_orig / sigma(u, v)` (no power iteration);
* gamma and beta -> one convolution with 2C outputs, the "1 +" of `1 + gamma` in its
  bias, so a SPADE layer is `x_hat * G + B`; eval-mode BatchNorm (`spade{batch,syncbatch}`)
  keeps x_hat = (x - mean) * rstd with rstd = 1/sqrt(var + eps) precomputed (folding it
  into G and B would be cheaper but loses fp32 accuracy, see `fold_spade`);
* the first SPADE convolution over a one-hot map -> per-tap embedding tables: a k x k conv
  of a one-hot map is, at each pixel, the sum over the k*k taps of the kernel column of
  the class found at that tap (plus the instance-edge column times the edge bit). Classes
  and the edge bit are combined into one "code" `label + L * edge` (L = one-hot channels),
  so one table row per (tap, code) holds everything;
* the SPADE layers of a block read the same resized map, so their tables are concatenated
  (one lookup gives the 3 x 128 hidden channels of norm_0, norm_1 and norm_s);
* per-code constant outputs: where the codes around a pixel are all equal (and no zero
  padding is in reach) the hidden activation, hence gamma/beta, is a constant of the code;
  `code_tables` precompute both for every code with the training path's functions
  (`layers.spade.hidden_constants`, `constant_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers.label_codes import code_embedding
from ..layers.spade import SPADE, constant_table, hidden_constants, parse_spade_config, taps_major
from ..layers.spectral import has_spectral_norm, spectral_weight


def conv_weight(conv: nn.Module) -> torch.Tensor:
    """The weight a conv/linear layer uses in eval mode (spectral norm folded), detached."""
    if has_spectral_norm(conv):
        return spectral_weight(conv)
    return conv.weight.detach()


def conv_bias(conv: nn.Module) -> torch.Tensor | None:
    return None if getattr(conv, "bias", None) is None else conv.bias.detach()


@dataclass
class FoldedSpade:
    """One SPADE layer as `x_hat * G + B`, G/B = conv(hidden) of the shared hidden map."""

    kind: str  # "instance" (x_hat = instance-normalised x) or "batch" (running statistics)
    ks: int
    channels: int
    shared_w: torch.Tensor  # (128, semantic_nc, k, k) first conv over the one-hot map
    shared_b: torch.Tensor  # (128,)
    gb_w: torch.Tensor  # (2C, 128, k, k): rows [0, C) give G, rows [C, 2C) give B
    gb_b: torch.Tensor  # (2C,)
    mean: torch.Tensor | None = None  # eval BatchNorm: x_hat = (x - mean) * rstd
    rstd: torch.Tensor | None = None


def fold_spade(spade: SPADE, config_text: str) -> FoldedSpade:
    """Fold one faithful SPADE (eval mode) into `FoldedSpade`, in float64."""
    kind, ks = parse_spade_config(config_text)
    d = torch.float64
    conv = spade.mlp_shared[0]
    shared_w, shared_b = conv_weight(conv).to(d), conv_bias(conv).to(d)
    wg, bg = conv_weight(spade.mlp_gamma).to(d), conv_bias(spade.mlp_gamma).to(d)
    wb, bb = conv_weight(spade.mlp_beta).to(d), conv_bias(spade.mlp_beta).to(d)
    c = wg.shape[0]
    # G = 1 + gamma: the "1 +" goes into the bias
    g_w, g_b = wg, bg + 1.0
    mean = rstd = None
    if kind != "instance":
        # eval BatchNorm is applied as (x - mean) * rstd before the modulation rather than
        # folded into G and B: folding gives x * G' - mean * rstd * G', which cancels
        # catastrophically in fp32 when |mean| >> std (measured 3x larger errors)
        bn = spade.param_free_norm
        rstd = 1.0 / torch.sqrt(bn.running_var.to(d) + bn.eps)
        mean = bn.running_mean.to(d)
        kind = "batch"
    return FoldedSpade(kind, ks, c, shared_w, shared_b, torch.cat([g_w, wb]), torch.cat([g_b, bb]),
                       mean, rstd)


def code_tables(spades: list[FoldedSpade], label_channels: int,
                instance: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per SPADE layer, (V, 128) hidden vector and (V, 2C) constant G|B of each code, for
    pixels whose whole receptive field has that code."""
    tables = []
    for sp in spades:
        hidden = hidden_constants(code_embedding(sp.shared_w, label_channels, instance)[None], sp.shared_b,
                                  label_channels * (2 if instance else 1))
        tables.append((hidden, constant_table(hidden, taps_major(sp.gb_w), sp.gb_b)))
    return tables
