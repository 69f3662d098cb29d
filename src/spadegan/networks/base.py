"""What every network shares: weight initialisation and a parameter count."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn
from torch.nn import init

if TYPE_CHECKING:
    from ..options import Options


class BaseNetwork(nn.Module):
    """nn.Module with the official initialisation schemes (`--init_type`, `--init_variance`).

    Attribute `opt`: the Options the network was built from, set by `define_G` / `define_D` /
    `define_E` (and so by `load_checkpoint`). What reads a network without its options at
    hand (the synthesis engine, `Synthesizer`, `at_size`) takes them from there.
    """

    opt: "Options"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_weights(self, init_type: str = "xavier", gain: float = 0.02) -> None:
        def init_func(m: nn.Module) -> None:
            name = m.__class__.__name__
            # spectral-normed layers keep the raw weight in weight_orig
            weight = m._parameters.get("weight", None)
            if weight is None:
                weight = m._parameters.get("weight_orig", None)
            if "BatchNorm" in name:
                if weight is not None:
                    init.normal_(weight.data, 1.0, gain)
                if getattr(m, "bias", None) is not None:
                    init.constant_(m.bias.data, 0.0)
            elif weight is not None and ("Conv" in name or "Linear" in name):
                if init_type == "normal":
                    init.normal_(weight.data, 0.0, gain)
                elif init_type == "xavier":
                    init.xavier_normal_(weight.data, gain=gain)
                elif init_type == "xavier_uniform":
                    init.xavier_uniform_(weight.data, gain=1.0)
                elif init_type == "kaiming":
                    init.kaiming_normal_(weight.data, a=0, mode="fan_in")
                elif init_type == "orthogonal":
                    init.orthogonal_(weight.data, gain=gain)
                elif init_type == "none":
                    m.reset_parameters()
                if getattr(m, "bias", None) is not None:
                    init.constant_(m.bias.data, 0.0)

        self.apply(init_func)
