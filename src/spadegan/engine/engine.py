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
* Per-code constants: where all codes within the receptive field of gamma/beta are equal
  (and away from the image border), G and B are constants of that code (`fold.code_tables`)
  and are looked up; only the pixels near a class or instance boundary (typically 10-30 %
  of a real label map at 128-256 px) are computed, and there too the taps whose hidden
  vector is a per-code constant come from a per-(code, tap) table, so matrix products run
  only for the hidden vectors right at a boundary (`_SpadeGroup.gb_maps`). When most
  pixels are near a boundary (low resolutions, noise-like maps) the level falls back to a
  dense convolution of the gathered hidden map.
* Upsampling is never materialised for the SPADE input: the instance-norm statistics of a
  nearest-upsampled map equal those of the small map, and the modulation broadcasts the
  small map over 2x2 blocks.
* Weights are stored once in the compute dtype (fp32, bf16 or fp16). With bf16/fp16 the
  error-sensitive parts stay fp32 (measured on unit-scale random weights, where rounding
  them costs 10-15 dB PSNR): the first layer (fc) and the identity residual stream it
  feeds, and every normalisation (x - mean cancels on nearly constant maps); the
  convolutions, lookups and products run in the compute dtype.

`forward(label, instance=None, z=None)` takes (B, H, W) ids (dontcare already mapped to
`label_nc`), optional (B, H, W) instance ids and the VAE code, and returns (B, 3, H', W')
in [-1, 1]. With `dense_only=True` the data-dependent sparse path is off, which makes the
module traceable for TorchScript/ONNX export (`spadegan.engine.export`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.label_codes import CodeLevel, code_embedding, instance_edges, resize_nearest
from ..device import PRECISIONS
from ..errors import SpadeganError
from ..layers.blocks import SPADEResnetBlock
from ..layers.spade import NHIDDEN
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


class _Level(CodeLevel):
    """One resolution of the code map (`layers.label_codes.CodeLevel`: windows, pixels near a
    code boundary), plus the engine's choice of the sparse path for each kernel radius.

    Built once per resolution per forward call and reused by every block at that size.
    """

    def __init__(self, code: torch.Tensor, num_codes: int):
        super().__init__(code, num_codes)
        self.sparse: dict[int, tuple | None] = {}

    def irregular(self, pw: int, threshold: float, min_pixels: int) -> tuple | None:
        """Pixels whose gamma/beta, and those whose hidden vector, are not per-code constants.

        The hidden vector at q reads the codes within pw of q; gamma/beta at p read the
        hidden vectors within pw of p, i.e. codes within 2 pw. Where all those codes are
        equal and inside the image, the value is a constant of the code. Returns (flat ids
        of irregular gamma/beta pixels, flat ids of irregular hidden pixels), or None when
        the irregular pixels exceed `threshold` of the level (the dense path is cheaper).
        """
        if pw in self.sparse:
            return self.sparse[pw]
        result = None
        if self.n >= min_pixels and self.H > 4 * pw and self.W > 4 * pw:
            p = self.nonuniform(2 * pw).reshape(-1).nonzero().squeeze(1)
            if p.numel() <= threshold * self.n:
                q = self.nonuniform(pw).reshape(-1).nonzero().squeeze(1)
                result = (p, q)
        self.sparse[pw] = result
        return result


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
        for j, (s, table) in enumerate(zip(spades, code_tables(spades, label_channels, instance))):
            self.register_buffer(f"gb_w{j}", _cl(s.gb_w, dtype))  # (2C, 128, k, k) channels_last
            self.register_buffer(f"gb_b{j}", s.gb_b.to(dtype))
            self.register_buffer(f"table{j}", table.to(dtype))  # (V, 2C)
            if s.kind == "batch":
                self.register_buffer(f"mean{j}", s.mean.float())  # normalisation stays fp32
                self.register_buffer(f"rstd{j}", s.rstd.float())
        self.dtype = dtype
        self._taps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

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

    def hidden(self, level: _Level, flat: torch.Tensor | None, export: bool) -> torch.Tensor:
        """ReLU(first SPADE conv) at the given pixels (all if None): (Q, 128 n)."""
        codes = level.window_codes(flat, self.pw)
        t = codes.shape[1]
        idx = codes + (torch.arange(t, device=codes.device) * (self.V + 1))[None, :]
        if export:  # Gather + Add only (embedding_bag has no efficient ONNX form)
            acc = F.embedding(idx[:, 0], self.emb)
            for i in range(1, t):
                acc = acc + F.embedding(idx[:, i], self.emb)
        else:
            acc = F.embedding_bag(idx, self.emb, mode="sum")
        return torch.relu_(acc + self.emb_bias)

    def gb_maps(self, level: _Level, threshold: float, min_pixels: int, export: bool):
        """A function j -> (B, H, W, 2C) map of [G | B] for SPADE j at this level."""
        sparse = None if export else level.irregular(self.pw, threshold, min_pixels)
        B, H, W = level.B, level.H, level.W
        nh = NHIDDEN
        if sparse is None:
            a = self.hidden(level, None, export).view(B, H, W, -1)

            def dense(j: int) -> torch.Tensor:
                aj = a[..., j * nh:(j + 1) * nh].permute(0, 3, 1, 2)
                aj = aj.contiguous(memory_format=torch.channels_last)
                out = F.conv2d(aj, getattr(self, f"gb_w{j}"), getattr(self, f"gb_b{j}"), padding=self.pw)
                return out.permute(0, 2, 3, 1).contiguous()
            return dense

        # gamma/beta at an irregular pixel p = bias + sum over taps t of W_t . hidden(p + t).
        # hidden(q) is the per-code constant unless q is irregular itself: those taps come
        # from a per-(code, tap) table U; the others from Y = hidden(irregular q) @ [W_t]_t,
        # computed once per irregular q for all taps; taps in the padding add nothing. One
        # embedding_bag then sums the T rows of [U | 0 | Y] for each p.
        p, q = sparse
        a = self.hidden(level, q, export)
        cp, offs, wp = level.padded(self.pw)
        t = offs.numel()
        qrow = torch.full_like(cp, -1)  # padded grid -> row of an irregular hidden pixel
        qrow[level.window_base(q, self.pw) + self.pw * wp + self.pw] = torch.arange(q.numel(), device=a.device)
        pos = level.window_base(p, self.pw)[:, None] + offs[None, :]
        code_pt, row_pt = cp[pos], qrow[pos]  # (P, T) each
        del qrow, pos

        def sparse_map(j: int) -> torch.Tensor:
            u, wt = self._tap_tables(j)  # (T, V, 2C), (128, T*2C)
            c2 = u.shape[2]
            # taps in chunks, so that Y (|q| x taps x 2C) stays under ~32 MB
            ns = max(1, min(t, (32 << 20) // max(1, q.numel() * c2 * u.element_size())))
            vals = None
            aj = a[:, j * nh:(j + 1) * nh]
            for t0 in range(0, t, ns):
                t1 = min(t, t0 + ns)
                n = t1 - t0
                tl = torch.arange(n, device=a.device)
                z = u.new_empty(n * self.V + n + q.numel() * n, c2)  # [U | 0 | Y], Y written in place
                z[:n * self.V] = u[t0:t1].reshape(-1, c2)
                z[n * self.V:n * self.V + n] = 0
                torch.mm(aj, wt[:, t0 * c2:t1 * c2], out=z[n * self.V + n:].view(q.numel(), n * c2))
                code, row = code_pt[:, t0:t1], row_pt[:, t0:t1]
                idx = torch.where(row >= 0, n * self.V + n + row * n + tl,
                                  torch.where(code == self.V, n * self.V + tl, tl * self.V + code))
                part = F.embedding_bag(idx, z, mode="sum")
                vals = part if vals is None else vals.add_(part)
                del z
            vals.add_(getattr(self, f"gb_b{j}"))
            out = F.embedding(level.code, getattr(self, f"table{j}"))  # (B, H, W, 2C)
            out.view(-1, c2).index_copy_(0, p, vals)
            return out
        return sparse_map

    def _tap_tables(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, Wt) for SPADE j, built on first sparse use and kept (levels that are always
        dense never pay their memory): U (T, V, 2C), U[t, v] = W_t . hidden_const(v);
        Wt (128, T*2C), column block t = W_t^T."""
        if j not in self._taps:
            w = getattr(self, f"gb_w{j}").float()  # (2C, 128, k, k)
            c2, nh, k, _ = w.shape
            wt = w.permute(1, 2, 3, 0).reshape(nh, k * k * c2)  # (128, T*2C)
            emb = self.emb.float().view(k * k, self.V + 1, -1)[:, :-1, j * nh:(j + 1) * nh]
            hidden = torch.relu(emb.sum(0) + self.emb_bias.float()[j * nh:(j + 1) * nh])  # (V, 128)
            u = (hidden @ wt).view(-1, k * k, c2).transpose(0, 1)  # (T, V, 2C)
            self._taps[j] = (u.to(self.dtype).contiguous(), wt.to(self.dtype).contiguous())
        return self._taps[j]


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

    def forward(self, x: torch.Tensor, upsample: bool, level: _Level, threshold: float,
                min_pixels: int, export: bool) -> torch.Tensor:
        sp = self.spades
        gb = sp.gb_maps(level, threshold, min_pixels, export)
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
        dx = F.leaky_relu_(_modulate(sp.normalize(1, dx, cache), gb(1), False), _SLOPE)
        cache.clear()
        dx = self.conv_1(dx)
        if x_s.dtype == dx.dtype:
            return dx.add_(x_s)
        return x_s + dx  # an fp32 residual stream stays fp32 (see SynthesisEngine)


class SynthesisEngine(nn.Module):
    """A SPADE generator compiled for inference; see the module docstring.

    Attributes: `label_channels` (ids accepted: 0..label_channels-1), `instance` (whether
    instance maps are read), `use_vae`, `z_dim`, `dtype`, `num_up` (the output is
    2**num_up times the initial map), `default_size` (H, W) of the training crop.
    """

    #: fraction of boundary pixels above which a level uses the dense path
    sparse_threshold: float = 0.55
    #: levels with fewer pixels (all images of the batch) are always dense
    min_sparse_pixels: int = 2048

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
        self.V = self.label_channels * (2 if self.instance else 1)
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
        names = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]
        if self.num_upsampling_layers == "most":
            names.append("up_4")
        self.block_names = names
        self.blocks = nn.ModuleList()
        more = self.num_upsampling_layers in ("more", "most")
        h, w = self.sh, self.sw
        for n, up in zip(names, [False, True, more, True, True, True, True, True]):
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
        h, w = size
        m = 2 ** self.num_up
        if h % m or w % m or h < m or w < m:
            raise SpadeganError(f"output size {w}x{h} must be a positive multiple of {m} in both "
                                f"directions (the generator upsamples {self.num_up} times)")
        if self.use_vae and (h, w) != self.default_size:
            raise SpadeganError(f"this VAE model's fc layer fixes the output at "
                                f"{self.default_size[1]}x{self.default_size[0]}; got {w}x{h}")
        return h, w

    # ---- the forward pass ------------------------------------------------------------
    def codes(self, label: torch.Tensor, instance: torch.Tensor | None) -> torch.Tensor:
        """(B,H,W) class ids (+ instance ids) -> (B,H,W) codes label + L * edge."""
        label = label.long()
        if label.dim() == 4:
            label = label[:, 0]
        if not self.instance:
            return label
        if instance is None:
            raise SpadeganError("this model needs an instance map (trained without --no_instance)")
        if instance.dim() == 4:
            instance = instance[:, 0]
        return label + self.label_channels * instance_edges(instance).long()

    def forward(self, label: torch.Tensor, instance: torch.Tensor | None = None,
                z: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        h_out, w_out = self.output_size(size)
        code = self.codes(label.to(self.device), None if instance is None else instance.to(self.device))
        b = code.shape[0]
        export = self.dense_only
        levels: dict[tuple[int, int], _Level] = {}

        def level(h: int, w: int) -> _Level:
            if (h, w) not in levels:
                levels[(h, w)] = _Level(resize_nearest(code, (h, w)), self.V)
            return levels[(h, w)]

        h, w = h_out // 2 ** self.num_up, w_out // 2 ** self.num_up
        if self.use_vae:
            if z is None:
                z = torch.randn(b, self.z_dim, device=self.device)
            x = F.linear(z.to(self.device, torch.float32), self.fc_w, self.fc_b)
            x = x.view(b, 16 * self.ngf, h, w).permute(0, 2, 3, 1).contiguous()
        else:
            lv = level(h, w)
            codes = lv.window_codes(None, 1)
            idx = codes + (torch.arange(9, device=codes.device) * (self.V + 1))[None, :]
            if export:
                x = F.embedding(idx[:, 0], self.fc_emb)
                for i in range(1, 9):
                    x = x + F.embedding(idx[:, i], self.fc_emb)
            else:
                x = F.embedding_bag(idx, self.fc_emb, mode="sum")
            x = (x + self.fc_b).view(b, h, w, -1)

        thr, mp = self.sparse_threshold, self.min_sparse_pixels
        more = self.num_upsampling_layers in ("more", "most")
        plan = [False, True, more, True, True, True, True, True]  # upsample before each block
        for blk, up in zip(self.blocks, plan):
            if up:
                h, w = 2 * h, 2 * w
            x = blk(x, up, level(h, w), thr, mp, export)
        x = F.leaky_relu_(x, _SLOPE)
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
    more = G.num_upsampling_layers in ("more", "most")
    plan = [False, True, more, True, True, True, True, True]
    names = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3", "up_4"]
    for n, up in zip(names, plan):
        if not hasattr(G, n):
            continue
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
