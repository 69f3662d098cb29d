"""ConvEncoder: the VAE style encoder, image -> (mu, logvar) of the style code z; `sample_z`
draws z from them (the reparameterisation, used by training, test, eval and synthesis).

Same layers and names as the official one (so `latest_net_E.pth` loads), but it also works
for crop_size < 256: the official code resizes every input to 256x256 and then fails on
the flatten when its sixth layer is absent; here such models see 128x128 instead, so five
stride-2 layers also end at 4x4.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import nonspade_norm_layer
from ..options import Options
from .base import BaseNetwork


class ConvEncoder(BaseNetwork):
    def __init__(self, opt: Options):
        super().__init__()
        kw, pw, ndf = 3, 1, opt.ngf
        norm_layer = nonspade_norm_layer(opt.norm_E)
        chans = [3, ndf, ndf * 2, ndf * 4, ndf * 8, ndf * 8]
        for i in range(5):
            self.add_module(f"layer{i + 1}", norm_layer(nn.Conv2d(chans[i], chans[i + 1], kw, stride=2, padding=pw)))
        self.six_layers = opt.crop_size >= 256
        if self.six_layers:
            self.layer6 = norm_layer(nn.Conv2d(ndf * 8, ndf * 8, kw, stride=2, padding=pw))
        self.input_size = 256 if self.six_layers else 128
        s0 = 4
        self.fc_mu = nn.Linear(ndf * 8 * s0 * s0, opt.z_dim)
        self.fc_var = nn.Linear(ndf * 8 * s0 * s0, opt.z_dim)
        self.actvn = nn.LeakyReLU(0.2, False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.input_size
        if x.size(2) != s or x.size(3) != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear")
        x = self.layer1(x)
        layers = [self.layer2, self.layer3, self.layer4, self.layer5]
        if self.six_layers:
            layers.append(self.layer6)
        for layer in layers:
            x = layer(self.actvn(x))
        x = self.actvn(x).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def sample_z(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(mu, exp(logvar)) by the reparameterisation trick: `eps * exp(logvar / 2) + mu`.

    `eps` is the standard normal noise (the trainer passes its own seeded stream); without
    it, it is drawn on mu's device and dtype from `generator`.
    """
    if eps is None:
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return eps.to(mu.device) * torch.exp(0.5 * logvar) + mu
