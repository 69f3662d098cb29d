"""Stroke previews: re-synthesizing an edited label map from a full pass's cached activations.

A paint stroke changes a few percent of the label map, but SPADE's generator starts at 8x8
and 16x16, where a few 3x3 convolutions span the whole map, so every output pixel changes a
little: an exact incremental pass would recompute everything. `IncrementalEngine` makes the
approximation SIGE makes (Li et al., NeurIPS 2022): it keeps the activations of the last full
pass (`EngineState`: each block's input map, the conv_img input, the output image, and for
instance-norm models the normalisation statistics) and, for a new label map,

* finds the changed pixels' bounding box (class ids and instance edges: the codes);
* per block (resolution h x w), skips the block when neither its codes nor its input changed
  (a stroke that misses every pixel the 8x8 or 16x16 nearest resize samples leaves those
  levels exactly as they were), else recomputes a box = the changed box mapped to that
  resolution, grown by the level's margin (`margins`), from input crops with a halo (2 for the
  block's two 3x3 convolutions, twice the SPADE kernel's reach for gamma/beta) read from the
  cache with the lower level's new box pasted in; the crops' zero-padded borders are cut off
  again, so inside the box the values are those of the full network on the new inputs;
* reuses the cache everywhere else: changes the lower levels made outside a level's box are
  dropped (the approximation; its error is measured in benchmarks/bench_paint_strokes.py),
  and instance-norm statistics are the cached ones (batch norm, the official configs, has no
  per-image statistics);
* estimates the box's cost against a full pass from the blocks' multiply-adds per pixel and
  declines (`preview` returns None with the reason) above `max_cost`, so large edits get
  a full pass instead.

The full pass is the engine's own `forward` (with its `record` hook), so its image is the
engine's exactly; callers (`synthesize.session`) use it for the final image and to refresh
the cache, which is why previews never accumulate error: each is computed from the last
full pass, not from the previous preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import SpadeganError
from ..layers.label_codes import CodeLevel, LabelCodes
from ..networks.generator import block_plan
from .engine import _EPS, _SLOPE, SynthesisEngine, _EngineBlock, _lookup_sum, _modulate, _upsample_nhwc

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), in one level's pixels

#: default margin (in the level's own pixels) by which the changed box grows at each block,
#: keyed by the block's output size relative to the full output (1 = full size, 2 = half...);
#: a negative margin reuses that level's cached output in previews. The levels at 1/16 of
#: the output and below (8x8 and 16x16 at 256 px) are reused: recomputing them (margin 0)
#: measured 0.2 dB better previews on the built-in model for 1 % strokes (53.0 vs 52.8 dB,
#: 12 scenes) and made 1 % previews on the ADE20K configuration about 1.5x slower (2.7x vs
#: 4.2x faster than the full pass; benchmarks/README.md, Paint strokes)
DEFAULT_MARGINS = {1: 1, 2: 1, 4: 0, 8: 0, 16: -1, 32: -1, 64: -1, 128: -1}
#: previews whose estimated cost exceeds this fraction of a full pass are declined: the
#: crops' overheads make a preview of about 0.4 as slow as a full pass (measured, 2 threads)
DEFAULT_MAX_COST = 0.3


@dataclass
class EngineState:
    """What a full pass leaves for previews (one image, batch 1)."""

    codes: LabelCodes
    size: tuple[int, int]
    inputs: list[torch.Tensor]  # each block's input map (B, h, w, C), NHWC
    stats: list[tuple[torch.Tensor, ...] | None]  # instance norm: (mean_x, rstd_x, mean_dx, rstd_dx)
    final: torch.Tensor  # the conv_img input (after the last leaky ReLU)
    image: torch.Tensor  # (1, 3, H, W) float32 in [-1, 1]
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        tensors = self.inputs + [self.final, self.image, self.codes.code]
        tensors += [t for s in self.stats if s is not None for t in s]
        self.nbytes = sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class PreviewInfo:
    """How a preview was made: the changed box at full size, the blocks' boxes (None: block
    reused whole) and the estimated cost as a fraction of a full pass."""

    changed: Box | None
    boxes: list[Box | None]
    cost: float


def _grow(box: Box, m: int, h: int, w: int) -> Box:
    y0, y1, x0, x1 = box
    return max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)


def _bbox(mask: torch.Tensor) -> Box | None:
    """(B, H, W) bool -> the bounding box of its True pixels over the batch, or None."""
    rows = mask.any(dim=2).any(dim=0).nonzero()
    if rows.numel() == 0:
        return None
    cols = mask.any(dim=1).any(dim=0).nonzero()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _crop(t: torch.Tensor, box: Box) -> torch.Tensor:
    y0, y1, x0, x1 = box
    return t[:, y0:y1, x0:x1]


def _rel(inner: Box, outer: Box) -> Box:
    return inner[0] - outer[0], inner[1] - outer[0], inner[2] - outer[2], inner[3] - outer[2]


def _half(box: Box) -> Box:
    return box[0] // 2, box[1] // 2, box[2] // 2, box[3] // 2


def _read(cached: torch.Tensor, region: Box, overlay: tuple[Box, torch.Tensor] | None) -> torch.Tensor:
    """The cached map's `region` with the overlay (box, values) pasted where they meet."""
    out = _crop(cached, region).clone()
    if overlay is not None:
        (oy0, oy1, ox0, ox1), values = overlay
        y0, y1 = max(region[0], oy0), min(region[1], oy1)
        x0, x1 = max(region[2], ox0), min(region[3], ox1)
        if y0 < y1 and x0 < x1:
            out[:, y0 - region[0]:y1 - region[0], x0 - region[2]:x1 - region[2]] = \
                values[:, y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0]
    return out


