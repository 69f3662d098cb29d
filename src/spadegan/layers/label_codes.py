"""Label maps as one integer code per pixel, and convolutions of their one-hot form by lookup.

The networks read a label map as a one-hot tensor: `label_channels` class channels (the
dontcare class included) and, for models with instance maps, one channel of instance
edges. The same information fits in one integer per pixel, its *code*
`class + label_channels * edge`, one of V = label_channels (x 2 with edges) values.

A stride-1 'same' convolution of a one-hot map is then a sum of lookups: at every pixel,
the sum over the k x k taps of the weight column of the code found at that tap
(`code_embedding`, `label_conv`), with a zero row for taps in the zero padding. And where
all codes in reach of a pixel are equal and inside the image, the result is a constant of
that code. `CodeLevel` holds the code map at one resolution with the index arithmetic this
needs (windows, the pixels near a code boundary); `LabelCodes` holds the full-resolution
codes of a batch and one `CodeLevel` per resolution, built once and shared by every layer
working at that size. Everything here is differentiable with respect to the weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..errors import SpadeganError


def code_embedding(weight: torch.Tensor, label_channels: int, instance: bool) -> torch.Tensor:
    """Per-tap lookup table of a conv over [one-hot(label_channels), edge] input channels.

    `weight`: (out, label_channels [+1 edge], k, k). Returns (k*k, V + 1, out) with
    V = label_channels * (2 if instance else 1) codes; row `code` of tap t is the input
    column that a pixel of that code contributes through tap t (tap = dy * k + dx), and
    the extra last row of each tap is zero, for taps that fall in the zero padding.
    """
    out, _, k, _ = weight.shape
    taps = weight.permute(2, 3, 1, 0).reshape(k * k, -1, out)
    cls = taps[:, :label_channels]
    rows = [cls]
    if instance:
        rows.append(cls + taps[:, label_channels:label_channels + 1])  # codes with the edge bit
    rows.append(weight.new_zeros(k * k, 1, out))
    return torch.cat(rows, dim=1)


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """(..., H, W) instance ids -> (..., H, W) uint8, 1 where a 4-neighbour has another id.

    Written with pads instead of in-place slice updates, so that it also traces to ONNX
    (the synthesis engine computes its codes with it).
    """
    dx = (instance[..., :, 1:] != instance[..., :, :-1]).to(torch.uint8)
    dy = (instance[..., 1:, :] != instance[..., :-1, :]).to(torch.uint8)
    e = torch.maximum(F.pad(dx, (1, 0)), F.pad(dx, (0, 1)))
    return torch.maximum(e, torch.maximum(F.pad(dy, (0, 0, 1, 0)), F.pad(dy, (0, 0, 0, 1))))


def resize_nearest(code: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) code map -> (B, h, w), picking the pixels F.interpolate(nearest) picks.

    Codes are class ids (+ an edge bit): small integers, exact in float32 (which also
    traces to ONNX's Resize)."""
    if tuple(code.shape[1:]) == tuple(size):
        return code
    return F.interpolate(code[:, None].float(), size=size, mode="nearest")[:, 0].long()


#: the two SPADE implementations a network is built with (`SPADE`, `SPADEResnetBlock`,
#: `networks.SPADEGenerator`): the dense reference reads the one-hot semantics tensor, the sparse
#: one reads `LabelCodes`
SPADE_IMPLS = ("dense", "sparse")


def use_sparse_spade(opt: Any, device: torch.device) -> bool:
    """Whether the SPADE generator of `opt` runs sparse on `device` (--spade_impl; auto:
    sparse on the CPU, where it measured fastest, dense on CUDA, where cuDNN's dense
    convolutions have not been measured against it). Image labels (--label_nc 0) have no
    codes: always dense."""
    impl = getattr(opt, "spade_impl", "auto")
    if opt.netG != "spade" or impl == "dense" or getattr(opt, "label_nc", None) == 0:
        return False
    return impl == "sparse" or torch.device(device).type == "cpu"


def spade_impl_for(opt: Any, device: torch.device) -> str:
    """"sparse" or "dense": the implementation --spade_impl asks for on `device` (`use_sparse_spade`)."""
    return "sparse" if use_sparse_spade(opt, device) else "dense"


