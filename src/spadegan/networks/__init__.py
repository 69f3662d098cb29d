"""The networks: SPADE/pix2pixHD generators, multiscale discriminator, VAE encoder, VGG19.

`define_G/define_D/define_E(opt)` build an initialised network from Options (the official
factory functions, with a plain dict instead of class lookup by string); the network keeps
those options as `net.opt`. `at_size(G, size)` runs a SPADE generator at another output size.
`--netG oasis` is the published OASIS generator (`oasis.OASISGenerator`, its shape from
`oasis.oasis_options_from(opt)`), initialised as the official `init_networks`.
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
from .oasis import OASISGenerator, oasis_options_from, oasis_semantic_nc
from .vgg import VGG19, load_vgg19

GENERATORS = {"spade": SPADEGenerator, "pix2pixhd": Pix2PixHDGenerator, "oasis": OASISGenerator}
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
    "sparse" (reading `LabelCodes`), recorded as `G.spade_impl`; default --spade_impl, dense for
    --spade_impl auto (which depends on the device: pass `spade_impl_for(opt, device)` from
    `layers.label_codes` there, see `generator.generator_impl`). Other generators are dense.
    """
    if opt.netG != "spade":
        if impl not in (None, "dense"):
            raise SpadeganError(f"--netG {opt.netG} has no sparse implementation; impl={impl!r} is for --netG spade")
        if opt.netG == "oasis":  # built from its OASISOptions (`net.oasis_opt`), then given `opt` as usual
            return _create(lambda o: OASISGenerator(oasis_options_from(o)), opt, init)
        return _create(GENERATORS[opt.netG], opt, init)
    return _create(SPADEGenerator, opt, init, impl=impl)


def define_D(opt: Options, init: bool = True, reads_codes: bool = False) -> BaseNetwork:
    """The discriminator chosen by --netD. `reads_codes` (multiscale, class labels): its first
    conv reads `LabelAndImage(image, codes)` instead of cat([semantics, image], 1), recorded as
    `D.reads_codes` (see `discriminator`)."""
    if opt.netD != "multiscale" or opt.image_label:
        if reads_codes:
            what = "a model of label images (--label_nc 0)" if opt.image_label else f"--netD {opt.netD}"
            raise SpadeganError(f"reads_codes=True is for the multiscale discriminator of class ids, not {what}")
        return _oasis_D(opt, init) if opt.netD == "oasis" else _create(DISCRIMINATORS[opt.netD], opt, init)
    return _create(MultiscaleDiscriminator, opt, init, reads_codes=reads_codes)


def _oasis_D(opt: Options, init: bool) -> BaseNetwork:
    """--netD oasis. With --netG oasis it predicts OASIS' channels (`oasis_semantic_nc` + 1
    logits, dontcare at class 0). Its 1x1 classifier gets the official initialisation (as
    every other conv: --init_type, --init_variance) unless --d_classifier_torch_init, which
    keeps PyTorch's default there (spadegan's variant, which learns sooner in small CPU runs:
    see `OASISDiscriminator.init_weights`)."""
    shape = opt
    if opt.netG == "oasis":  # logits for OASIS' channels, dontcare included
        shape = opt.replace(label_nc=oasis_semantic_nc(opt) - 1, contain_dontcare_label=True)
    net = _create(OASISDiscriminator, shape, init)
    net.opt = opt
    if init and not getattr(opt, "d_classifier_torch_init", False):
        BaseNetwork.init_weights(net.classifier, opt.init_type, opt.init_variance)  # as the other convs
    return net


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
           "load_vgg19", "latent_size", "block_plan", "BaseNetwork", "OASISGenerator"]
