"""Discriminators: MultiscaleDiscriminator of NLayerDiscriminator PatchGANs, and OASIS' U-Net.

`D(cat([semantics, image], 1))` returns one list per scale of the intermediate features
(the last entry is the patch prediction), used for the GAN and feature-matching losses.
A multiscale D built with `reads_codes=True` (`define_D(opt, reads_codes=True)`, recorded as
`D.reads_codes`) computes the same from `D(LabelAndImage(image, codes))`: the first conv is
linear in its input, so its label part is a sum of lookups of the codes (no one-hot tensor,
no gradient for it) and only the image's 3 channels are convolved; the coarser scales read
the average-pooled one-hot map, built from the codes directly. The other input form is a
SpadeganError.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from ..layers import nonspade_norm_layer
from ..layers.label_codes import LabelCodes, code_embedding
from ..options import Options
from .base import BaseNetwork


class LabelAndImage:
    """A multiscale discriminator's input kept in two parts: the label map as codes (scale 0)
    or as its average-pooled one-hot tensor (`soft`, coarser scales), and the image."""

    def __init__(self, image: torch.Tensor, codes: LabelCodes | None = None, soft: torch.Tensor | None = None):
        self.image, self.codes, self.soft = image, codes, soft

    def downsample(self) -> "LabelAndImage":
        """The input of the next scale: both parts average-pooled (3x3, stride 2, as `downsample`)."""
        image = MultiscaleDiscriminator.downsample(self.image)
        if self.soft is not None:
            return LabelAndImage(image, soft=MultiscaleDiscriminator.downsample(self.soft))
        return LabelAndImage(image, soft=pooled_one_hot(self.codes, self.image.dtype))


def pooled_one_hot(codes: LabelCodes, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`MultiscaleDiscriminator.downsample(codes.semantics())` without building the full-size
    one-hot tensor: each pooled pixel adds 1/count to the channel of each code in its window."""
    b, h, w = codes.code.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    L, nc = codes.label_channels, codes.one_hot_nc
    ones = torch.ones(1, 1, h, w, dtype=dtype, device=codes.device)
    count = F.avg_pool2d(ones, 3, 2, 1, count_include_pad=True) * 9  # valid cells per window
    cp = F.pad(codes.code, (1, 1, 1, 1), value=-1)
    out = torch.zeros(b, nc + 1, ho, wo, dtype=dtype, device=codes.device)  # channel nc takes the padding
    for dy in range(3):
        for dx in range(3):
            c = cp[:, dy:dy + 2 * ho - 1:2, dx:dx + 2 * wo - 1:2]
            pad = c < 0
            out.scatter_add_(1, torch.where(pad, nc, c % L)[:, None], (~pad)[:, None].to(dtype))
            if codes.instance:
                out[:, L] += (c >= L).to(dtype)
    return out[:, :nc] / count


#: (label channels) x ndf from which D's first conv is cheaper by lookup than as a dense conv
#: over the one-hot map (the lookup's cost hardly grows with the label channels, the conv's
#: does; measured crossovers in benchmarks/README.md, "Training")
FIRST_CONV_LOOKUP_MIN = 4096


def first_conv_lookup_pays(label_nc: int, ndf: int) -> bool:
    """Whether a discriminator with `ndf` filters reads `label_nc` label channels (one-hot
    classes + instance edges) faster as codes (`LabelAndImage`) than as the one-hot tensor."""
    return label_nc * ndf >= FIRST_CONV_LOOKUP_MIN


