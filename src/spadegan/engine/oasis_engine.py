"""`OASISEngine`: the published OASIS generator (`networks.oasis.OASISGenerator`) rewritten for
inference, same results (max abs error ~1e-6 in fp32), faster on CPU.

Every SPADE of OASIS starts with `mlp_shared`, a k x k conv over the full conditioning map
cat(z map, one-hot) (z_dim + semantic_nc channels, ~215 for ADE20K) at the block's
resolution, and `fc` is such a conv at the start map: at full resolution these convs are
about half of the network's work. Split by input channels, conv(cat(z, onehot)) =
conv_onehot(onehot) + conv_z(z) + bias, and:

* conv_onehot of a one-hot map is a sum of per-tap table rows chosen by the class found at
  each tap (`layers.label_codes`: `CodeLevel.window_rows`, one `embedding_bag`);
* when z is one vector per image (B, z_dim) or per class (B, semantic_nc, z_dim, the
  `OASISSynthesizer.noise` table of `region_seeds`), the z map is constant over each class's
  pixels, so a pixel of class c feeds tap t with W_t^onehot[c] + W_t^z . z(b, c): per image
  tables of the same lookup (`layers.label_codes.tap_tables` with `code_noise`) give the
  whole conv exactly, the zero padding keeping its zero row;
* a (B, z_dim, H, W) noise map constant over each class (`per_class_table` checks it
  exactly) runs as that per-class table; for another noise map conv_z is a convolution of
  the (nearest-resized) noise map alone (z_dim channels instead of z_dim + semantic_nc),
  added to the lookups.

The SPADE layers of a block read the same map: one lookup gives the 128 hidden channels of
all of them. The rest follows `engine.engine`'s SynthesisEngine: NHWC activations, spectral
norm and "1 +" folded (`fold`-style, float64 once), gamma|beta as one conv with 2C outputs,
eval BatchNorm as (x - mean) * rstd (instance norm on the map's own statistics), the nearest
x2 upsampling between blocks never materialised for the SPADE input (normalise the small
map, broadcast it over 2x2 blocks), Winograd / GEMM for the many-channel 3x3 convs on small
maps (fp32 CPU).

gamma/beta: with z per image or per class (or no_3dnoise) the hidden map is a constant of
the code (per image) wherever a pixel's window holds one code inside the image, and so is
[G | B] two taps further in; at levels where at most `BAND_THRESHOLD` of the pixels lie
within that reach of a class boundary or the border (`CodeLevel.nonuniform`), the wide
layers (>= `BAND_MIN_OUT` outputs) take [G | B] from per-code constants and compute only
the band's pixels from their hidden windows (one matrix product); elsewhere a dense conv.
Measured gain: ~10% at channels_G 64 (benchmarks/README.md).

fp32 only (the engine's bf16/fp16 keep-fp32 analysis was done for SPADE, not OASIS):
`from_generator(G, precision="bf16")` is a SpadeganError.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpadeganError
from ..layers.label_codes import CodeLevel, LabelCodes, tap_tables
from ..networks.oasis import OASISGenerator, OASISResnetBlock, OASISSPADE
from .engine import _Conv3x3, _instance_normalize, _modulate, _upsample_nhwc, upsampled_size
from .fold import conv_bias, conv_weight

_SLOPE = 0.2
#: the precisions the OASIS engine serves
OASIS_ENGINE_PRECISIONS = ("fp32",)


def _split_noise_first(w: torch.Tensor, noise_nc: int) -> torch.Tensor:
    """OASIS' (out, z + onehot, k, k) weight with the noise channels moved last (the order
    `layers.label_codes.tap_tables` reads: one-hot channels, then noise)."""
    return torch.cat([w[:, noise_nc:], w[:, :noise_nc]], dim=1) if noise_nc else w


#: default `_OASISSpades.band_threshold` (see benchmarks/README.md, OASIS engine)
BAND_THRESHOLD = 0.3
#: default `_OASISSpades.band_min_out`
BAND_MIN_OUT = 256


class _Hidden:
    """The hidden maps of a block's SPADE layers, with, for the sparse gamma/beta, the per-code
    constants (G, V, 128 n) and the flat ids of the band pixels (None when dense)."""

    def __init__(self, a: torch.Tensor, consts: torch.Tensor | None, band: torch.Tensor | None,
                 level: CodeLevel):
        self.a, self.consts, self.band, self.level = a, consts, band, level

    def windows(self, flat: torch.Tensor, lo: int, hi: int, k: int) -> torch.Tensor:
        """(Q, k*k*(hi-lo)) the zero-padded k x k windows of hidden channels lo:hi at pixels `flat`."""
        pw, lv = k // 2, self.level
        ap = F.pad(self.a[..., lo:hi], (0, 0, pw, pw, pw, pw)).reshape(-1, hi - lo)
        _, offs, _ = lv.padded(pw)
        return ap[lv.window_base(flat, pw)[:, None] + offs[None, :]].reshape(flat.numel(), -1)


class _OASISSpades(nn.Module):
    """The SPADE layers of one OASIS block: one lookup for their shared convs, then each
    layer's gamma|beta conv and its normalisation."""

    def __init__(self, spades: list[OASISSPADE], noise_nc: int):
        super().__init__()
        d = torch.float64
        shared = [_split_noise_first(conv_weight(s.mlp_shared[0]).to(d), noise_nc) for s in spades]
        self.ks = shared[0].shape[-1]
        self.register_buffer("shared_w", torch.cat(shared).float())  # (128 n, onehot + z, k, k)
        self.register_buffer("shared_b", torch.cat([conv_bias(s.mlp_shared[0]).to(d) for s in spades]).float())
        self.hidden_nc = [s.mlp_shared[0].out_channels for s in spades]
        self.kinds = []
        for j, s in enumerate(spades):
            wg, wb = conv_weight(s.mlp_gamma).to(d), conv_weight(s.mlp_beta).to(d)
            bg, bb = conv_bias(s.mlp_gamma).to(d) + 1.0, conv_bias(s.mlp_beta).to(d)  # G = 1 + gamma
            gb = torch.cat([wg, wb]).float().contiguous(memory_format=torch.channels_last)
            self.register_buffer(f"gb_w{j}", gb)
            self.register_buffer(f"gb_b{j}", torch.cat([bg, bb]).float())
            norm = s.first_norm
            if isinstance(norm, nn.InstanceNorm2d):
                self.kinds.append("instance")
                continue
            if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.running_var is None:
                raise SpadeganError(f"OASIS engine: SPADE norm {type(norm).__name__} without running statistics "
                                    "is not served; run the network")
            self.kinds.append("batch")
            self.register_buffer(f"mean{j}", norm.running_mean.to(d).float())
            self.register_buffer(f"rstd{j}", torch.rsqrt(norm.running_var.to(d) + norm.eps).float())
        self.noise_nc = noise_nc
        #: the sparse gamma/beta runs where at most this share of a level's pixels lies near a
        #: class boundary (or the border); 0 turns it off
        self.band_threshold = BAND_THRESHOLD
        #: layers with fewer gamma|beta outputs stay dense (the band's window gather costs
        #: about as much as their dense conv)
        self.band_min_out = BAND_MIN_OUT

    def hidden(self, level: CodeLevel, code_noise: torch.Tensor | None,
               zmap: torch.Tensor | None) -> "_Hidden":
        """ReLU(mlp_shared(cat(z, onehot))) of every layer at this level (B, H, W, 128 n); with
        noise per code (or none) and few pixels near a class boundary, also what the sparse
        gamma/beta needs: the per-code hidden constants and the boundary band."""
        a = torch.relu_(conditioned_conv(level, self.shared_w, self.shared_b, self.noise_nc, code_noise, zmap))
        if zmap is not None or self.band_threshold <= 0:
            return _Hidden(a, None, None, level)
        band = level.nonuniform(2 * (self.ks // 2)).reshape(-1).nonzero()[:, 0]
        if band.numel() > self.band_threshold * level.n:
            return _Hidden(a, None, None, level)
        consts = torch.relu_(code_constants(level, self.shared_w, self.shared_b, code_noise))
        return _Hidden(a, consts, band, level)

    def gb(self, j: int, hidden: "_Hidden") -> torch.Tensor:
        """(B, H, W, 2C) [G | B] of layer j from the hidden maps: a dense conv, or per-code
        constants with the boundary band's pixels computed from their windows."""
        lo, hi = sum(self.hidden_nc[:j]), sum(self.hidden_nc[:j + 1])
        w, b = getattr(self, f"gb_w{j}"), getattr(self, f"gb_b{j}")
        if hidden.band is None or w.shape[0] < self.band_min_out:
            a = hidden.a[..., lo:hi].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            return F.conv2d(a, w, b, padding=self.ks // 2).permute(0, 2, 3, 1).contiguous()
        level, n2c = hidden.level, w.shape[0]
        table = hidden.consts[..., lo:hi] @ w.sum((2, 3)).t() + b  # (G, V, 2C) uniform-window values
        rows = level.code.reshape(-1)
        if table.shape[0] > 1:
            rows = rows + torch.arange(level.B, device=rows.device).repeat_interleave(level.H * level.W) * level.V
        out = F.embedding(rows, table.reshape(-1, n2c))
        if hidden.band.numel():
            out[hidden.band] = torch.addmm(b, hidden.windows(hidden.band, lo, hi, self.ks), self._wmat(j))
        return out.view(level.B, level.H, level.W, n2c)

    def _wmat(self, j: int) -> torch.Tensor:
        """(k*k*128, 2C) gamma|beta weights in the window order of `_Hidden.windows`."""
        w = getattr(self, f"gb_w{j}")
        return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0])

    def normalize(self, j: int, x: torch.Tensor) -> torch.Tensor:
        if self.kinds[j] == "instance":
            return _instance_normalize(x, torch.float32)
        return (x - getattr(self, f"mean{j}")) * getattr(self, f"rstd{j}")


def conditioned_conv(level: CodeLevel, weight: torch.Tensor, bias: torch.Tensor, noise_nc: int,
                     code_noise: torch.Tensor | None, zmap: torch.Tensor | None) -> torch.Tensor:
    """(B, H, W, out): the zero-padded k x k conv of cat(z map, one-hot) at this level, `weight`
    with the noise channels last. z per code (`code_noise` (B, V + 1, z)): per-image lookup
    tables; a dense noise map (`zmap` (B, z, H, W), already at this level): lookups of the
    one-hot part plus a conv of the noise map; neither: the one-hot part alone (no_3dnoise)."""
    k = weight.shape[-1]
    onehot_w = weight[:, :weight.shape[1] - noise_nc] if zmap is not None else weight
    tables = tap_tables(onehot_w, level.V, False, code_noise)  # (G, T, V + 1, out)
    idx = level.window_rows(None, k // 2)
    if tables.shape[0] > 1:
        group = torch.arange(level.B, device=idx.device).repeat_interleave(level.H * level.W)
        idx = idx + group[:, None] * (idx.shape[1] * (level.V + 1))
    out = F.embedding_bag(idx, tables.reshape(-1, tables.shape[-1]), mode="sum").add_(bias)
    out = out.view(level.B, level.H, level.W, -1)
    if zmap is not None:
        zc = F.conv2d(zmap, weight[:, weight.shape[1] - noise_nc:], padding=k // 2)
        out.add_(zc.permute(0, 2, 3, 1))
    return out


def code_constants(level: CodeLevel, weight: torch.Tensor, bias: torch.Tensor,
                   code_noise: torch.Tensor | None) -> torch.Tensor:
    """(G, V, out): the conv's value at a pixel whose whole window has code v and lies inside
    the image (G = B per-image tables with noise per code, else 1); `weight` noise channels last."""
    return tap_tables(weight, level.V, False, code_noise)[:, :, :level.V].sum(1) + bias


def per_class_table(zmap: torch.Tensor, channels: torch.Tensor, semantic_nc: int) -> torch.Tensor | None:
    """(B, semantic_nc, z) with each class's vector if the noise map `zmap` (B, z, H, W) holds
    one vector per class of `channels` (B, H, W) (as `OASISSynthesizer.noise_map` spreads a
    table; absent classes get zeros), else None."""
    b, zd = zmap.shape[:2]
    idx = channels.reshape(b, -1, 1).expand(-1, -1, zd)
    vectors = zmap.reshape(b, zd, -1).transpose(1, 2)  # (B, HW, z)
    table = zmap.new_zeros(b, semantic_nc, zd).scatter_(1, idx, vectors)
    return table if torch.equal(torch.gather(table, 1, idx), vectors) else None


class _OASISEngineBlock(nn.Module):
    """`OASISResnetBlock` in NHWC; `upsample`: x arrives at half resolution (the generator's
    nearest x2 before this block), broadcast rather than materialised where possible."""

    def __init__(self, blk: OASISResnetBlock, noise_nc: int, winograd: bool, tiny: bool):
        super().__init__()
        self.learned_shortcut = blk.learned_shortcut
        spades = [blk.norm_0, blk.norm_1] + ([blk.norm_s] if blk.learned_shortcut else [])
        self.spades = _OASISSpades(spades, noise_nc)
        if self.learned_shortcut:
            ws = conv_weight(blk.conv_s).double()
            self.register_buffer("ws", ws.reshape(ws.shape[0], -1).t().float().contiguous())  # (fin, fout)
        w0, w1 = conv_weight(blk.conv_0).double().float(), conv_weight(blk.conv_1).double().float()
        wino0, wino1 = winograd and w0.shape[1] >= 256, winograd and w1.shape[1] >= 256
        self.conv_0 = _Conv3x3(w0, conv_bias(blk.conv_0).float(), torch.float32, wino0, wino0 and tiny)
        self.conv_1 = _Conv3x3(w1, conv_bias(blk.conv_1).float(), torch.float32, wino1, wino1 and tiny)

    def forward(self, x: torch.Tensor, upsample: bool, level: CodeLevel, code_noise: torch.Tensor | None,
                zmap: torch.Tensor | None) -> torch.Tensor:
        sp = self.spades
        hidden = sp.hidden(level, code_noise, zmap)
        if self.learned_shortcut:
            s = _modulate(sp.normalize(2, x), sp.gb(2, hidden), upsample)
            b, h, w, c = s.shape
            x_s = torch.mm(s.view(-1, c), self.ws).view(b, h, w, -1)
            del s
        else:
            x_s = _upsample_nhwc(x) if upsample else x
        dx = self.conv_0(F.leaky_relu_(_modulate(sp.normalize(0, x), sp.gb(0, hidden), upsample), _SLOPE))
        dx = self.conv_1(F.leaky_relu_(_modulate(sp.normalize(1, dx), sp.gb(1, hidden), False), _SLOPE))
        return dx.add_(x_s)


class OASISEngine(nn.Module):
    """An `OASISGenerator` compiled for inference (see the module docstring).

    Attributes: `oasis_opt` (the generator's `OASISOptions`), `semantic_nc` (OASIS channels
    accepted: 0..semantic_nc-1), `noise_nc` (z_dim, 0 with no_3dnoise), `num_up`,
    `default_size` (H, W) of the trained output.
    """

    def __init__(self, G: OASISGenerator, precision: str = "fp32", winograd: bool = True):
        super().__init__()
        if not isinstance(G, OASISGenerator):
            raise SpadeganError(f"OASISEngine serves OASISGenerator networks, not {type(G).__name__}")
        if precision not in OASIS_ENGINE_PRECISIONS:
            raise SpadeganError(f"the OASIS engine runs in {', '.join(OASIS_ENGINE_PRECISIONS)} only, not "
                                f"{precision!r}; run the network for other precisions")
        if G.training:
            raise SpadeganError("OASISEngine.from_generator needs the generator in eval mode (G.eval())")
        opt = self.oasis_opt = G.oasis_opt
        self.precision = precision
        self.semantic_nc, self.noise_nc = opt.semantic_nc, opt.noise_nc
        self.num_up = opt.num_res_blocks - 1
        self.default_size = tuple(opt.output_size)
        device = G.fc.weight.device
        self.register_buffer("fc_w", _split_noise_first(conv_weight(G.fc).double(), self.noise_nc).float())
        self.register_buffer("fc_b", conv_bias(G.fc).float())
        h, w = opt.latent_size
        self.blocks = nn.ModuleList()
        for i, blk in enumerate(G.body):
            if i:
                h, w = 2 * h, 2 * w
            wino = winograd and device.type == "cpu" and h * w <= 4096  # as SynthesisEngine measured
            self.blocks.append(_OASISEngineBlock(blk, self.noise_nc, wino, tiny=h * w <= 64))
        self.register_buffer("w_img", conv_weight(G.conv_img).float().contiguous(memory_format=torch.channels_last))
        self.register_buffer("b_img", conv_bias(G.conv_img).float())
        self.to(device)

    @classmethod
    def from_generator(cls, G: OASISGenerator, precision: str = "fp32", winograd: bool = True) -> "OASISEngine":
        """Derive an engine from an OASIS generator in eval mode (G is left as it is)."""
        return cls(G, precision=precision, winograd=winograd)

    @property
    def device(self) -> torch.device:
        return self.fc_b.device

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        if size is None:
            return self.default_size
        return upsampled_size(size, self.num_up, f"the OASIS generator doubles its start map {self.num_up} times")

    @staticmethod
    def channels_of(semantics: torch.Tensor) -> torch.Tensor:
        """(B, semantic_nc, H, W) one-hot semantics (the network's input) -> (B, H, W) channels;
        a map that is not one-hot (exactly one 1 per pixel, zeros elsewhere) is a SpadeganError."""
        if semantics.dim() != 4:
            raise SpadeganError(f"one-hot semantics must be (B, C, H, W), got {tuple(semantics.shape)}")
        ones = semantics == 1
        if not bool(((semantics == 0) | ones).all()) or not bool((ones.sum(1) == 1).all()):
            raise SpadeganError("the OASIS engine reads one-hot semantics (one 1 per pixel); this map is not "
                                "one-hot: run the network")
        return semantics.argmax(1)

    def noise_form(self, z: torch.Tensor | None, b: int, hw: tuple[int, int]) -> str:
        """The noise form of `z` for b label maps of size hw: "none" (no_3dnoise), "image"
        (B, z_dim), "class" (B, semantic_nc, z_dim), "map" (B, z_dim, H, W); else SpadeganError."""
        if self.noise_nc == 0:
            if z is not None:
                raise SpadeganError("this OASIS generator was trained with --no_3dnoise: it takes no z")
            return "none"
        shapes = {"image": (b, self.noise_nc), "class": (b, self.semantic_nc, self.noise_nc),
                  "map": (b, self.noise_nc, *hw)}
        if z is None:
            return "image"
        for form, shape in shapes.items():
            if tuple(z.shape) == shape:
                return form
        raise SpadeganError(f"z must be (B, {self.noise_nc}), (B, {self.semantic_nc}, {self.noise_nc}) per class or "
                            f"(B, {self.noise_nc}, H, W) for {b} label map(s) of {hw[1]}x{hw[0]}, got {tuple(z.shape)}")

    def forward(self, channels: torch.Tensor, z: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, H, W) OASIS channels (0..semantic_nc-1, `oasis_checkpoint.oasis_label_channels`)
        or the network's (B, semantic_nc, H, W) one-hot semantics -> (B, 3, H', W') in [-1, 1],
        what `OASISGenerator(semantics, z)` (at `size`, default the trained size) gives in eval
        mode. `z`: see `noise_form`; None draws `torch.randn(B, z_dim)` as the network does."""
        if channels.dim() == 4:
            if channels.shape[1] != self.semantic_nc:
                raise SpadeganError(f"the OASIS engine takes (B, H, W) channels or (B, {self.semantic_nc}, H, W) "
                                    f"one-hot semantics, got shape {tuple(channels.shape)}")
            channels = self.channels_of(channels)
        if channels.dim() != 3 or channels.dtype.is_floating_point:
            raise SpadeganError(f"OASIS channels must be (B, H, W) integers, got {tuple(channels.shape)} "
                                f"{channels.dtype}")
        channels = channels.to(self.device).long()
        if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= self.semantic_nc):
            raise SpadeganError(f"OASIS channels {int(channels.min())}..{int(channels.max())} outside "
                                f"0..{self.semantic_nc - 1}")
        b, hw = channels.shape[0], tuple(channels.shape[1:])
        form = self.noise_form(z, b, hw)
        h_out, w_out = self.output_size(size)
        codes = LabelCodes(channels, self.semantic_nc, False)
        if form != "none" and z is None:
            z = torch.randn(b, self.noise_nc, dtype=torch.float32, device=self.device)
        if form == "map":  # a map constant over each class (region seeds) runs as the per-class table
            z = z.to(self.device, torch.float32)
            table = per_class_table(z, channels, self.semantic_nc)
            form, z = ("class", table) if table is not None else ("map", z)
        code_noise = codes.with_noise(z.to(self.device, torch.float32)).code_noise() if form in ("image", "class") \
            else None
        zfull = z if form == "map" else None

        def zmap(h: int, w: int) -> torch.Tensor | None:
            return None if zfull is None else F.interpolate(zfull, size=(h, w), mode="nearest")

        h, w = h_out // 2 ** self.num_up, w_out // 2 ** self.num_up
        x = conditioned_conv(codes.at(h, w), self.fc_w, self.fc_b, self.noise_nc, code_noise, zmap(h, w))
        for i, blk in enumerate(self.blocks):
            if i:
                h, w = 2 * h, 2 * w
            x = blk(x, i > 0, codes.at(h, w), code_noise, zmap(h, w))
        x = F.leaky_relu_(x, _SLOPE).permute(0, 3, 1, 2)
        return torch.tanh(F.conv2d(x, self.w_img, self.b_img, padding=1)).contiguous()

    def generate(self, channels: torch.Tensor, z: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """`forward` under torch.inference_mode."""
        with torch.inference_mode():
            return self.forward(channels, z, size)


__all__ = ["OASISEngine", "OASIS_ENGINE_PRECISIONS"]
