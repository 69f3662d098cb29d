"""The fast inference engine: a SPADE generator rewritten for synthesis, same results.

`SynthesisEngine.from_generator(G)` derives an engine from a trained faithful
`SPADEGenerator` (ours or an official checkpoint; G itself is left untouched unless
`consume=True`). Its input is what users have, class ids and instance ids, instead of the
one-hot semantics tensor, and it computes the same function as G in eval mode:

* Activations are kept channels-last (NHWC); the 3x3 convolutions run on oneDNN with
  channels_last tensors, except those with many channels on small maps, which use
  Winograd F(2x2, 3x3) (fp32 on CPU, `_Conv3x3`); the 1x1 shortcut is a matrix product.
* SPADE's first convolution over the one-hot map is a gather-and-sum: at every pixel, the
  sum over the k*k taps of a table row chosen by the class id (and instance-edge bit)
  found at that tap (`layers.label_codes.code_embedding`), done by one `embedding_bag` for the three
  SPADE layers of a block together (3 x 128 hidden channels per lookup).
* gamma and beta are one convolution with 2C outputs, with the "1 +" folded in, so a
  SPADE layer is `x_hat * G + B`; spectral norm is folded into plain weights.
* Per-code constants: the sparse SPADE of `layers.spade`, the one training uses (its
  functions and `layers.label_codes.CodeLevel`'s index arithmetic; the engine only lays its
  tables out for its fused lookups). Where all codes within the receptive field of
  gamma/beta are equal (and away from the image border), G and B are constants of that code
  (`fold.code_tables`); only the pixels near a class or instance boundary are computed, once
  per distinct window of codes there (`CodeLevel.band_plan`, `layers.spade.band_values`:
  along a boundary the same few windows repeat). Where those windows are many per pixel
  (low resolutions, noise-like maps) the level is computed densely instead: one rule for
  both, `layers.spade.runs_dense`.
* Upsampling is never materialised for the SPADE input: the instance-norm statistics of a
  nearest-upsampled map equal those of the small map, and the modulation broadcasts the
  small map over 2x2 blocks.
* Weights are stored once in the compute dtype (fp32, bf16 or fp16). With bf16/fp16 the
  error-sensitive parts stay fp32 (measured on unit-scale random weights, where rounding
  them costs 10-15 dB PSNR): the first layer (fc) and the identity residual stream it
  feeds, and every normalisation (x - mean cancels on nearly constant maps); the
  convolutions, lookups and products run in the compute dtype.

`forward(label, instance=None, z=None)` takes (B, H, W) ids (dontcare already mapped to
`label_nc`; others past the class count are the Synthesizer's SpadeganError), optional
(B, H, W) instance ids and the VAE code, and returns (B, 3, H', W') in [-1, 1]. With `dense_only=True` the data-dependent sparse path is off, which makes the
module traceable for TorchScript/ONNX export (`spadegan.engine.export`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import PRECISIONS
from ..errors import SpadeganError
from ..layers.blocks import SPADEResnetBlock
from ..layers.label_codes import CodeLevel, LabelCodes, code_embedding
from ..layers.spade import INFERENCE_SPARSE_THRESHOLD, NHIDDEN, band_values, runs_dense, taps_major
from ..networks.generator import block_plan
from .fold import FoldedSpade, code_tables, conv_bias, conv_weight, fold_spade

_EPS = 1e-5  # InstanceNorm2d's default eps, which the faithful SPADE uses
_SLOPE = 0.2


def _release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc malloc_trim), so that converting a
    generator block by block does not leave the process holding both copies' pages."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def _cl(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return w.to(dtype).contiguous(memory_format=torch.channels_last)


def _lookup_sum(idx: torch.Tensor, table: torch.Tensor, export: bool) -> torch.Tensor:
    """(Q, out): the sum of the rows `idx` (Q, T) of `table`: a conv of the one-hot map by lookups."""
    if not export:
        return F.embedding_bag(idx, table, mode="sum")
    acc = F.embedding(idx[:, 0], table)  # Gather + Add only (embedding_bag has no efficient ONNX form)
    for i in range(1, idx.shape[1]):
        acc = acc + F.embedding(idx[:, i], table)
    return acc


class _SpadeGroup(nn.Module):
    """The (2 or 3) SPADE layers of one residual block, fused (see the module docstring)."""

    def __init__(self, spades: list[FoldedSpade], label_channels: int, instance: bool,
                 dtype: torch.dtype):
        super().__init__()
        self.kind, self.ks = spades[0].kind, spades[0].ks
        self.pw = self.ks // 2
        self.channels = [s.channels for s in spades]
        self.V = label_channels * (2 if instance else 1)
        emb = torch.cat([code_embedding(s.shared_w, label_channels, instance) for s in spades], dim=2)
        self.register_buffer("emb", emb.reshape(-1, emb.shape[-1]).to(dtype))  # (T*(V+1), 128n)
        self.register_buffer("emb_bias", torch.cat([s.shared_b for s in spades]).to(dtype))
        for j, (s, (hidden, table)) in enumerate(zip(spades, code_tables(spades, label_channels, instance))):
            self.register_buffer(f"gb_w{j}", _cl(s.gb_w, dtype))  # (2C, 128, k, k) channels_last
            self.register_buffer(f"gb_b{j}", s.gb_b.to(dtype))
            self.register_buffer(f"hidden{j}", hidden.to(dtype))  # (V, 128) per-code hidden vectors
            self.register_buffer(f"table{j}", table.to(dtype))  # (V, 2C) per-code G|B
            if s.kind == "batch":
                self.register_buffer(f"mean{j}", s.mean.float())  # normalisation stays fp32
                self.register_buffer(f"rstd{j}", s.rstd.float())
        self.dtype = dtype
        self._taps: dict[int, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        self._taps = {}  # derived tensors: rebuilt on the new device/dtype when needed
        return super()._apply(fn, recurse)

    def normalize(self, j: int, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """x_hat for SPADE j: instance norm (shared by layers reading the same x) or eval BN."""
        if self.kind == "instance":
            key = id(x)
            if key not in cache:
                cache.clear()
                cache[key] = _instance_normalize(x, self.dtype)
            return cache[key]
        if x.dtype == torch.float32:
            return ((x - getattr(self, f"mean{j}")) * getattr(self, f"rstd{j}")).to(self.dtype)
        return ((x.float() - getattr(self, f"mean{j}")) * getattr(self, f"rstd{j}")).to(self.dtype)

    def hidden(self, level: CodeLevel, flat: torch.Tensor | None, export: bool) -> torch.Tensor:
        """ReLU(first SPADE conv) at the given pixels (all if None): (Q, 128 n)."""
        return torch.relu_(_lookup_sum(level.window_rows(flat, self.pw), self.emb, export) + self.emb_bias)

    def gb_maps(self, level: CodeLevel, threshold: float, export: bool):
        """A function j -> (B, H, W, 2C) map of [G | B] for SPADE j at this level: dense
        (convolutions of the looked-up hidden map), or where `layers.spade.runs_dense` says
        the lookups pay, each pixel's row of [per-code constants | the band's distinct values]
        (`CodeLevel.band_plan`, `layers.spade.band_values`), as the training path computes it."""
        B, H, W = level.B, level.H, level.W
        nh = NHIDDEN
        if export or runs_dense(level, self.pw, 1, threshold):
            a = self.hidden(level, None, export).view(B, H, W, -1)

            def dense(j: int) -> torch.Tensor:
                aj = a[..., j * nh:(j + 1) * nh].permute(0, 3, 1, 2)
                aj = aj.contiguous(memory_format=torch.channels_last)
                out = F.conv2d(aj, getattr(self, f"gb_w{j}"), getattr(self, f"gb_b{j}"), padding=self.pw)
                return out.permute(0, 2, 3, 1).contiguous()
            return dense

        plan = level.band_plan(self.pw, 1)
        a = self.hidden(level, plan.hidden_pixels, export) if plan.bags.numel() else None  # (Qu, 128 n)
        rows = plan.rows.view(B, H, W)

        def sparse_map(j: int) -> torch.Tensor:
            table = getattr(self, f"table{j}")
            if a is not None:
                band = band_values(plan, getattr(self, f"hidden{j}"), a[:, j * nh:(j + 1) * nh], self._w_taps(j),
                                   getattr(self, f"gb_b{j}"), max_bytes=_BAND_CHUNK_BYTES)
                table = torch.cat([table, band])
            return F.embedding(rows, table)
        return sparse_map

    def _w_taps(self, j: int) -> torch.Tensor:
        """(128, T, 2C) tap-major weights of SPADE j's gamma|beta conv, built on first sparse
        use and kept (levels that are always dense never pay their memory)."""
        if j not in self._taps:
            self._taps[j] = taps_major(getattr(self, f"gb_w{j}")).contiguous()
        return self._taps[j]


#: the band's per-tap product (rows x taps x 2C) is done in chunks of taps of about this size
_BAND_CHUNK_BYTES = 32 << 20


def _instance_normalize(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Instance norm of an NHWC map (biased variance, eps 1e-5, as InstanceNorm2d).

    Computed in fp32 whatever the compute dtype: x - mean cancels where a map is nearly
    constant, and doing it in bf16 costs >10 dB PSNR (measured).
    """
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=(1, 2), keepdim=True, correction=0)
    return ((xf - mean) * torch.rsqrt(var + _EPS)).to(dtype)