def first_conv_by_lookup(conv: nn.Conv2d, codes: LabelCodes, image: torch.Tensor) -> torch.Tensor:
    """`conv(cat([codes.semantics(), image]))` for a k x k conv with stride s and padding p:
    the image part convolved, the label part summed from per-tap lookups of the codes."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    nsem = codes.one_hot_nc
    out = F.conv2d(image, conv.weight[:, nsem:], conv.bias, s, p)
    table = code_embedding(conv.weight[:, :nsem], codes.label_channels, codes.instance)  # (T, V + 1, C)
    windows = F.pad(codes.code, (p, p, p, p), value=codes.V).unfold(1, k, s).unfold(2, k, s)
    b, ho, wo = windows.shape[:3]
    idx = windows.reshape(-1, k * k) + torch.arange(k * k, device=image.device) * (codes.V + 1)
    sem = F.embedding_bag(idx, table.reshape(-1, table.shape[-1]).to(out.dtype), mode="sum")
    return out + sem.view(b, ho, wo, -1).permute(0, 3, 1, 2)


def check_d_input(reads_codes: bool, x: object, where: str) -> None:
    """Raise a SpadeganError when `x` is not the input form a discriminator built with
    `reads_codes` reads: `LabelAndImage` for True, the one tensor cat([semantics, image], 1)
    for False (no silent switch between the two)."""
    if reads_codes and not isinstance(x, LabelAndImage):
        raise SpadeganError(f"{where} was built with reads_codes=True: it reads LabelAndImage(image, codes), "
                            f"not {type(x).__name__}; a discriminator built with reads_codes=False reads "
                            "cat([semantics, image], 1)")
    if not reads_codes and isinstance(x, LabelAndImage):
        raise SpadeganError(f"{where} was built with reads_codes=False: it reads cat([semantics, image], 1), "
                            "not LabelAndImage; build it with define_D(opt, reads_codes=True) to read codes")


class NLayerDiscriminator(BaseNetwork):
    """PatchGAN with `n_layers_D` 4x4 convs; the last hidden one has stride 1. `reads_codes`:
    the input form, see the module doc."""

    def __init__(self, opt: Options, reads_codes: bool = False):
        super().__init__()
        self.reads_codes = bool(reads_codes)
        self.get_intermediate_features = not opt.no_ganFeat_loss
        kw = 4
        padw = int(math.ceil((kw - 1.0) / 2))
        nf = opt.ndf
        input_nc = opt.semantic_nc + opt.output_nc
        norm_layer = nonspade_norm_layer(opt.norm_D)
        sequence = [[nn.Conv2d(input_nc, nf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, False)]]
        for n in range(1, opt.n_layers_D):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == opt.n_layers_D - 1 else 2
            sequence += [[norm_layer(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=padw)),
                          nn.LeakyReLU(0.2, False)]]
        sequence += [[nn.Conv2d(nf, 1, kw, stride=1, padding=padw)]]
        for n, layers in enumerate(sequence):  # groups named model0.. as in the checkpoints
            self.add_module("model" + str(n), nn.Sequential(*layers))

    def forward(self, x: torch.Tensor | LabelAndImage) -> list[torch.Tensor] | torch.Tensor:
        check_d_input(self.reads_codes, x, "this discriminator")
        layers = list(self.children())
        if self.reads_codes:  # the first conv from its two parts (see the module doc)
            results = [self.model0[1](self.first_conv(x))]
            layers = layers[1:]
        else:
            results = [x]
        for submodel in layers:
            results.append(submodel(results[-1]))
        features = results if self.reads_codes else results[1:]
        return features if self.get_intermediate_features else results[-1]

    def first_conv(self, x: LabelAndImage) -> torch.Tensor:
        """The first conv of cat([semantics, image], 1) from the parts of `x`: lookups of the
        codes (scale 0) or a conv of the pooled one-hot map (coarser scales), plus the image's."""
        conv = self.model0[0]
        if x.codes is not None:
            return first_conv_by_lookup(conv, x.codes, x.image)
        nsem = x.soft.shape[1]
        pre = F.conv2d(x.image, conv.weight[:, nsem:], conv.bias, conv.stride, conv.padding)
        return pre + F.conv2d(x.soft, conv.weight[:, :nsem], None, conv.stride, conv.padding)


class MultiscaleDiscriminator(BaseNetwork):
    """`num_D` discriminators on the input downsampled by 2 each time. `reads_codes`: the input
    form, `LabelAndImage` or one tensor (see the module doc), recorded for every scale."""

    def __init__(self, opt: Options, reads_codes: bool = False):
        super().__init__()
        self.get_intermediate_features = not opt.no_ganFeat_loss
        self.reads_codes = bool(reads_codes)
        for i in range(opt.num_D):
            self.add_module("discriminator_%d" % i, NLayerDiscriminator(opt, reads_codes))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor | LabelAndImage) -> list[list[torch.Tensor]]:
        check_d_input(self.reads_codes, x, "this multiscale discriminator")
        result = []
        for D in self.children():
            out = D(x)
            result.append(out if self.get_intermediate_features else [out])
            x = x.downsample() if self.reads_codes else self.downsample(x)
        return result