def check_spade_impl(impl: str) -> str:
    if impl not in SPADE_IMPLS:
        raise SpadeganError(f"a SPADE implementation is one of {', '.join(SPADE_IMPLS)}, not {impl!r}")
    return impl


def check_label_input(impl: str, seg: Any, where: str) -> None:
    """Raise a SpadeganError when `seg` is not the input form the implementation `impl` reads:
    `LabelCodes` for "sparse", a tensor for "dense" (no silent switch between the two)."""
    if impl == "sparse" and not isinstance(seg, LabelCodes):
        raise SpadeganError(f"{where} runs the sparse SPADE (impl='sparse'), which reads the label map as "
                            f"LabelCodes (LabelCodes.from_label), not {type(seg).__name__}; the dense SPADE "
                            "(impl='dense') reads the one-hot semantics tensor")
    if impl == "dense" and isinstance(seg, LabelCodes):
        raise SpadeganError(f"{where} runs the dense SPADE (impl='dense'), which reads the one-hot semantics "
                            "tensor (codes.semantics()), not LabelCodes; the sparse SPADE (impl='sparse') reads codes")


def check_label_ids(label: torch.Tensor, opt: Any, where: str = "label map") -> None:
    """Raise the Synthesizer's SpadeganError (`Synthesizer.label_ids`) when the (..., H, W)
    class ids (dontcare already mapped to label_nc) hold ids the model does not know."""
    nc = opt.label_nc + int(opt.contain_dontcare_label)
    if not label.numel() or (int(label.min()) >= 0 and int(label.max()) < nc):
        return
    vals, counts = torch.unique(label[(label < 0) | (label >= nc)], return_counts=True)
    listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(vals[:5], counts[:5]))
    if opt.contain_dontcare_label:
        top = opt.label_nc if getattr(opt, "dataset_mode", None) == "ade20k" else opt.label_nc - 1
        rule = f"0..{top} and 255 (dontcare)"
    else:
        rule = f"0..{nc - 1} (label_nc={opt.label_nc}, no dontcare class)"
    raise SpadeganError(f"{where}: label id(s) {listed} not known to this model, which accepts "
                        f"{rule}; use the ids of the dataset it was trained on")


