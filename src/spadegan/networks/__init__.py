"""The networks: SPADE/pix2pixHD generators, multiscale discriminator, VAE encoder, VGG19.

`define_G/define_D/define_E(opt)` build an initialised network from Options (the official
factory functions, with a plain dict instead of class lookup by string); the network keeps
those options as `net.opt`. `at_size(G, size)` runs a SPADE generator at another output size.
"""

from __future__ import annotations

import copy

import torch.nn as nn

from ..errors import SpadeganError
from ..options import Options
from .base import BaseNetwork
from .discriminator import MultiscaleDiscriminator, NLayerDiscriminator, OASISDiscriminator
from .encoder import ConvEncoder, sample_z
from .generator import Pix2PixHDGenerator, SPADEGenerator, block_plan, latent_size
from .vgg import VGG19, load_vgg19

GENERATORS = {"spade": SPADEGenerator, "pix2pixhd": Pix2PixHDGenerator}
DISCRIMINATORS = {"multiscale": MultiscaleDiscriminator, "oasis": OASISDiscriminator}


def _create(cls, opt: Options, init: bool, **kwargs) -> BaseNetwork:
    net = cls(opt, **kwargs)
    if init:
        net.init_weights(opt.init_type, opt.init_variance)
    net.opt = opt  # the one place a network gets its options (see BaseNetwork)
    return net


def define_G(opt: Options, init: bool = True, impl: str | None = None) -> BaseNetwork:
    """The generator chosen by --netG, initialised (--init_type, --init_variance), on CPU.

    `impl`: the SPADE implementation, "dense" (the reference, reading the one-hot tensor) or
    "sparse" (reading `LabelCodes`), recorded as `G.spade_impl`; default --spade_impl (see
    `SPADEGenerator`). Other generators are dense.
    """
    if opt.netG != "spade":
        if impl not in (None, "dense"):
            raise SpadeganError(f"--netG {opt.netG} has no sparse implementation; impl={impl!r} is for --netG spade")
        return _create(GENERATORS[opt.netG], opt, init)
    return _create(SPADEGenerator, opt, init, impl=impl)


def define_D(opt: Options, init: bool = True) -> BaseNetwork:
    """The discriminator chosen by --netD."""
    return _create(DISCRIMINATORS[opt.netD], opt, init)


def define_E(opt: Options, init: bool = True) -> BaseNetwork:
    """The VAE style encoder (only one kind exists)."""
    return _create(ConvEncoder, opt, init)


def at_size(G: nn.Module, size: tuple[int, int]) -> nn.Module:
    """The SPADE generator `G` producing (H, W) = `size` images, without changing G.

    A SPADE generator starts from a map of crop_size / 2**num_up_layers, fixed when it is
    built (`sh`, `sw`); this returns a shallow copy sharing all of G's modules and weights
    whose start map fits `size` (G itself when it already does), so G stays usable as it
    was, also from another thread. `size` must be a multiple of 2**num_up_layers; a VAE
    generator's fc layer only fits its training size.
    """
    m = 2 ** G.opt.num_up_layers
    sh, sw = size[0] // m, size[1] // m
    if (G.sh, G.sw) == (sh, sw):
        return G
    view = copy.copy(G)  # a new module object over the same submodules and parameters
    view.sh, view.sw = sh, sw
    return view


__all__ = ["define_G", "define_D", "define_E", "at_size", "sample_z", "SPADEGenerator", "Pix2PixHDGenerator",
           "MultiscaleDiscriminator", "NLayerDiscriminator", "OASISDiscriminator", "ConvEncoder", "VGG19",
           "load_vgg19", "latent_size", "block_plan", "BaseNetwork"]
