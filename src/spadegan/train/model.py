"""`Pix2PixModel`: G, D (and E with --use_vae) and the losses of one training step.

With SPADE's multiscale discriminator: hinge (or --gan_mode) GAN loss, discriminator
feature matching (unless --no_ganFeat_loss), VGG perceptual loss (unless --no_vgg_loss) and
KLD * lambda_kld (--use_vae), computed as the official `Pix2PixModel` does; fake and real
go through D as one batch. With `--netD oasis` (OASIS): D segments the image alone into
the classes + "fake"; the class-balanced N+1 cross-entropy for G and D, LabelMix for D, in
the official D step: three D passes (fake, real, LabelMix image), so spectral norm's power
iteration runs three times, and one LabelMix coin per class shared by the batch
(`losses.labelmix_class_mask`; --labelmix_per_image: spadegan's coin per image and class).

With `--netG oasis` (the published generator, implied by `--netD oasis`) the label map
travels as `OASISLabel`: OASIS' channels (dontcare at 0, `networks.oasis.oasis_channels`), which
G reads as the dense one-hot tensor (the published generator has no sparse path, so this is
the one choice, said once) and the losses as class ids.

The label map travels as `LabelCodes`: G reads it as codes (sparse SPADE) or as the one-hot
tensor (`--spade_impl dense`, the reference), as decided once when the model is built
(`sparse`, G built with that implementation), D reads the one-hot tensor (or, on the sparse path
with many classes, the codes: `first_conv_lookup_pays`). An image label
(`--label_nc 0`) travels as `ImageLabel`, the image tensor itself, which G and D read as it is.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn

from .. import networks
from ..device import say_once
from ..data.semantics import instance_map
from ..layers.label_codes import LabelCodes, spade_impl_for
from ..networks.discriminator import LabelAndImage, first_conv_lookup_pays
from ..losses import (GANLoss, VGGLoss, feature_matching_loss, kld_loss, labelmix_class_mask, labelmix_classes,
                      labelmix_loss, labelmix_mask, oasis_loss)
from ..networks.oasis import oasis_channels, oasis_semantic_nc
from ..options import Options


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 when autocast made it half precision; float32 and float64 stay as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _floatify(pred: Any) -> Any:
    """Discriminator outputs (nested lists) in full precision, so losses are computed in it."""
    if isinstance(pred, list):
        return [_floatify(p) for p in pred]
    return _full_precision(pred)


class ImageLabel:
    """An image label batch (`--label_nc 0`): the (B, input_nc, H, W) tensor in [-1, 1] that G and D
    read where a class map gives its one-hot tensor (`LabelCodes.semantics`)."""

    def __init__(self, image: torch.Tensor):
        self.image = image

    def semantics(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.image if dtype is None else self.image.to(dtype)


class OASISLabel:
    """A class-map batch for the published OASIS generator: `channels` (B, H, W) int64 in OASIS'
    order (dontcare at 0), `semantic_nc` one-hot channels. G reads `semantics()` (the dense
    one-hot, the official `preprocess_input` scatter), the OASIS losses `channels`."""

    def __init__(self, channels: torch.Tensor, semantic_nc: int):
        self.channels, self.semantic_nc = channels, semantic_nc

    def semantics(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        b, h, w = self.channels.shape
        out = torch.zeros(b, self.semantic_nc, h, w, device=self.channels.device, dtype=dtype or torch.float32)
        return out.scatter_(1, self.channels[:, None], 1.0)


Label = LabelCodes | ImageLabel | OASISLabel


@contextlib.contextmanager
def requires_grad(net: nn.Module | None, flag: bool) -> Iterator[None]:
    """Temporarily (un)freeze a network's parameters.

    D is frozen during the generator step: its weights are not updated there (the official
    code computes and then discards those gradients), and under DDP a gradient reaching a
    wrapped parameter outside its own step would confuse the gradient reducer.
    """
    if net is None:
        yield
        return
    params = [p for p in net.parameters()]
    old = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, o in zip(params, old):
            p.requires_grad_(o)


class Pix2PixModel(nn.Module):
    """G, D, E and the losses; `compute_generator_loss` / `compute_discriminator_loss`.

    `self.G/D/E` are what the updating step calls (DDP wrappers under torchrun);
    `self.netG/netD/netE` are the plain networks (saved, and used where a network is only
    evaluated: D in the generator step, G and E in the discriminator step).
    `noise(shape)` supplies the VAE's reparameterisation noise and the 3D noise (the trainer's
    seeded stream), `coins(n)` the official LabelMix's n coins (int64 0/1; default torch.randint).
    `sparse`: whether G runs the sparse SPADE, from --spade_impl for `device` (the device the
    model trains on; default the options' own, `opt.torch_device`).
    """

    def __init__(self, opt: Options, vgg: nn.Module | None = None, kld_scale: float = 1.0,
                 noise: Callable[[torch.Size], torch.Tensor] | None = None, device: torch.device | None = None,
                 coins: Callable[[int], torch.Tensor] | None = None):
        super().__init__()
        self.opt = opt
        self.oasis_g = opt.netG == "oasis"
        impl = spade_impl_for(opt, opt.torch_device if device is None else device)  # dense for image labels
        self.sparse = impl == "sparse" and not self.oasis_g
        if self.oasis_g:
            say_once("--netG oasis: the published OASIS generator reads the dense one-hot label map (OASIS' "
                     "channel order, dontcare at 0); --spade_impl does not apply to it")
        #: D's first conv reads the label part as codes (by lookups) where that pays: sparse, many
        #: classes, a multiscale D (built so: `D.reads_codes`)
        self.d_reads_codes = (self.sparse and opt.netD == "multiscale"
                              and first_conv_lookup_pays(opt.label_channels + int(not opt.no_instance), opt.ndf))
        self.netG = networks.define_G(opt, impl=impl if opt.netG == "spade" else None)
        self.netD = networks.define_D(opt, reads_codes=self.d_reads_codes)
        self.netE = networks.define_E(opt) if opt.use_vae else None
        self.G, self.D, self.E = self.netG, self.netD, self.netE
        self.criterionGAN = GANLoss(opt.gan_mode)
        self.criterionVGG = VGGLoss(vgg) if (vgg is not None and not opt.no_vgg_loss) else None
        # the KLD is a sum over the batch; under DDP each rank sums its share and the gradients
        # are averaged, so it is scaled by the world size to keep the global-batch objective
        self.kld_scale = kld_scale
        self.noise = noise or (lambda shape: torch.randn(shape))
        self.coins = coins or (lambda n: torch.randint(0, 2, (n,)))

    def preprocess_input(self, data: Mapping[str, Any], device: torch.device
                         ) -> tuple[Label, torch.Tensor]:
        """(label codes, or the image label for --label_nc 0; real image) on `device` from a batch of the dataset."""
        nb = device.type == "cuda"
        label = data["label"].to(device, non_blocking=nb)
        inst = instance_map(data, self.opt)
        inst = None if inst is None else inst.to(device, non_blocking=nb)
        # the networks' dtype: float32 (autocast lowers it under --amp), float64 in the DDP test
        dtype = next(self.netG.parameters()).dtype
        image = data["image"].to(device, non_blocking=nb).to(dtype)
        if self.opt.image_label:
            return ImageLabel(label.to(dtype)), image
        if self.oasis_g:
            return OASISLabel(oasis_channels(label, self.opt), oasis_semantic_nc(self.opt)), image
        return LabelCodes.from_label(label, inst, self.opt), image

    def g_input(self, codes: Label) -> torch.Tensor | LabelCodes:
        """What G reads: the codes themselves (sparse SPADE) or the one-hot tensor (image labels: the image)."""
        if self.sparse:
            return codes
        return codes.semantics(next(self.netG.parameters()).dtype)

    def class_ids(self, codes: LabelCodes | OASISLabel) -> torch.Tensor:
        """(B, H, W) class ids (the one-hot channel of each pixel), for the OASIS losses."""
        if isinstance(codes, OASISLabel):
            return codes.channels
        return codes.code % codes.label_channels

    @property
    def ignore_class(self) -> int | None:
        """The class the OASIS losses ignore: dontcare (ade20k: id 0, "other", unlabelled in ADE20K;
        --netG oasis: OASIS' channel 0, as the official loss)."""
        if self.oasis_g:
            return 0
        if not self.opt.contain_dontcare_label:
            return None
        return 0 if self.opt.dataset_mode == "ade20k" else self.opt.label_nc

    def encode_z(self, real: torch.Tensor, E: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = E(real)
        mu, logvar = _full_precision(mu), _full_precision(logvar)
        return networks.sample_z(mu, logvar, eps=self.noise(mu.shape)), mu, logvar

    def generate_fake(self, codes: Label, real: torch.Tensor, compute_kld: bool = False,
                      G: nn.Module | None = None, E: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        G = G if G is not None else self.netG
        z, kld = None, None
        if self.opt.use_vae:
            z, mu, logvar = self.encode_z(real, E if E is not None else self.netE)
            if compute_kld:
                kld = kld_loss(mu, logvar) * self.opt.lambda_kld * self.kld_scale
        elif self.opt.use_3d_noise:  # one noise vector per image, from the trainer's seeded stream
            z = self.noise(torch.Size((real.shape[0], self.opt.z_dim))).to(real.device, real.dtype)
        return G(self.g_input(codes), z=z), kld

    def discriminate(self, codes: Label, fake: torch.Tensor, real: torch.Tensor, D: nn.Module):
        # fake and real go through D as one batch (the same statistics for both with batch norm)
        b = real.shape[0]
        if self.d_reads_codes:  # the label part of D's first conv by lookups
            both = LabelCodes(torch.cat([codes.code, codes.code]), codes.label_channels, codes.instance)
            out = D(LabelAndImage(torch.cat([fake.to(real.dtype), real]), both))
        else:
            sem = codes.semantics(real.dtype)
            out = D(torch.cat([torch.cat([sem, fake.to(sem.dtype)], 1), torch.cat([sem, real], 1)], 0))
        if isinstance(out, list):
            return ([[t[:b] for t in p] for p in out], [[t[b:] for t in p] for p in out])
        return out[:b], out[b:]

    def compute_generator_loss(self, codes: Label, real: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        opt = self.opt
        losses: dict[str, torch.Tensor] = {}
        with requires_grad(self.netD, False):
            fake, kld = self.generate_fake(codes, real, compute_kld=opt.use_vae, G=self.G, E=self.E)
            if opt.use_vae:
                losses["KLD"] = kld
            if opt.netD == "oasis":  # G wants every pixel of the fake read as its class
                losses["GAN"] = oasis_loss(self.netD(fake), self.class_ids(codes), True, self.ignore_class)
            else:
                pred_fake, pred_real = self.discriminate(codes, fake, real, self.netD)
        if opt.netD != "oasis":
            pred_fake, pred_real = _floatify(pred_fake), _floatify(pred_real)
            losses["GAN"] = self.criterionGAN(pred_fake, True, for_discriminator=False)
            if not opt.no_ganFeat_loss:
                losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, opt.lambda_feat)
        if self.criterionVGG is not None:
            losses["VGG"] = self.criterionVGG(fake, real).float() * opt.lambda_vgg
        return losses, fake

    def compute_discriminator_loss(self, codes: Label, real: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake, _ = self.generate_fake(codes, real)
        if self.opt.netD == "oasis":
            return self._oasis_discriminator_loss(codes, fake.detach(), real)
        pred_fake, pred_real = self.discriminate(codes, fake.detach(), real, self.D)
        pred_fake, pred_real = _floatify(pred_fake), _floatify(pred_real)
        return {"D_Fake": self.criterionGAN(pred_fake, False, for_discriminator=True),
                "D_real": self.criterionGAN(pred_real, True, for_discriminator=True)}

    def _oasis_discriminator_loss(self, codes: LabelCodes | OASISLabel, fake: torch.Tensor,
                                  real: torch.Tensor) -> dict[str, torch.Tensor]:
        """OASIS' D step, as the official `OASIS_model` "losses_D": D on the fake (every pixel
        "fake"), D on the real image (its classes, class-balanced), then LabelMix: D on an
        image mixed class by class from real and fake should give the same mix of its two
        outputs (nothing detached). Three D passes, so spectral norm iterates three times and
        each pass uses its own sigma."""
        label = self.class_ids(codes)
        fake = fake.to(real.dtype)
        out_fake = _floatify(self.D(fake))
        losses = {"D_Fake": oasis_loss(out_fake, label, False)}
        out_real = _floatify(self.D(real))
        losses["D_real"] = oasis_loss(out_real, label, True, self.ignore_class)
        lam = self.opt.lambda_labelmix
        if lam > 0:
            mask = self.labelmix_mask(label).to(real.dtype)
            out_mixed = _floatify(self.D(mask * real + (1 - mask) * fake))
            losses["D_LabelMix"] = lam * labelmix_loss(mask, out_mixed, out_fake, out_real)
        return losses

    def labelmix_mask(self, label: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) 0/1 (1 = real): the official mask, one coin (`self.coins`) per class of
        the batch (`labelmix_class_mask`), or with --labelmix_per_image one per image and class
        (from `self.noise`)."""
        if self.opt.labelmix_per_image:
            coins = self.noise(torch.Size((label.shape[0], int(self.netD.classifier.out_channels) - 1))) > 0
            return labelmix_mask(label, coins)
        return labelmix_class_mask(label, self.coins(labelmix_classes(label).numel()))