def _modulate(x_hat: torch.Tensor, gb: torch.Tensor, upsample: bool) -> torch.Tensor:
    """x_hat * G + B; x_hat at half resolution (nearest-upsampled by broadcasting) if upsample."""
    c = x_hat.shape[-1]
    if upsample:
        b, h, w, _ = x_hat.shape
        gbv = gb.view(b, h, 2, w, 2, 2 * c)
        out = torch.addcmul(gbv[..., c:], x_hat.view(b, h, 1, w, 1, c), gbv[..., :c])
        return out.view(b, 2 * h, 2 * w, c)
    return torch.addcmul(gb[..., c:], x_hat, gb[..., :c])


def _conv_nhwc(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int) -> torch.Tensor:
    out = F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=pad)
    return out.permute(0, 2, 3, 1).contiguous()


# Winograd F(2x2, 3x3): y = A^T [(G g G^T) * (B^T d B)] A on 4x4 input tiles with stride 2
_WINO_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


class _Conv3x3(nn.Module):
    """A 3x3, padding-1 convolution of an NHWC map: oneDNN direct, or Winograd F(2x2, 3x3).

    oneDNN (on AVX2) runs 3x3 convolutions with many channels on small maps at a fraction
    of the CPU's matmul speed; Winograd F(2x2, 3x3) turns them into 16 matrix products with
    2.25x fewer multiplications, plus cheap add/subtract transforms. It is faster than the
    direct convolution on the generator's many-channel layers up to 64x64 and slower from
    128x128 on (the transforms are memory-bound; per-layer timings in benchmarks/README.md),
    hence `use_winograd` is chosen per layer from its size at the training resolution. Only
    for fp32 on CPU (GPUs' cuDNN and AMX's bf16 kernels have their own fast paths). Error
    ~2e-6 relative, like direct fp32. Winograd weights take 16/9 the memory; on maps of at
    most 64 pixels (the first block) `use_gemm` runs the direct weights as one matrix product
    over the 9 shifted copies of the input instead, which is as fast there.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, use_winograd: bool,
                 use_gemm: bool = False):
        super().__init__()
        self.winograd = use_winograd and not use_gemm
        self.gemm = use_gemm
        if self.winograd:
            # G g G^T in fp32 (coefficients 0, +-1/2, 1/4: no accuracy to gain from fp64), in two
            # steps to keep the peak memory of building an engine low
            g = _WINO_G.to(w.dtype)
            t = torch.einsum("ak,oikl->oial", g, w)  # (Cout, Cin, 4, 3)
            u = torch.einsum("oial,bl->abio", t, g)  # (4, 4, Cin, Cout)
            del t
            self.register_buffer("u", u.reshape(16, w.shape[1], w.shape[0]).to(dtype).contiguous())
        else:
            self.register_buffer("w", _cl(w, dtype))
        self.register_buffer("b", b.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gemm:  # tiny maps: one matrix product on the 9 shifted copies, direct weights
            bsz, h, w, c = x.shape
            xp = F.pad(x, (0, 0, 1, 1, 1, 1))
            cols = torch.cat([xp[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], dim=3)
            wmat = self.w.permute(0, 2, 3, 1).reshape(self.w.shape[0], -1).t()  # a view of w
            return torch.addmm(self.b, cols.view(bsz * h * w, 9 * c), wmat).view(bsz, h, w, -1)
        if not self.winograd:
            return _conv_nhwc(x, self.w, self.b, 1)
        bsz, h, w, c = x.shape
        eh, ew = h % 2, w % 2  # odd sizes: one more zero row/column, cropped after
        th, tw = (h + eh) // 2, (w + ew) // 2
        xp = F.pad(x, (0, 0, 1, 1 + ew, 1, 1 + eh))
        r = [xp[:, k::2][:, :th] for k in range(4)]
        rows = (r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3])  # B^T d
        if torch.jit.is_tracing():  # export: the same maths without writes into views
            return self._traceable(rows, bsz, h, w, th, tw, c)
        v = x.new_empty(16, bsz, th, tw, c)
        for a, u in enumerate(rows):  # (B^T d) B
            q = [u[:, :, k::2][:, :, :tw] for k in range(4)]
            torch.sub(q[0], q[2], out=v[4 * a])
            torch.add(q[1], q[2], out=v[4 * a + 1])
            torch.sub(q[2], q[1], out=v[4 * a + 2])
            torch.sub(q[1], q[3], out=v[4 * a + 3])
        m = torch.bmm(v.view(16, -1, c), self.u).view(4, 4, bsz, th, tw, -1)
        del v
        s0 = m[0] + m[1] + m[2]  # A^T m
        s1 = m[1] - m[2] - m[3]
        del m
        out = x.new_empty(bsz, th, 2, tw, 2, s0.shape[-1])
        for a, s in enumerate((s0, s1)):  # (A^T m) A, interleaved into the 2x2 output pixels
            torch.add(s[0] + s[1], s[2], out=out[:, :, a, :, 0])
            torch.sub(s[1] - s[2], s[3], out=out[:, :, a, :, 1])
        out = out.view(bsz, 2 * th, 2 * tw, -1)
        if eh or ew:
            out = out[:, :h, :w].contiguous()
        return out.add_(self.b)

    def _traceable(self, rows, bsz, h, w, th, tw, c) -> torch.Tensor:
        v = []
        for u in rows:
            q = [u[:, :, k::2][:, :, :tw] for k in range(4)]
            v += [q[0] - q[2], q[1] + q[2], q[2] - q[1], q[1] - q[3]]
        m = torch.bmm(torch.stack(v).reshape(16, -1, c), self.u).reshape(4, 4, bsz, th, tw, -1)
        s0, s1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]
        ys = [torch.stack([s[0] + s[1] + s[2], s[1] - s[2] - s[3]], dim=3) for s in (s0, s1)]  # (B,th,tw,2,C)
        out = torch.stack(ys, dim=2).reshape(bsz, 2 * th, 2 * tw, -1)  # (B, th, 2, tw, 2, C)
        return out[:, :h, :w] + self.b


def _upsample_nhwc(x: torch.Tensor) -> torch.Tensor:
    b, h, w, c = x.shape
    return x.view(b, h, 1, w, 1, c).expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)


class _EngineBlock(nn.Module):
    """SPADEResnetBlock in NHWC with fused SPADE layers."""

    def __init__(self, blk: SPADEResnetBlock, norm_G: str, label_channels: int, instance: bool,
                 dtype: torch.dtype, winograd: bool, tiny: bool = False):
        super().__init__()
        cfg = norm_G.replace("spectral", "")
        self.learned_shortcut = blk.learned_shortcut
        spades = [fold_spade(blk.norm_0, cfg), fold_spade(blk.norm_1, cfg)]
        if self.learned_shortcut:
            spades.append(fold_spade(blk.norm_s, cfg))
            ws = conv_weight(blk.conv_s)  # (fout, fin, 1, 1)
            self.register_buffer("ws", ws.reshape(ws.shape[0], -1).t().to(dtype))  # (fin, fout) view
        self.spades = _SpadeGroup(spades, label_channels, instance, dtype)
        w0, w1 = conv_weight(blk.conv_0), conv_weight(blk.conv_1)
        wino0, wino1 = winograd and w0.shape[1] >= 256, winograd and w1.shape[1] >= 256
        self.conv_0 = _Conv3x3(w0, conv_bias(blk.conv_0), dtype, wino0, wino0 and tiny)
        self.conv_1 = _Conv3x3(w1, conv_bias(blk.conv_1), dtype, wino1, wino1 and tiny)

    def forward(self, x: torch.Tensor, upsample: bool, level: CodeLevel, threshold: float,
                export: bool, record: list | None = None) -> torch.Tensor:
        sp = self.spades
        gb = sp.gb_maps(level, threshold, export)
        cache: dict = {}  # the stats of up(x) equal those of x: normalise the small map
        if self.learned_shortcut:
            s = _modulate(sp.normalize(2, x, cache), gb(2), upsample)
            b, h, w, c = s.shape
            x_s = torch.mm(s.view(-1, c), self.ws).view(b, h, w, -1)
            del s
        else:
            x_s = _upsample_nhwc(x) if upsample else x
        dx = F.leaky_relu_(_modulate(sp.normalize(0, x, cache), gb(0), upsample), _SLOPE)
        cache.clear()
        dx = self.conv_0(dx)
        if record is not None and sp.kind == "instance":  # norm_1's input: its statistics (incremental)
            record.append(dx)
        dx = F.leaky_relu_(_modulate(sp.normalize(1, dx, cache), gb(1), False), _SLOPE)
        cache.clear()
        dx = self.conv_1(dx)
        if x_s.dtype == dx.dtype:
            return dx.add_(x_s)
        return x_s + dx  # an fp32 residual stream stays fp32 (see SynthesisEngine)


def upsampled_size(size: tuple[int, int], num_up: int, why: str) -> tuple[int, int]:
    """(H, W) of `size` checked to be a positive multiple of 2**num_up both ways (a generator
    that doubles its start map num_up times), else a SpadeganError ending with `why`."""
    h, w, m = int(size[0]), int(size[1]), 2 ** num_up
    if h < m or w < m or h % m or w % m:
        raise SpadeganError(f"output size {w}x{h} must be a positive multiple of {m} in both directions ({why})")
    return h, w


class SynthesisEngine(nn.Module):
    """A SPADE generator compiled for inference; see the module docstring.

    Attributes: `label_channels` (ids accepted: 0..label_channels-1), `instance` (whether
    instance maps are read), `use_vae`, `z_dim`, `dtype`, `num_up` (the output is
    2**num_up times the initial map), `default_size` (H, W) of the training crop.
    """

    #: the threshold of `layers.spade.runs_dense` (the dense-vs-lookups rule the training path
    #: uses too), forward-only's INFERENCE_SPARSE_THRESHOLD; inf / -inf force either path
    sparse_threshold: float = INFERENCE_SPARSE_THRESHOLD

    def __init__(self, G: nn.Module, precision: str = "fp32", consume: bool = False, winograd: bool = True):
        super().__init__()
        if G.__class__.__name__ != "SPADEGenerator":
            raise SpadeganError(f"the synthesis engine supports --netG spade generators, not "
                                f"{G.__class__.__name__}; use the faithful network (--no_engine)")
        if precision not in PRECISIONS:
            raise SpadeganError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        opt = G.opt if hasattr(G, "opt") else None
        if opt is None:
            raise SpadeganError("the generator carries no options (.opt); build it with networks.define_G "
                                "or load it with spadegan.load_checkpoint")
        if opt.use_3d_noise:
            raise SpadeganError("the synthesis engine does not serve 3D-noise (OASIS) generators; run the "
                                "faithful network (Synthesizer does so by itself)")
        if getattr(opt, "label_nc", None) == 0:
            raise SpadeganError("the fast engine needs class-id label maps; this generator reads label images "
                                "(--label_nc 0): use the faithful network (--no_engine, use_engine=False)")
        self.opt = opt
        self.precision = precision
        self.dtype = dtype = PRECISIONS[precision]
        self.label_channels = opt.label_channels
        self.instance = not opt.no_instance
        self.use_vae, self.z_dim, self.ngf = G.use_vae, G.z_dim, G.ngf
        self.sw, self.sh = G.sw, G.sh
        self.num_upsampling_layers = G.num_upsampling_layers
        self.num_up = opt.num_up_layers
        self.default_size = (self.sh * 2 ** self.num_up, self.sw * 2 ** self.num_up)
        device = next(G.parameters()).device

        if self.use_vae:
            self.register_buffer("fc_w", G.fc.weight.detach().float())
            self.register_buffer("fc_b", G.fc.bias.detach().float())
        else:
            w = G.fc.weight.detach().double()
            emb = code_embedding(w, self.label_channels, self.instance)
            self.register_buffer("fc_emb", emb.reshape(-1, emb.shape[-1]).float())
            self.register_buffer("fc_b", G.fc.bias.detach().float())
        if consume:
            G.fc = nn.Identity()
        plan = block_plan(self.num_upsampling_layers)
        self.block_names = [n for n, _ in plan]
        self.blocks = nn.ModuleList()
        h, w = self.sh, self.sw
        for n, up in plan:
            if up:
                h, w = 2 * h, 2 * w
            # Winograd where it measured faster: fp32 on CPU, maps up to 64x64 at the
            # training size (layers with < 256 input channels stay direct, see _Conv3x3)
            wino = winograd and dtype == torch.float32 and device.type == "cpu" and h * w <= 4096
            self.blocks.append(_EngineBlock(getattr(G, n), opt.norm_G, self.label_channels,
                                            self.instance, dtype, wino, tiny=h * w <= 64))
            if consume:  # free the faithful block now, keeping peak memory at ~1 copy of G
                setattr(G, n, nn.Identity())
                _release_freed_memory()
        self.register_buffer("w_img", _cl(conv_weight(G.conv_img), dtype))
        self.register_buffer("b_img", conv_bias(G.conv_img).to(dtype))
        self.dense_only = False
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.fc_b.device

    # ---- construction helpers ------------------------------------------------------
    @classmethod
    def from_generator(cls, G: nn.Module, precision: str = "fp32", consume: bool = False,
                       winograd: bool = True) -> "SynthesisEngine":
        """Derive an engine from a faithful generator in eval mode (with its `.opt`, as from define_G).

        `consume=True` frees G's blocks as they are converted (G is unusable afterwards),
        keeping peak memory near one copy of the weights. `winograd=False` keeps every
        3x3 convolution on oneDNN's direct algorithm.
        """
        return cls(G, precision=precision, consume=consume, winograd=winograd)

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        if size is None:
            return self.default_size
        h, w = upsampled_size(size, self.num_up, f"the generator upsamples {self.num_up} times")
        if self.use_vae and (h, w) != self.default_size:
            raise SpadeganError(f"this VAE model's fc layer fixes the output at "
                                f"{self.default_size[1]}x{self.default_size[0]}; got {w}x{h}")
        return h, w

    # ---- the forward pass ------------------------------------------------------------
    def codes(self, label: torch.Tensor, instance: torch.Tensor | None) -> LabelCodes:
        """(B,H,W) class ids (dontcare mapped to label_nc) (+ instance ids) -> the `LabelCodes`
        the levels are read from. Ids the model does not know raise the Synthesizer's
        SpadeganError (`layers.label_codes.check_label_ids`), except while tracing for export."""
        return LabelCodes.from_label(label, instance, self.opt, validate=not torch.jit.is_tracing())

    def forward(self, label: torch.Tensor, instance: torch.Tensor | None = None,
                z: torch.Tensor | None = None, size: tuple[int, int] | None = None,
                record: list | None = None) -> torch.Tensor:
        """`record` (a list, for `engine.incremental`): receives each block's input map, each
        instance-norm block's conv_0 output after it, and the conv_img input; nothing else changes."""
        h_out, w_out = self.output_size(size)
        codes = self.codes(label.to(self.device), None if instance is None else instance.to(self.device))
        b = codes.shape[0]
        export = self.dense_only
        h, w = h_out // 2 ** self.num_up, w_out // 2 ** self.num_up
        if self.use_vae:
            if z is None:
                z = torch.randn(b, self.z_dim, device=self.device)
            x = F.linear(z.to(self.device, torch.float32), self.fc_w, self.fc_b)
            x = x.view(b, 16 * self.ngf, h, w).permute(0, 2, 3, 1).contiguous()
        else:
            x = _lookup_sum(codes.at(h, w).window_rows(None, 1), self.fc_emb, export)
            x = (x + self.fc_b).view(b, h, w, -1)

        for blk, (_, up) in zip(self.blocks, block_plan(self.num_upsampling_layers)):
            if up:
                h, w = 2 * h, 2 * w
            if record is not None:
                record.append(x)
            x = blk(x, up, codes.at(h, w), self.sparse_threshold, export, record)
        x = F.leaky_relu_(x, _SLOPE)
        if record is not None:
            record.append(x)
        out = F.conv2d(x.permute(0, 3, 1, 2), self.w_img, self.b_img, padding=1)
        return torch.tanh(out.float()).contiguous()

    def generate(self, label: torch.Tensor, instance: torch.Tensor | None = None,
                 z: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """`forward` under torch.inference_mode; float32 output."""
        with torch.inference_mode():
            return self.forward(label, instance, z, size)


def count_flops(G: nn.Module, size: tuple[int, int] | None = None) -> float:
    """Multiply-add FLOPs (x2) of the faithful SPADE generator's convolutions for one image."""
    opt = G.opt
    h = (size[0] if size else G.sh * 2 ** opt.num_up_layers) // 2 ** opt.num_up_layers
    w = (size[1] if size else G.sw * 2 ** opt.num_up_layers) // 2 ** opt.num_up_layers
    flops = 0.0

    def conv(m: nn.Module, px: int) -> float:
        wt = conv_weight(m)
        return 2.0 * wt.numel() * px

    flops += 2.0 * G.fc.weight.numel() * (1 if G.use_vae else h * w)
    for n, up in block_plan(G.num_upsampling_layers):
        if up:
            h, w = 2 * h, 2 * w
        blk, px = getattr(G, n), h * w
        for m in [blk.conv_0, blk.conv_1] + ([blk.conv_s] if blk.learned_shortcut else []):
            flops += conv(m, px)
        for sp in [blk.norm_0, blk.norm_1] + ([blk.norm_s] if blk.learned_shortcut else []):
            flops += conv(sp.mlp_shared[0], px) + conv(sp.mlp_gamma, px) + conv(sp.mlp_beta, px)
    flops += conv(G.conv_img, h * w)
    return flops


__all__ = ["SynthesisEngine", "count_flops"]
