"""The published OASIS generator (Schönfeld et al., ICLR 2021), as the released checkpoints hold it.

`OASISGenerator` is boschresearch/OASIS' `OASIS_Generator` rewritten here in plain torch.nn,
with the attribute names of its state_dict, so the released `<tag>_G.pth` / `<tag>_EMA.pth`
files load with strict=True:

* `fc` (3x3 conv, no spectral norm), `body.0..5` (`OASISResnetBlock`: `conv_0`, `conv_1`,
  `conv_s` (1x1, no bias, only where the width changes), `norm_0`, `norm_1`, `norm_s`),
  `conv_img` (3x3 conv to RGB); the state_dict lists `conv_img`, `body`, `fc` in that order,
  as the official one does;
* every SPADE (`OASISSPADE`) normalises with `first_norm` (parameter-free BatchNorm with
  running statistics, or InstanceNorm with --param_free_norm instance) and modulates with
  `mlp_shared.0` (conv + ReLU, 128 channels), `mlp_gamma`, `mlp_beta`;
* spectral norm on the block convs stores `weight_orig` / `weight_u` / `weight_v`
  (`spadegan.layers.spectral`), plain `weight` with --no_spectral_norm.

Unlike SPADE's generator there is no `G_middle` block, no instance-edge channel and no
encoder; the start resolution is per dataset: w0 = crop_size / 2**(num_res_blocks - 1),
h0 = round(w0 / aspect_ratio) (ADE20K/COCO 8 x 8, Cityscapes 8 x 16). The 3D noise: a z of
z_dim values per image, broadcast over the label map and concatenated BEFORE the one-hot
channels; that (z, one-hot) map feeds `fc` (after a legacy nearest resize to h0 x w0) and
every SPADE. The official forward draws z itself (`torch.randn` on the global generator,
ignoring a z passed in); here a given z is used, and z=None draws it as the official code does.

`OASISOptions` holds the official architecture flags (config.py names) plus what the
official dataset classes set (semantic_nc, crop_size, aspect_ratio). For training with
`--netG oasis` (implied by `--netD oasis`), `oasis_options_from(opt)` derives them from
spadegan `Options` and `oasis_channels(label, opt)` puts spadegan's label ids in OASIS'
channel order (dontcare at channel 0, see `oasis_semantic_nc`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from ..layers.norms import param_free_norm
from ..layers.spectral import spectral_norm
from .base import BaseNetwork

#: The official generator's widths in units of channels_G: 6 residual blocks, fixed
OASIS_G_WIDTHS = (16, 16, 16, 8, 4, 2, 1)
#: Hidden channels of every SPADE's shared conv (official `nhidden`)
SPADE_HIDDEN = 128
PARAM_FREE_NORMS = ("syncbatch", "batch", "instance")


@dataclass(frozen=True)
class OASISOptions:
    """The official OASIS options that fix the networks' shapes and forward.

    Names and defaults are those of the official config.py (`--channels_G` 64, `--z_dim` 64,
    ...); `semantic_nc` (label_nc + 1 for dontcare), `crop_size` and `aspect_ratio` are set
    by the official dataset classes, not by flags (see `spadegan.oasis_checkpoint`).
    """

    semantic_nc: int
    crop_size: int
    aspect_ratio: float = 1.0
    channels_G: int = 64
    z_dim: int = 64
    num_res_blocks: int = 6
    param_free_norm: str = "syncbatch"
    spade_ks: int = 3
    no_3dnoise: bool = False
    no_spectral_norm: bool = False
    no_EMA: bool = False
    dataset_mode: str = ""

    def __post_init__(self) -> None:
        if self.num_res_blocks != len(OASIS_G_WIDTHS) - 1:
            raise SpadeganError(f"num_res_blocks={self.num_res_blocks}: the official OASIS networks have "
                                f"{len(OASIS_G_WIDTHS) - 1} residual blocks (other values crash the official "
                                "code; no released model uses them)")
        if self.param_free_norm not in PARAM_FREE_NORMS:
            raise SpadeganError(f"param_free_norm={self.param_free_norm!r} is not one of {', '.join(PARAM_FREE_NORMS)}")
        for name in ("semantic_nc", "crop_size", "channels_G", "spade_ks"):
            if int(getattr(self, name)) < 1:
                raise SpadeganError(f"OASIS option {name}={getattr(self, name)} must be positive")
        if self.z_dim < 1 and not self.no_3dnoise:
            raise SpadeganError(f"OASIS option z_dim={self.z_dim} must be positive (or set no_3dnoise)")
        if self.aspect_ratio <= 0:
            raise SpadeganError(f"OASIS option aspect_ratio={self.aspect_ratio} must be positive")

    @property
    def label_nc(self) -> int:
        """Classes without the dontcare channel (official `label_nc`)."""
        return self.semantic_nc - 1

    @property
    def noise_nc(self) -> int:
        """Channels of the 3D noise (0 with no_3dnoise)."""
        return 0 if self.no_3dnoise else self.z_dim

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h0, w0), the generator's start resolution (official `compute_latent_vector_size`)."""
        w = self.crop_size // (2 ** (self.num_res_blocks - 1))
        return round(w / self.aspect_ratio), w

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the generated images: the start resolution upsampled num_res_blocks - 1 times."""
        h0, w0 = self.latent_size
        scale = 2 ** (self.num_res_blocks - 1)
        return h0 * scale, w0 * scale


def _sn(opt: OASISOptions, conv: nn.Conv2d) -> nn.Conv2d:
    """Spectral norm as the official `get_spectral_norm(opt)`: on unless no_spectral_norm."""
    return conv if opt.no_spectral_norm else spectral_norm(conv)


class OASISSPADE(nn.Module):
    """OASIS' SPADE: `first_norm(x) * (1 + gamma(seg)) + beta(seg)`, seg resized nearest to x."""

    def __init__(self, opt: OASISOptions, norm_nc: int, label_nc: int):
        super().__init__()
        self.first_norm = param_free_norm(opt.param_free_norm, norm_nc)
        ks, pw = opt.spade_ks, opt.spade_ks // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, SPADE_HIDDEN, ks, padding=pw), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_nc, ks, padding=pw)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_nc, ks, padding=pw)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.first_norm(x)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class OASISResnetBlock(nn.Module):
    """The official `ResnetBlock_with_SPADE`: two SPADE-LReLU-conv steps and a shortcut
    (SPADE + 1x1 conv without bias when fin != fout); fmiddle = min(fin, fout)."""

    def __init__(self, fin: int, fout: int, opt: OASISOptions):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(opt, nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = _sn(opt, nn.Conv2d(fmiddle, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = _sn(opt, nn.Conv2d(fin, fout, 1, bias=False))
        label_nc = opt.semantic_nc + opt.noise_nc
        self.norm_0 = OASISSPADE(opt, fin, label_nc)
        self.norm_1 = OASISSPADE(opt, fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = OASISSPADE(opt, fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class OASISGenerator(BaseNetwork):
    """The official `OASIS_Generator` (see the module doc). Input: the one-hot semantics
    (B, semantic_nc, H, W) in OASIS' channel order (channel 0 = dontcare, see
    `spadegan.oasis_checkpoint.oasis_label_channels`); output: (B, 3, H', W') in [-1, 1],
    (H', W') = `opt.output_size` (the crop size for the official datasets).

    Attribute `oasis_opt`: the OASISOptions it was built from.
    """

    def __init__(self, opt: OASISOptions):
        super().__init__()
        self.oasis_opt = opt
        ch = [w * opt.channels_G for w in OASIS_G_WIDTHS]
        # registration order = the official state_dict order: conv_img, body, fc
        self.conv_img = nn.Conv2d(ch[-1], 3, 3, padding=1)
        self.body = nn.ModuleList(OASISResnetBlock(ch[i], ch[i + 1], opt) for i in range(len(ch) - 1))
        self.fc = nn.Conv2d(opt.semantic_nc + opt.noise_nc, ch[0], 3, padding=1)

    def conditioning(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The map every SPADE reads: cat((z broadcast over H x W, semantics), 1), z first.

        z: (B, z_dim), or a (B, z_dim, H, W) noise map; None draws `torch.randn(B, z_dim)` from
        the global generator on the semantics' device, as the official forward always does.
        With no_3dnoise the semantics alone (a z given then is an error).
        """
        opt = self.oasis_opt
        if semantics.dim() != 4 or semantics.shape[1] != opt.semantic_nc:
            raise SpadeganError(f"the OASIS generator takes (B, {opt.semantic_nc}, H, W) one-hot semantics, "
                                f"got shape {tuple(semantics.shape)}")
        if opt.no_3dnoise:
            if z is not None:
                raise SpadeganError("this OASIS generator was trained with --no_3dnoise: it takes no z")
            return semantics
        b, _, h, w = semantics.shape
        if z is None:
            z = torch.randn(b, opt.z_dim, dtype=torch.float32, device=semantics.device)
        if z.dim() == 2:
            z = z.view(z.shape[0], -1, 1, 1).expand(-1, -1, h, w)
        if tuple(z.shape) != (b, opt.z_dim, h, w):
            raise SpadeganError(f"z must be (B, {opt.z_dim}) or (B, {opt.z_dim}, H, W) for semantics of shape "
                                f"{tuple(semantics.shape)}, got {tuple(z.shape)}")
        return torch.cat((z.to(semantics.dtype), semantics), dim=1)

    def forward(self, semantics: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        seg = self.conditioning(semantics, z)
        x = self.fc(F.interpolate(seg, size=self.oasis_opt.latent_size))  # legacy nearest
        last = len(self.body) - 1
        for i, block in enumerate(self.body):
            x = block(x, seg)
            if i < last:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


# ---- training with spadegan Options (--netG oasis) ------------------------------------------------
#: spadegan datasets whose id 0 already is OASIS' dontcare class (ADE20K 'other', Cityscapes
#: 'unlabeled'): their ids are OASIS' channels as they are. Elsewhere OASIS' channel 0 is added
#: for dontcare (spadegan's dontcare id `label_nc` with --contain_dontcare_label) and class c
#: is channel c + 1 (COCO-Stuff's official order: 255 -> 0, c -> c + 1).
ID0_IS_DONTCARE = ("ade20k", "cityscapes")
_NORM_G = re.compile(r"^(spectral)?spade(syncbatch|batch|instance)(\d)x\d$")


def oasis_semantic_nc(opt: Any) -> int:
    """OASIS' one-hot channels (official `semantic_nc`, dontcare at 0) for spadegan Options:
    ADE20K 151, Cityscapes 35, COCO-Stuff 183 (as the official dataset classes), other
    datasets label_nc + 1."""
    if opt.dataset_mode in ID0_IS_DONTCARE:
        return opt.label_nc + int(opt.contain_dontcare_label)
    return opt.label_nc + 1


def oasis_channels(label: torch.Tensor, opt: Any) -> torch.Tensor:
    """(B, H, W) int64 OASIS channels of spadegan label ids (B, [1,] H, W) (dontcare already
    mapped to `label_nc` by spadegan's datasets): kept where id 0 is dontcare
    (`ID0_IS_DONTCARE`), else c -> c + 1 and dontcare -> 0. Ids outside the dataset's range
    raise a SpadeganError naming them."""
    if label.dim() == 4:
        label = label[:, 0]
    label = label.long()
    nc = opt.label_nc + int(opt.contain_dontcare_label)
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= nc):
        bad = torch.unique(label[(label < 0) | (label >= nc)])[:8].tolist()
        raise SpadeganError(f"label ids {bad} outside 0..{nc - 1} (--label_nc {opt.label_nc}"
                            f"{' + dontcare' if opt.contain_dontcare_label else ''}, --dataset_mode {opt.dataset_mode})")
    if opt.dataset_mode in ID0_IS_DONTCARE:
        return label
    if opt.contain_dontcare_label:
        return torch.where(label == opt.label_nc, torch.zeros_like(label), label + 1)
    return label + 1


def oasis_options_from(opt: Any) -> OASISOptions:
    """The OASISOptions of spadegan Options for --netG oasis: channels_G = --ngf, --z_dim,
    no_3dnoise = not --use_3d_noise, param_free_norm / spade_ks / spectral norm from --norm_G
    (e.g. spectralspadesyncbatch3x3), the start map from --crop_size / --aspect_ratio,
    semantic_nc from `oasis_semantic_nc`; 6 residual blocks, as published."""
    m = _NORM_G.match(opt.norm_G)
    if m is None:
        raise SpadeganError(f"--norm_G {opt.norm_G!r} does not describe an OASIS generator: use "
                            "[spectral]spade{syncbatch,batch,instance}<k>x<k>, e.g. spectralspadesyncbatch3x3")
    o = OASISOptions(semantic_nc=oasis_semantic_nc(opt), crop_size=opt.crop_size, aspect_ratio=opt.aspect_ratio,
                     channels_G=opt.ngf, z_dim=opt.z_dim, param_free_norm=m.group(2), spade_ks=int(m.group(3)),
                     no_3dnoise=not opt.use_3d_noise, no_spectral_norm=m.group(1) is None,
                     no_EMA=opt.ema_decay <= 0, dataset_mode=opt.dataset_mode)
    if min(o.latent_size) < 1:
        raise SpadeganError(f"--crop_size {opt.crop_size} with --aspect_ratio {opt.aspect_ratio} is too small for "
                            f"the OASIS generator (it starts from crop_size / 2^{o.num_res_blocks - 1}); use at "
                            f"least {2 ** (o.num_res_blocks - 1) * max(1, round(opt.aspect_ratio))}")
    return o