class IncrementalEngine:
    """Full passes that keep an `EngineState`, and previews from one (module docstring).

    `margins`: {output-size divisor: pixels} (see DEFAULT_MARGINS); `max_cost`: previews
    estimated above this fraction of a full pass are declined.
    """

    def __init__(self, engine: SynthesisEngine, margins: dict[int, int] | None = None,
                 max_cost: float = DEFAULT_MAX_COST, crop_threshold: float = float("inf")):
        if engine.dense_only:
            raise SpadeganError("stroke previews need the engine in its normal (not export) mode")
        if not 0.0 <= max_cost <= 1.0:
            raise SpadeganError(f"max_cost must be within [0, 1], not {max_cost!r}")
        self.engine = engine
        self.margins = dict(DEFAULT_MARGINS if margins is None else margins)
        self.max_cost = max_cost
        #: `layers.spade.runs_dense`'s threshold for the crops' gamma/beta: a crop is small, so
        #: the dense rule's fixed-cost term would always pick convolutions of the whole crop
        self.crop_threshold = crop_threshold
        self.plan = block_plan(engine.num_upsampling_layers)
        # multiply-adds per output pixel of each block (the convolutions; gamma/beta counted
        # once per SPADE since most of their pixels are lookups)
        self._px_cost = [self._block_cost(b) for b in engine.blocks]

    @staticmethod
    def _block_cost(blk: _EngineBlock) -> float:
        def conv(c) -> float:
            return float(c.w.numel() if hasattr(c, "w") else c.u.numel() * 9 / 16)
        cost = conv(blk.conv_0) + conv(blk.conv_1)
        if blk.learned_shortcut:
            cost += blk.ws.numel()
        return cost + sum(c for c in blk.spades.channels) * 2 * NHIDDEN_COST

    # ---- the full pass -----------------------------------------------------------------
    def full(self, label: torch.Tensor, instance: torch.Tensor | None, z: torch.Tensor | None,
             size: tuple[int, int]) -> EngineState:
        """The engine's forward on one label map, keeping what previews need."""
        eng = self.engine
        if label.shape[0] != 1:
            raise SpadeganError(f"stroke previews keep one image per state, got a batch of {label.shape[0]}")
        record: list[torch.Tensor] = []
        with torch.inference_mode():
            image = eng(label, instance, z, size, record=record).float()
            # a copy: the codes would share the caller's tensor's memory, which it may paint into
            codes = eng.codes(label.to(eng.device).clone(), None if instance is None else instance.to(eng.device))
        inputs, stats = [], []
        k = 0
        for blk in eng.blocks:
            x = record[k]
            k += 1
            inputs.append(x)
            if blk.spades.kind == "instance":
                stats.append(_stats(x) + _stats(record[k]))
                k += 1
            else:
                stats.append(None)
        return EngineState(codes, tuple(size), inputs, stats, record[k], image)

    # ---- previews ----------------------------------------------------------------------
    def plan_boxes(self, state: EngineState, codes: LabelCodes) -> tuple[PreviewInfo, bool]:
        """The boxes a preview would recompute and its estimated cost; and whether the
        first layer's (8x8-ish) codes changed."""
        H, W = state.size
        changed = _bbox(codes.code != state.codes.code)
        if changed is None:
            return PreviewInfo(None, [None] * len(self.plan), 0.0), False
        eng = self.engine
        h, w = H // 2 ** eng.num_up, W // 2 ** eng.num_up
        fc_changed = (not eng.use_vae) and bool((codes.at(h, w).code != state.codes.at(h, w).code).any())
        dirty = fc_changed
        boxes: list[Box | None] = []
        cost = total = 0.0
        for px_cost, (_, up) in zip(self._px_cost, self.plan):
            if up:
                h, w = 2 * h, 2 * w
            total += px_cost * h * w
            div = H // h
            margin = self.margins.get(div, 1)
            level_changed = bool((codes.at(h, w).code != state.codes.at(h, w).code).any())
            if margin < 0 or not (dirty or level_changed):  # margin < 0: the level is reused
                boxes.append(None)
                continue
            dirty = True
            y0, y1, x0, x1 = changed
            box = (y0 // div, -(-y1 // div), x0 // div, -(-x1 // div))
            box = _grow(box, margin, h, w)
            if up:  # even-aligned, so the input crop is exactly half of it
                box = (box[0] // 2 * 2, min(h, -(-box[1] // 2) * 2), box[2] // 2 * 2, min(w, -(-box[3] // 2) * 2))
            boxes.append(box)
            r = _grow(box, 2, h, w)
            cost += px_cost * (r[1] - r[0]) * (r[3] - r[2])
        return PreviewInfo(changed, boxes, cost / total), fc_changed

    def preview(self, state: EngineState, label: torch.Tensor,
                instance: torch.Tensor | None = None) -> tuple[torch.Tensor | None, PreviewInfo]:
        """(image (1, 3, H, W) float32 in [-1, 1], how) for the new label map from `state`;
        image None when the estimated cost is above `max_cost` (the caller runs a full pass)."""
        eng = self.engine
        with torch.inference_mode():
            codes = eng.codes(label.to(eng.device), None if instance is None else instance.to(eng.device))
            if tuple(codes.shape) != tuple(state.codes.shape):
                raise SpadeganError(f"label map {tuple(codes.shape)} is not the size of the cached pass "
                                    f"{tuple(state.codes.shape)}: run a full pass")
            info, fc_changed = self.plan_boxes(state, codes)
            if info.changed is None:
                return state.image.clone(), info
            if info.cost > self.max_cost:
                return None, info
            return self._run(state, codes, info, fc_changed), info

    def _run(self, state: EngineState, codes: LabelCodes, info: PreviewInfo, fc_changed: bool) -> torch.Tensor:
        eng = self.engine
        H, W = state.size
        h, w = H // 2 ** eng.num_up, W // 2 ** eng.num_up
        # what changed in the current block's input: (box, values), None if nothing did
        overlay: tuple[Box, torch.Tensor] | None = None
        if fc_changed and info.boxes[0] is not None:  # the first layer is a cheap lookup: recompute it whole
            x = _lookup_sum(codes.at(h, w).window_rows(None, 1), eng.fc_emb, False)
            overlay = ((0, h, 0, w), (x + eng.fc_b).view(1, h, w, -1))
        for i, (blk, (_, up), box) in enumerate(zip(eng.blocks, self.plan, info.boxes)):
            if up:
                h, w = 2 * h, 2 * w
            if box is None:  # reused: the next block reads this block's cached output as it is
                overlay = None
                continue
            overlay = (box, self._block(blk, i, state, codes.at(h, w), overlay, box, up, h, w))
        return self._image(state, overlay)

    def _block(self, blk: _EngineBlock, i: int, state: EngineState, level: CodeLevel,
               overlay: tuple[Box, torch.Tensor] | None, box: Box, up: bool, h: int, w: int) -> torch.Tensor:
        """Block i's output on `box` from the cached input with `overlay` pasted in."""
        sp = blk.spades
        r = _grow(box, 2, h, w)  # the input the two 3x3 convolutions read
        rg = _grow(r, 2 * sp.pw, h, w)  # the codes gamma/beta read there
        crop_level = CodeLevel(_crop(level.code, rg).contiguous(), level.V)
        gbf = sp.gb_maps(crop_level, self.crop_threshold, False)
        gb = {j: gbf(j) for j in range(len(sp.channels))}

        def gb_at(j: int, region: Box) -> torch.Tensor:
            return _crop(gb[j], _rel(region, rg)).contiguous()

        stats = state.stats[i]

        def norm(j: int, t: torch.Tensor) -> torch.Tensor:
            if stats is None:
                return sp.normalize(j, t, {})
            mean, rstd = stats[2:] if j == 1 else stats[:2]
            return ((t.float() - mean) * rstd).to(sp.dtype)

        r_in, box_in = (_half(r), _half(box)) if up else (r, box)
        x = _read(state.inputs[i], r_in, overlay)
        xb = _crop(x, _rel(box_in, r_in)).contiguous()
        if blk.learned_shortcut:
            s = _modulate(norm(2, xb), gb_at(2, box), up)
            b, hh, ww, c = s.shape
            x_s = torch.mm(s.view(-1, c), blk.ws).view(b, hh, ww, -1)
        else:
            x_s = _upsample_nhwc(xb) if up else xb
        dx = F.leaky_relu_(_modulate(norm(0, x), gb_at(0, r), up), _SLOPE)
        dx = blk.conv_0(dx)
        r1 = _grow(box, 1, h, w)
        dx = _crop(dx, _rel(r1, r)).contiguous()
        dx = F.leaky_relu_(_modulate(norm(1, dx), gb_at(1, r1), False), _SLOPE)
        dx = _crop(blk.conv_1(dx), _rel(box, r1)).contiguous()
        if x_s.dtype == dx.dtype:
            return dx.add_(x_s)
        return x_s + dx

    def _image(self, state: EngineState, overlay: tuple[Box, torch.Tensor]) -> torch.Tensor:
        """conv_img around the last block's new box, pasted into the cached image."""
        eng = self.engine
        H, W = state.size
        box, values = overlay
        out_box = _grow(box, 1, H, W)
        r = _grow(out_box, 1, H, W)
        x = _read(state.final, r, (box, F.leaky_relu(values, _SLOPE)))
        y = F.conv2d(x.permute(0, 3, 1, 2), eng.w_img, eng.b_img, padding=1)
        y0, y1, x0, x1 = _rel(out_box, r)
        image = state.image.clone()
        image[:, :, out_box[0]:out_box[1], out_box[2]:out_box[3]] = torch.tanh(y[:, :, y0:y1, x0:x1].float())
        return image


#: gamma/beta's weight per SPADE channel counted in the cost estimate (hidden channels x taps
#: are mostly lookups; a fraction of the 128 x 9 dense multiply-adds)
NHIDDEN_COST = 128


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, rstd) of an NHWC map per image and channel, as the engine's instance norm computes them."""
    var, mean = torch.var_mean(x.float(), dim=(1, 2), keepdim=True, correction=0)
    return mean, torch.rsqrt(var + _EPS)


__all__ = ["IncrementalEngine", "EngineState", "PreviewInfo", "DEFAULT_MARGINS", "DEFAULT_MAX_COST"]
