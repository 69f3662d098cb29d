"""Generators: SPADEGenerator (GauGAN) and Pix2PixHDGenerator (the pix2pixHD baseline).

Module names and parameter shapes follow the official code, so official `latest_net_G.pth`
files load with strict=True. Call convention: `G(semantics, z=None) -> image in [-1, 1]`,
where `semantics` is what the generator's SPADE implementation reads (`G.spade_impl`, chosen
when it is built: the one-hot tensor for "dense", its `LabelCodes` for "sparse", see
`layers.spade`) and `z` the VAE style (`--use_vae`) or the 3D noise (`--use_3d_noise`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ResnetBlock, SPADEResnetBlock, nonspade_norm_layer
from ..errors import SpadeganError
from ..layers.label_codes import SPADE_IMPLS, LabelCodes, check_label_input, label_conv
from ..options import Options
from .base import BaseNetwork


def latent_size(opt: Options) -> tuple[int, int]:
    """(sw, sh): width and height of the map the SPADE generator starts from."""
    sw = opt.crop_size // (2 ** opt.num_up_layers)
    return sw, round(sw / opt.aspect_ratio)


def block_plan(num_upsampling_layers: str) -> list[tuple[str, bool]]:
    """The SPADE generator's residual blocks in order, each with whether the map is upsampled
    (2x nearest) just before it (--num_upsampling_layers normal, more or most)."""
    more = num_upsampling_layers in ("more", "most")
    plan = [("head_0", False), ("G_middle_0", True), ("G_middle_1", more), ("up_0", True), ("up_1", True),
            ("up_2", True), ("up_3", True)]
    return plan + [("up_4", True)] if num_upsampling_layers == "most" else plan


def generator_impl(opt: Options, impl: str | None = None) -> str:
    """The SPADE implementation a generator is built with, "dense" or "sparse": `impl`, else
    --spade_impl where it names one. --spade_impl auto depends on the device the generator
    runs on, which building does not know: it builds the dense reference, and a builder that
    knows the device resolves it first (`layers.label_codes.spade_impl_for(opt, device)`, or
    `load_checkpoint(..., impl="auto", device=...)`)."""
    if impl is None:
        impl = getattr(opt, "spade_impl", "auto")
        impl = "dense" if impl == "auto" else impl
    elif impl == "auto":
        raise SpadeganError("impl='auto' depends on the device the generator runs on: pass "
                            "impl=spade_impl_for(opt, device) (spadegan.layers.label_codes), 'dense' or 'sparse'")
    if impl not in SPADE_IMPLS:
        raise SpadeganError(f"a SPADE generator's implementation is one of {', '.join(SPADE_IMPLS)}, not {impl!r}")
    if impl == "sparse" and opt.image_label:
        raise SpadeganError("the sparse SPADE reads class codes; this generator reads label images "
                            "(--label_nc 0): build it with impl='dense'")
    return impl


class SPADEGenerator(BaseNetwork):
    """fc (from z or the downsampled label map) -> 7 or 8 SPADEResnetBlocks with upsampling.

    `impl` (recorded as `spade_impl`; default: see `generator_impl`): "dense", the reference
    (reads the one-hot semantics tensor, the official order of operations), or "sparse" (reads
    `LabelCodes`). Every call runs `spade_impl`; the other input form is a SpadeganError.
    """

    def __init__(self, opt: Options, impl: str | None = None):
        super().__init__()
        self.spade_impl = generator_impl(opt, impl)
        nf = opt.ngf
        self.use_vae, self.z_dim, self.ngf = opt.use_vae, opt.z_dim, nf
        self.use_3d_noise, self.label_channels = opt.use_3d_noise, opt.label_channels
        self.num_upsampling_layers = opt.num_upsampling_layers
        self.sw, self.sh = latent_size(opt)
        if opt.use_vae:
            self.fc = nn.Linear(opt.z_dim, 16 * nf * self.sw * self.sh)
        else:
            self.fc = nn.Conv2d(opt.generator_input_nc, 16 * nf, 3, padding=1)

        def block(fin: int, fout: int) -> SPADEResnetBlock:
            return SPADEResnetBlock(fin, fout, opt.norm_G, opt.generator_input_nc)

        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, 1 * nf)
        final_nc = nf
        if opt.num_upsampling_layers == "most":
            self.up_4 = block(1 * nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def impl_for(self, seg: torch.Tensor | LabelCodes) -> str:
        """The implementation every call runs, the one G was built with (`spade_impl`); a
        SpadeganError when `seg` is not the form it reads."""
        check_label_input(self.spade_impl, seg, f"this generator (impl={self.spade_impl!r})")
        return self.spade_impl

    def initial_map(self, seg: torch.Tensor | LabelCodes, z: torch.Tensor | None) -> torch.Tensor:
        """The map the first block reads: fc of z (VAE) or of the downsampled label map."""
        impl = self.impl_for(seg)
        if self.use_vae:
            if z is None:  # a random style
                z = torch.randn(seg.size(0), self.z_dim, dtype=torch.float32, device=seg.device)
            return self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        if impl == "sparse":  # the conv of the downsampled one-hot map, by lookups
            level = seg.at(self.sh, self.sw)
            x = label_conv(level, self.fc.weight, self.fc.bias, seg.label_channels, seg.instance,
                           code_noise=seg.code_noise())
            # contiguous NCHW: a channels-last map here would make every later conv copy its weights
            return x.view(level.B, self.sh, self.sw, -1).permute(0, 3, 1, 2).contiguous()
        return self.fc(F.interpolate(seg, size=(self.sh, self.sw)))

    def with_noise(self, seg: torch.Tensor | LabelCodes, z: torch.Tensor | None) -> torch.Tensor | LabelCodes:
        """The semantics with OASIS' 3D noise channels: `z` (B, z_dim) one vector per image
        (random if None), or (B, label_channels, z_dim) one per image and class."""
        impl = self.impl_for(seg)
        b = seg.size(0)
        if z is None:
            z = torch.randn(b, self.z_dim, device=seg.device)
        if z.shape[0] != b or z.shape[-1] != self.z_dim or z.dim() not in (2, 3):
            raise SpadeganError(f"3D noise must be (B, {self.z_dim}) or (B, {self.label_channels}, {self.z_dim}) "
                                f"for {b} label maps, got {tuple(z.shape)}")
        if impl == "sparse":
            return seg.with_noise(z)
        z = z.to(seg.device, seg.dtype)
        if z.dim() == 2:
            noise = z[:, :, None, None].expand(-1, -1, seg.shape[2], seg.shape[3])
        else:  # every pixel gets the vector of its class
            noise = torch.einsum("blz,blhw->bzhw", z, seg[:, :self.label_channels])
        return torch.cat([seg, noise], 1)

    def forward(self, seg: torch.Tensor | LabelCodes, z: torch.Tensor | None = None) -> torch.Tensor:
        """`seg`: the one-hot semantics tensor (impl "dense") or its `LabelCodes` ("sparse");
        `z`: the VAE style, or the 3D noise (see `with_noise`)."""
        impl = self.impl_for(seg)
        if self.use_3d_noise:
            seg, z = self.with_noise(seg, z), None
        x = self.initial_map(seg, z)
        for name, up in block_plan(self.num_upsampling_layers):
            if up:
                x = self.up(x)
            x = getattr(self, name)(x, seg, impl)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 2e-1)))


class Pix2PixHDGenerator(BaseNetwork):
    """The pix2pixHD global generator: downsample, resnet blocks, upsample (`--netG pix2pixhd`)."""

    #: no SPADE layers: it reads the one-hot semantics tensor, as the dense SPADE does
    spade_impl = "dense"

    def __init__(self, opt: Options):
        super().__init__()
        norm_layer = nonspade_norm_layer(opt.norm_G)
        act = nn.ReLU(False)
        ngf, ks0 = opt.ngf, opt.resnet_initial_kernel_size
        model: list[nn.Module] = [nn.ReflectionPad2d(ks0 // 2),
                                  norm_layer(nn.Conv2d(opt.semantic_nc, ngf, ks0, padding=0)), act]
        mult = 1
        for _ in range(opt.resnet_n_downsample):
            model += [norm_layer(nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1)), act]
            mult *= 2
        for _ in range(opt.resnet_n_blocks):
            model += [ResnetBlock(ngf * mult, norm_layer, act, opt.resnet_kernel_size)]
        nc_out = ngf * mult
        for _ in range(opt.resnet_n_downsample):
            nc_in, nc_out = ngf * mult, (ngf * mult) // 2
            model += [norm_layer(nn.ConvTranspose2d(nc_in, nc_out, 3, stride=2, padding=1,
                                                    output_padding=1)), act]
            mult //= 2
        model += [nn.ReflectionPad2d(3), nn.Conv2d(nc_out, opt.output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(seg)