# ---- OASIS: a U-Net that segments real images and spots fake pixels ---------------------------
def oasis_depth(crop_size: int, aspect_ratio: float = 1.0) -> int:
    """Encoder depth of the OASIS discriminator: 6 blocks (the paper's, 256 px down to 4 px),
    fewer for smaller crops so that the bottleneck keeps at least 4 px on its short side."""
    short = min(crop_size, round(crop_size / aspect_ratio))
    return max(1, min(6, int(math.log2(max(short, 1))) - 2))


class OASISResBlock(nn.Module):
    """Residual block of the OASIS discriminator: (LReLU) conv3x3 -> LReLU -> conv3x3, with
    average-pool downsampling (encoder) or nearest upsampling (decoder) and a learned 1x1
    shortcut when the width changes; spectral norm on every conv."""

    def __init__(self, fin: int, fout: int, norm_layer, resample: str, first: bool = False):
        super().__init__()
        self.resample, self.first = resample, first
        self.learned_shortcut = fin != fout
        self.conv1 = norm_layer(nn.Conv2d(fin, fout, 3, padding=1))
        self.conv2 = norm_layer(nn.Conv2d(fout, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = norm_layer(nn.Conv2d(fin, fout, 1))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        elif self.first:  # pool before the 1x1 conv: the same result, 4x fewer FLOPs
            x = F.avg_pool2d(x, 2)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.resample == "down" and not self.first:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = x if self.first else F.leaky_relu(x, 0.2)
        if self.resample == "up":
            dx = F.interpolate(dx, scale_factor=2.0, mode="nearest")
        dx = self.conv2(F.leaky_relu(self.conv1(dx), 0.2))
        if self.resample == "down":
            dx = F.avg_pool2d(dx, 2)
        return self.shortcut(x) + dx


class OASISDiscriminator(BaseNetwork):
    """`--netD oasis` (Schönfeld et al., ICLR 2021): a U-Net of residual blocks that reads the
    image alone and predicts, for every pixel, one of the label classes or "fake".

    Output: (B, 1 + label_channels, H, W) logits; channel 0 is "fake", channel 1 + c is
    class c (the label channels, dontcare included, as the one-hot semantics counts them).
    Widths follow the paper at --ndf 64 (encoder 128, 128, 256, 256, 512, 512; decoder back
    to 64 with skip connections), scaled with --ndf.
    """

    def __init__(self, opt: Options):
        super().__init__()
        depth = oasis_depth(opt.crop_size, opt.aspect_ratio)
        nf = opt.ndf
        widths = [opt.output_nc] + [nf * 2, nf * 2, nf * 4, nf * 4, nf * 8, nf * 8][:depth]
        norm_layer = nonspade_norm_layer("spectral" if "spectral" in opt.norm_D else "none")
        self.down = nn.ModuleList(OASISResBlock(widths[i], widths[i + 1], norm_layer, "down", first=i == 0)
                                  for i in range(depth))
        ups = [OASISResBlock(widths[-1], widths[-2] if depth > 1 else nf, norm_layer, "up")]
        for i in range(1, depth):
            fout = widths[-2 - i] if i < depth - 1 else nf
            ups.append(OASISResBlock(2 * widths[-1 - i], fout, norm_layer, "up"))
        self.up = nn.ModuleList(ups)
        self.classifier = nn.Conv2d(nf, opt.label_nc + int(opt.contain_dontcare_label) + 1, 1)

    def init_weights(self, init_type: str = "xavier", gain: float = 0.02) -> None:
        """The official initialisation, except the classifier: PyTorch's default for it.

        The official code gives every conv xavier-normal weights with gain 0.02; the spectral
        norm of the other layers undoes that scale, but the plain 1x1 classifier keeps it, so
        its logits start ~100x too small and D barely learns for hundreds of iterations (on
        the landscapes at 64 px, segmenting real images: loss 2.40 -> 2.35 in 100 Adam steps,
        against 2.46 -> 1.70 with the default initialisation)."""
        super().init_weights(init_type, gain)
        self.classifier.reset_parameters()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for blk in self.down:
            x = blk(x)
            skips.append(x)
        x = self.up[0](x)
        for i, blk in enumerate(self.up[1:], start=1):
            x = blk(torch.cat([skips[-1 - i], x], dim=1))
        return self.classifier(x)
