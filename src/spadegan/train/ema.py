"""An exponential moving average of the generator's weights (`--ema_decay`), as OASIS keeps.

After every generator step the average moves towards G: `ema = decay * ema + (1 - decay) *
G`, parameter by parameter. Its buffers are its own: batch-norm statistics of G's weights
do not fit the averaged weights, so before the average is saved (or evaluated) a copy of it
gets fresh statistics, measured on a fixed set of training batches in train mode, as the
OASIS paper does; the same passes run spectral norm's power iteration on the averaged
weights, starting from G's vectors. The live average (its parameters and buffers) is part of
the training state, so a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from .. import networks

#: training batches used to measure the batch-norm statistics of the averaged generator
STAT_BATCHES = 50


def plain_batchnorm(net: nn.Module) -> nn.Module:
    """Make every SyncBatchNorm of `net` a plain BatchNorm2d (same parameters and buffers), so
    that the average, run on one process only, never waits for the others."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) is not nn.BatchNorm2d:
            m.__class__ = nn.BatchNorm2d
    return net


def _impl(G: nn.Module) -> str | None:
    """The SPADE implementation the average is built with: G's (`spade_impl`, which the
    training step feeds), so the average reads what G reads."""
    return G.spade_impl if G.opt.netG == "spade" else None


class GeneratorEMA:
    """The moving average of a generator `G` (the network `self.net`, frozen, in eval mode)."""

    def __init__(self, G: nn.Module, decay: float):
        self.decay = float(decay)
        self.net = plain_batchnorm(networks.define_G(G.opt, init=False, impl=_impl(G)))
        self.net.load_state_dict(G.state_dict())
        self.net.requires_grad_(False).eval().to(next(G.parameters()).device)

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * G, for every parameter (buffers stay)."""
        for avg, p in zip(self.net.parameters(), G.parameters()):
            avg.lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    @torch.no_grad()
    def for_synthesis(self, G: nn.Module, batches: Iterable[Any], run: Callable[[nn.Module, Any], Any]) -> nn.Module:
        """A copy of the average ready for synthesis: spectral-norm vectors from G, then
        `run(net, batch)` (a forward pass) in train mode over `batches`, which re-estimates
        the batch-norm statistics as a plain average over the batches and refines the
        spectral-norm vectors. The live average is left as it is."""
        net = plain_batchnorm(networks.define_G(G.opt, init=False, impl=_impl(G))).to(next(self.net.parameters()).device)
        net.load_state_dict(self.net.state_dict())
        own = net.state_dict()
        for k, v in G.state_dict().items():
            if k.endswith(("weight_u", "weight_v")):
                own[k].copy_(v)
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        net.train()
        for batch in batches:
            run(net, batch)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        return net.eval()
