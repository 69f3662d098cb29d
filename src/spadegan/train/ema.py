"""An exponential moving average of the generator's weights (`--ema_decay`), as OASIS keeps.

After every generator step the average moves towards G: `ema = decay * ema + (1 - decay) *
G`, parameter by parameter. Its buffers are its own: batch-norm statistics of G's weights
do not fit the averaged weights, so before the average is saved (or evaluated) a copy of it
gets fresh statistics, measured on a fixed set of training batches in train mode, as the
OASIS paper does; the same passes run spectral norm's power iteration on the averaged
weights, starting from G's vectors. The live average (its parameters and buffers) is part of
the training state, so a resumed run continues it exactly.

`official=True` (--netG oasis) is the published OASIS EMA (`utils.update_EMA`) instead: after
each iteration (G and D step) EVERY state entry is averaged, buffers included (batch-norm
running statistics, spectral-norm u and v; integer entries truncate, as `copy_` does), and
`refresh_statistics` re-estimates the batch-norm statistics on the LIVE average: up to
OFFICIAL_STAT_FORWARDS train-mode forwards (running averages with the norms' momentum, 0.1),
which also power-iterate its averaged u, v.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from .. import networks

#: training batches used to measure the batch-norm statistics of the averaged generator
STAT_BATCHES = 50
#: the official statistics pass: forwards of the live average (its loop breaks after the 51st)
OFFICIAL_STAT_FORWARDS = 51


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

    def __init__(self, G: nn.Module, decay: float, official: bool = False):
        self.decay = float(decay)
        self.official = bool(official)
        self.net = plain_batchnorm(networks.define_G(G.opt, init=False, impl=_impl(G)))
        self.net.load_state_dict(G.state_dict())
        self.net.requires_grad_(False).eval().to(next(G.parameters()).device)

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * G, for every parameter (buffers stay); official:
        for every state entry, with the official arithmetic `ema * decay + G * (1 - decay)`."""
        if self.official:
            own = self.net.state_dict()
            for k, v in G.state_dict().items():
                own[k].copy_(own[k] * self.decay + v * (1 - self.decay))
            return
        for avg, p in zip(self.net.parameters(), G.parameters()):
            avg.lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def refresh_statistics(self, batches: Iterable[Any], run: Callable[[nn.Module, Any], Any],
                           net: nn.Module | None = None) -> nn.Module:
        """The official statistics pass on the live average (or on `net`, a copy of it): `run(net,
        batch)` in train mode for the first OFFICIAL_STAT_FORWARDS of `batches`, the norms
        keeping their momentum; then eval mode again. Returns the network."""
        net = self.net if net is None else net
        net.train()
        for i, batch in enumerate(batches):
            if i >= OFFICIAL_STAT_FORWARDS:
                break
            run(net, batch)
        return net.eval()

    def copy(self, G: nn.Module) -> nn.Module:
        """A copy of the live average (same architecture as `G`), in eval mode."""
        net = plain_batchnorm(networks.define_G(G.opt, init=False, impl=_impl(G))).to(next(self.net.parameters()).device)
        net.load_state_dict(self.net.state_dict())
        return net.requires_grad_(False).eval()

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
