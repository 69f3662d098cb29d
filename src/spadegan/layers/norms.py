"""Normalisation helpers: parameter-free norms for SPADE and the official non-SPADE wrapper.

`nonspade_norm_layer(norm_type)` returns a function that wraps a conv layer the way the
official `get_nonspade_norm_layer` does, which fixes the state_dict keys of D, E and the
pix2pixHD generator: `spectral` adds spectral norm to the conv; a sub-norm (`instance`,
`batch`, `sync_batch`) drops the conv bias and returns `Sequential(conv, norm)`.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import SpadeganError
from .spectral import spectral_norm


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation SPADE modulates: no affine parameters of its own."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "syncbatch":
        # plain BatchNorm behaviour on one process; synchronised under DDP
        return nn.SyncBatchNorm(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    raise SpadeganError(f"{kind!r} is not a parameter-free norm for SPADE (instance, batch, syncbatch)")


def _out_channels(layer: nn.Module) -> int:
    return layer.out_channels if hasattr(layer, "out_channels") else layer.weight.size(0)


def nonspade_norm_layer(norm_type: str = "instance") -> Callable[[nn.Module], nn.Module]:
    """A wrapper adding `norm_type` (e.g. spectralinstance, batch, spectral) to a conv layer."""
    spectral = norm_type.startswith("spectral")
    sub = norm_type[len("spectral"):] if spectral else norm_type

    def add_norm_layer(layer: nn.Module) -> nn.Module:
        if spectral:
            layer = spectral_norm(layer)
        if sub in ("", "none"):
            return layer
        # the bias has no effect before a normalisation, and official checkpoints lack it
        if getattr(layer, "bias", None) is not None:
            del layer._parameters["bias"]
            layer.register_parameter("bias", None)
        c = _out_channels(layer)
        if sub == "batch":
            norm = nn.BatchNorm2d(c, affine=True)
        elif sub in ("sync_batch", "syncbatch"):
            norm = nn.SyncBatchNorm(c, affine=True)
        elif sub == "instance":
            norm = nn.InstanceNorm2d(c, affine=False)
        else:
            raise SpadeganError(f"normalisation {norm_type!r} is not recognised")
        return nn.Sequential(layer, norm)

    return add_norm_layer