class CodeLevel:
    """The code map of a batch at one resolution and the index arithmetic its layers share.

    Code V (one past the last) marks the zero padding. Index results are cached, so the
    layers of one resolution compute them once per forward pass.
    """

    def __init__(self, code: torch.Tensor, num_codes: int):
        self.code = code  # (B, H, W) long
        self.B, self.H, self.W = code.shape
        self.V = num_codes
        self._padded: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
        self._boundary: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._plans: dict[tuple, Any] = {}

    @property
    def n(self) -> int:
        return self.B * self.H * self.W

    def padded(self, pw: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(flat code map padded by pw with code V, tap offsets (k*k,), padded width)."""
        if pw not in self._padded:
            cp = F.pad(self.code, (pw, pw, pw, pw), value=self.V)
            wp = self.W + 2 * pw
            k = 2 * pw + 1
            dy, dx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
            offs = (dy * wp + dx).reshape(-1).to(self.code.device)
            self._padded[pw] = (cp.reshape(-1), offs, wp)
        return self._padded[pw]

    def window_base(self, flat: torch.Tensor | None, pw: int) -> torch.Tensor:
        """Flat padded index of the top-left tap of each pixel's window (all pixels if None)."""
        hp, wp = self.H + 2 * pw, self.W + 2 * pw
        dev = self.code.device
        if flat is None:
            b = torch.arange(self.B, device=dev).view(-1, 1, 1) * (hp * wp)
            y = torch.arange(self.H, device=dev).view(1, -1, 1) * wp
            x = torch.arange(self.W, device=dev).view(1, 1, -1)
            return (b + y + x).reshape(-1)
        b, rem = flat // (self.H * self.W), flat % (self.H * self.W)
        return b * (hp * wp) + (rem // self.W) * wp + rem % self.W

    def window_codes(self, flat: torch.Tensor | None, pw: int) -> torch.Tensor:
        """(Q, k*k) codes of each pixel's window, tap-major (tap = dy * k + dx)."""
        cp, offs, _ = self.padded(pw)
        return cp[self.window_base(flat, pw)[:, None] + offs[None, :]]

    def window_rows(self, flat: torch.Tensor | None, pw: int) -> torch.Tensor:
        """(Q, k*k) row of each tap of each pixel's window in a per-tap lookup table of
        k*k x (V + 1) rows (`code_embedding` flattened, tap-major)."""
        codes = self.window_codes(flat, pw)
        return codes + torch.arange(codes.shape[1], device=codes.device)[None, :] * (self.V + 1)

    def nonuniform(self, r: int) -> torch.Tensor:
        """(B, H, W) bool: another code, or the zero padding, within Chebyshev radius r."""
        if r == 0:
            return torch.zeros((self.B, self.H, self.W), dtype=torch.bool, device=self.code.device)
        c = self.code[:, None].float()  # codes are small integers: exact in float32
        hi = F.max_pool2d(c, 2 * r + 1, 1, r)
        lo = -F.max_pool2d(-c, 2 * r + 1, 1, r)
        m = (hi != lo)[:, 0]
        m[:, :r] = True
        m[:, -r:] = True
        m[:, :, :r] = True
        m[:, :, -r:] = True
        return m

    def boundary(self, pw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, Q): flat ids of the pixels whose k x k conv of the hidden map, and whose
        hidden vector (a k x k conv of the one-hot map), is not a constant of their code.

        The hidden vector at q reads the codes within pw of q; the conv of the hidden map
        at p reads hidden vectors within pw of p, hence codes within 2 pw.
        """
        if pw not in self._boundary:
            p = self.nonuniform(2 * pw).reshape(-1).nonzero().squeeze(1)
            q = self.nonuniform(pw).reshape(-1).nonzero().squeeze(1)
            self._boundary[pw] = (p, q)
        return self._boundary[pw]

    def boundary_fraction(self, pw: int) -> float:
        return self.boundary(pw)[0].numel() / max(1, self.n)

    def const_rows(self, pw: int, groups: int) -> torch.Tensor:
        """Flat padded map (as `padded(pw)`) of each position's row of a constants table of
        `groups` x V rows (the code, offset by its image's group), `groups * V` in the padding."""
        cp, _, _ = self.padded(pw)
        if groups == 1:
            return cp
        group = torch.arange(cp.numel(), device=cp.device) // ((self.H + 2 * pw) * (self.W + 2 * pw))
        return torch.where(cp == self.V, groups * self.V, cp + group * self.V)

    def hidden_windows(self, pw: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct windows (constants-table rows within pw) of the pixels q of
        `boundary(pw)`: the index in q of the first pixel of each, and each q pixel's window
        id. Their count is the number of distinct hidden vectors in the band (cached)."""
        key = ("windows", pw, groups)
        if key not in self._plans:
            _, q = self.boundary(pw)
            _, offs, _ = self.padded(pw)
            windows = self.const_rows(pw, groups)[self.window_base(q, pw)[:, None] + offs[None, :]]
            self._plans[key] = unique_rows(windows)
        return self._plans[key]

    def band_plan(self, pw: int, groups: int) -> "BandPlan":
        """The index arithmetic of a k x k conv (k = 2 pw + 1) of a hidden map that is a
        k x k conv of the codes (SPADE's gamma and beta of its `mlp_shared`), for a constants
        table of `groups` x V rows; cached (it depends on the codes only).

        A hidden vector depends only on the constants-table rows in its window, so the
        band's pixels q with equal windows share one hidden vector (`hidden_pixels`: one pixel
        per distinct window); and an output pixel of the band depends only on which hidden
        rows its taps read, so pixels with equal tap rows share one output row (`bags`).
        Along a boundary the same few windows repeat: there are several times fewer distinct
        rows than pixels.
        """
        key = (pw, groups)
        if key not in self._plans:
            self._plans[key] = self._make_band_plan(pw, groups)
        return self._plans[key]

    def _make_band_plan(self, pw: int, groups: int) -> "BandPlan":
        consts = groups * self.V
        crow = self.const_rows(pw, groups)
        _, offs, wp = self.padded(pw)
        centre = pw * wp + pw
        rows = crow[self.window_base(None, pw) + centre]  # each pixel's constant row
        p, q = self.boundary(pw)
        if not p.numel():
            empty = rows.new_zeros(0)
            return BandPlan(rows, empty, empty, rows.new_zeros(0, offs.numel()))
        q_first, q_inv = self.hidden_windows(pw, groups)
        # hidden row of every padded position: its constant (consts: padding), or past
        # consts + 1 the distinct window of a q pixel
        hrow = crow.clone()
        hrow[self.window_base(q, pw) + centre] = consts + 1 + q_inv
        taps_read = hrow[self.window_base(p, pw)[:, None] + offs[None, :]]  # (P, T)
        p_first, p_inv = unique_rows(taps_read)
        taps_read = taps_read[p_first]
        # per-tap table rows: [the U constants read | the Qu hidden windows | a zero row]
        present = torch.zeros(consts + 1, dtype=torch.bool, device=p.device)
        present[taps_read[taps_read < consts]] = True
        used = present[:consts].nonzero().squeeze(1)
        nu, nq = used.numel(), q_first.numel()
        compact = torch.full((consts + 1 + nq,), nu + nq, dtype=torch.long, device=p.device)
        compact[used] = torch.arange(nu, device=p.device)
        compact[consts + 1:] = torch.arange(nu, nu + nq, device=p.device)
        taps = torch.arange(offs.numel(), device=p.device)
        bags = compact[taps_read] * offs.numel() + taps  # row r of tap t: r * T + t
        rows = rows.index_put((p,), consts + p_inv)
        return BandPlan(rows, q[q_first], used, bags)


    def row_sums(self, pw: int, groups: int) -> "RowSums | None":
        """How to sum a per-pixel map into the rows of `band_plan(pw, groups).rows` its pixels
        read (the backward of that gather), or None where the constants' rows are too many
        per image for the one-hot product (then a scatter does it). Cached."""
        key = ("sums", pw, groups)
        if key not in self._plans:
            plan = self.band_plan(pw, groups)
            self._plans[key] = self._make_row_sums(plan.rows, groups * self.V, plan.bags.shape[0])
        return self._plans[key]

    def _make_row_sums(self, rows: torch.Tensor, consts: int, band_rows: int) -> "RowSums | None":
        hw, dev = self.H * self.W, rows.device
        image = torch.arange(self.B, device=dev).repeat_interleave(hw)
        const = rows < consts
        keys, local = torch.unique(image[const] * consts + rows[const], return_inverse=True)
        key_image = keys // consts
        per_image = torch.bincount(key_image, minlength=self.B)
        k = int(per_image.max()) if keys.numel() else 0
        if k > ROW_SUMS_MAX_ROWS or self.n * k > ROW_SUMS_MAX_ELEMENTS:
            return None
        start = torch.cumsum(per_image, 0) - per_image  # each image's first key
        column = local - start[image[const]]  # the pixel's column among its image's rows
        one_hot = torch.zeros(self.B, hw, max(k, 1), device=dev)
        one_hot.view(-1, max(k, 1))[const.nonzero().squeeze(1), column] = 1.0
        # unused columns add into one row past the table's (consts + band_rows) rows
        table_rows = torch.full((self.B, max(k, 1)), consts + band_rows, dtype=torch.long, device=dev)
        table_rows[key_image, torch.arange(keys.numel(), device=dev) - start[key_image]] = keys % consts
        band = (~const).nonzero().squeeze(1)
        return RowSums(one_hot, table_rows, band, rows[band])


#: the one-hot product sums the constants' rows only where each image reads at most this many
#: (beyond, its K x HW multiply-adds per channel cost more than a scatter) ...
ROW_SUMS_MAX_ROWS = 32
#: ... and its one-hot matrix (B x HW x K) has at most this many elements
ROW_SUMS_MAX_ELEMENTS = 1 << 25


class RowSums(NamedTuple):
    """See `CodeLevel.row_sums`: sum_n m[b, c, n] into row rows[b, n] for a (B, C, HW) map m:
    the constants' rows of image b by m[b] @ one_hot[b] (B x K columns, written to
    `table_rows`), the band's rows (each read by a few pixels) by index_add."""
    one_hot: torch.Tensor  # (B, HW, K) float32
    table_rows: torch.Tensor  # (B, K) the table row of each column; unused ones: one past the table
    band_pixels: torch.Tensor  # (P,) flat ids (in B x HW) of the pixels that read band rows
    band_rows: torch.Tensor  # (P,) their rows


class BandPlan(NamedTuple):
    """See `CodeLevel.band_plan`. Output rows: [the constants table | the band's R rows]."""
    rows: torch.Tensor  # (N,) each pixel's output row
    hidden_pixels: torch.Tensor  # (Qu,) one pixel per distinct hidden vector of the band
    const_rows: torch.Tensor  # (U,) the constants-table rows the band's taps read
    bags: torch.Tensor  # (R, T) rows of the per-tap table ((U + Qu + 1) x T, row-major)


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) integers >= 0 -> (first, inverse): the index of the first of each distinct
    row (in the order of their ids) and every row's id (0 .. D - 1). One 1-D `unique` per
    column, on the ids so far combined with that column, so nothing overflows."""
    n = rows.shape[0]
    ids = rows.new_zeros(n)
    for col in rows.t():
        _, ids = torch.unique(ids * (int(col.max()) + 1) + col, return_inverse=True)
    count = int(ids.max()) + 1 if n else 0
    first = torch.full((count,), n, dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, ids, torch.arange(n, device=rows.device), reduce="amin")
    return first, ids


class LabelCodes:
    """The codes of a batch of label maps, with one shared `CodeLevel` per resolution.

    Passed to the generator in place of the one-hot semantics tensor to select the
    lookup-based (sparse) SPADE implementation; `semantics()` gives the one-hot tensor
    itself (for the discriminator), built once.
    """

    def __init__(self, code: torch.Tensor, label_channels: int, instance: bool,
                 noise: torch.Tensor | None = None):
        self.code = code.long()
        self.label_channels = label_channels
        self.instance = instance
        self.V = label_channels * (2 if instance else 1)
        #: (B, label_channels, z) 3D noise: the vector every pixel of class c in image b gets
        self.noise = noise
        self._levels: dict[tuple[int, int], CodeLevel] = {}
        self._semantics: torch.Tensor | None = None

    @classmethod
    def from_label(cls, label: torch.Tensor, instance: torch.Tensor | None, opt: Any,
                   validate: bool = True) -> "LabelCodes":
        """(B,[1,]H,W) class ids (dontcare already mapped) and instance ids -> LabelCodes.

        `opt` needs label_nc, contain_dontcare_label and no_instance. Ids the model does not
        know raise `check_label_ids`' error; `validate=False` skips that check (a traced graph
        for export cannot raise data-dependent errors).
        """
        if label.dim() == 4:
            label = label[:, 0]
        label = label.long()
        nc = opt.label_nc + int(opt.contain_dontcare_label)
        if validate:
            check_label_ids(label, opt)
        with_instance = not opt.no_instance
        if with_instance:
            if instance is None:
                raise SpadeganError("this model needs an instance map (trained without --no_instance)")
            if instance.dim() == 4:
                instance = instance[:, 0]
            label = label + nc * instance_edges(instance).long()
        return cls(label, nc, with_instance)

    def with_noise(self, noise: torch.Tensor) -> "LabelCodes":
        """The same codes with 3D noise: `noise` (B, z) per image, or (B, label_channels, z)
        per image and class; the noise channels follow the semantics channels."""
        b = self.code.shape[0]
        if noise.dim() == 2:
            noise = noise[:, None, :].expand(b, self.label_channels, noise.shape[1])
        if noise.dim() != 3 or noise.shape[:2] != (b, self.label_channels):
            raise SpadeganError(f"3D noise must be (B, z_dim) or (B, {self.label_channels}, z_dim) for "
                                f"{b} label maps, got {tuple(noise.shape)}")
        new = LabelCodes(self.code, self.label_channels, self.instance, noise.to(self.device))
        new._levels = self._levels  # the index arithmetic does not depend on the noise
        return new

    @property
    def noise_nc(self) -> int:
        return 0 if self.noise is None else self.noise.shape[2]

    def code_noise(self) -> torch.Tensor | None:
        """(B, V + 1, z): the noise per code (a code's class decides it; padding gets zeros)."""
        if self.noise is None:
            return None
        per_code = self.noise.repeat(1, 2, 1) if self.instance else self.noise
        return torch.cat([per_code, per_code.new_zeros(per_code.shape[0], 1, per_code.shape[2])], 1)

    @property
    def shape(self) -> torch.Size:
        return self.code.shape

    @property
    def device(self) -> torch.device:
        return self.code.device

    @property
    def one_hot_nc(self) -> int:
        """The one-hot channels: the classes (dontcare included) and the instance edge."""
        return self.label_channels + int(self.instance)

    @property
    def semantic_nc(self) -> int:
        """The semantics tensor's channels: the one-hot channels and the 3D noise."""
        return self.one_hot_nc + self.noise_nc

    def size(self, dim: int) -> int:
        """The semantics tensor's size along `dim` (so code written for it keeps working)."""
        b, h, w = self.code.shape
        return (b, self.semantic_nc, h, w)[dim]

    def at(self, h: int, w: int) -> CodeLevel:
        """The codes resized (nearest, as F.interpolate) to h x w."""
        key = (int(h), int(w))
        if key not in self._levels:
            self._levels[key] = CodeLevel(resize_nearest(self.code, key), self.V)
        return self._levels[key]

    def semantics(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The one-hot (+ instance edge) (+ noise) tensor (B, semantic_nc, H, W) the dense
        networks read."""
        if self._semantics is None or self._semantics.dtype != dtype:
            L = self.label_channels
            b, h, w = self.code.shape
            sem = torch.zeros(b, L + int(self.instance), h, w, dtype=dtype, device=self.device)
            sem.scatter_(1, (self.code % L)[:, None], 1.0)
            if self.instance:
                sem[:, L] = (self.code >= L).to(dtype)
            if self.noise is not None:
                sem = torch.cat([sem, torch.einsum("blz,blhw->bzhw", self.noise.to(dtype), sem[:, :L])], 1)
            self._semantics = sem
        return self._semantics


def tap_tables(weight: torch.Tensor, label_channels: int, instance: bool,
               code_noise: torch.Tensor | None = None) -> torch.Tensor:
    """(G, T, V + 1, out) per-tap lookup tables of a conv over the semantics channels.

    Without noise G = 1 (`code_embedding`). With 3D noise (`code_noise` (B, V + 1, z), the
    noise channels last in `weight`), G = B: each image's tables add the noise term of its
    codes, W_t^noise . z(b, code), which is what a code's pixels feed that tap.
    """
    nlab = label_channels + int(instance)
    table = code_embedding(weight[:, :nlab], label_channels, instance)[None]
    if code_noise is None:
        return table
    w_noise = weight[:, nlab:].permute(2, 3, 0, 1).reshape(-1, weight.shape[0], code_noise.shape[2])
    return table + torch.einsum("toz,bvz->btvo", w_noise, code_noise.to(weight.dtype))


def table_group(level: CodeLevel, flat: torch.Tensor | None, groups: int) -> torch.Tensor | None:
    """The image (table group) of each pixel in `flat` (all pixels if None); None if G = 1."""
    if groups == 1:
        return None
    hw = level.H * level.W
    if flat is None:
        return torch.arange(level.B, device=level.code.device).repeat_interleave(hw)
    return flat // hw


def label_conv(level: CodeLevel, weight: torch.Tensor, bias: torch.Tensor | None,
               label_channels: int, instance: bool, flat: torch.Tensor | None = None,
               code_noise: torch.Tensor | None = None) -> torch.Tensor:
    """A stride-1, zero-padded k x k conv of the level's semantics map, by lookups: (N, out).

    Rows are the pixels `flat` (flat ids into the level), or all pixels in (B, H, W) order.
    Equal to `F.conv2d(semantics, weight, bias, padding=k // 2)` at those pixels.
    """
    k = weight.shape[-1]
    tables = tap_tables(weight, label_channels, instance, code_noise)  # (G, T, V + 1, out)
    idx = level.window_rows(flat, k // 2)
    t = idx.shape[1]
    group = table_group(level, flat, tables.shape[0])
    if group is not None:
        idx = idx + group[:, None] * (t * (level.V + 1))
    out = F.embedding_bag(idx, tables.reshape(-1, tables.shape[-1]), mode="sum")
    return out if bias is None else out + bias
