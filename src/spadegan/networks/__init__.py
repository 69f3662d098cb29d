"""The networks: SPADE/pix2pixHD generators, multiscale discriminator, VAE encoder, VGG19.

`define_G/define_D/define_E(opt)` build an initialised network from Options (the official
factory functions, with a plain dict instead of class lookup by string).
"""

from __future__ import annotations

import torch

from ..options import Options
from .base import BaseNetwork
from .discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from .encoder import ConvEncoder
from .generator import Pix2PixHDGenerator, SPADEGenerator, latent_size
from .vgg import VGG19, load_vgg19

GENERATORS = {"spade": SPADEGenerator, "pix2pixhd": Pix2PixHDGenerator}
DISCRIMINATORS = {"multiscale": MultiscaleDiscriminator}


def _create(cls, opt: Options, init: bool) -> BaseNetwork:
    net = cls(opt)
    if init:
        net.init_weights(opt.init_type, opt.init_variance)
    return net


def define_G(opt: Options, init: bool = True) -> BaseNetwork:
    """The generator chosen by --netG, initialised (--init_type, --init_variance), on CPU."""
    return _create(GENERATORS[opt.netG], opt, init)


def define_D(opt: Options, init: bool = True) -> BaseNetwork:
    """The discriminator chosen by --netD."""
    return _create(DISCRIMINATORS[opt.netD], opt, init)


def define_E(opt: Options, init: bool = True) -> BaseNetwork:
    """The VAE style encoder (only one kind exists)."""
    return _create(ConvEncoder, opt, init)


__all__ = ["define_G", "define_D", "define_E", "SPADEGenerator", "Pix2PixHDGenerator",
           "MultiscaleDiscriminator", "NLayerDiscriminator", "ConvEncoder", "VGG19",
           "load_vgg19", "latent_size", "BaseNetwork"]
