"""Procedural landscapes: a seeded generator of (label map, photo-like image) pairs.

It makes a small, download-free stand-in for the outdoor scenes GauGAN users paint:
sky, clouds, mountain ridges with snow caps and rock, sea/lakes/ponds with sandy
shores, grass, tree clusters and flower patches (ids and colours in
``classes/landscapes.json``). Each scene also draws a global style (day, sunset, dusk,
night, winter, autumn) that recolours most classes, so one label layout has several
plausible photos: the task is multi-modal, as real semantic synthesis is.

Everything is vectorised numpy driven by a per-seed ``numpy.random.Generator`` (no
global RNG), so a seed always gives the same arrays. Speed comes from three choices:
textures are a few small random grids upsampled with a 4-tap cubic B-spline (all
octaves are summed on the small grid first), the image is kept channel-planar
(3, H, W) so per-pixel factors broadcast cheaply, and sparse objects (trees, rocks)
are drawn inside their bounding boxes only (speed: ``benchmarks/bench_landscapes.py``,
results in ``benchmarks/README.md``).

The same seed gives identical arrays on one machine and numpy version; float
summation order may differ elsewhere, which can flip a border pixel.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..errors import SpadeganError

__all__ = [
    "LANDSCAPE_CLASSES",
    "STYLES",
    "STYLE_WEIGHTS",
    "SKY", "CLOUD", "MOUNTAIN", "SNOW", "ROCK", "WATER", "SAND", "GRASS", "TREE", "FLOWERS",
    "generate_scene",
    "generate_batch",
    "make_landscapes",
    "main",
]

LANDSCAPE_CLASSES: list[str] = [
    "sky", "cloud", "mountain", "snow", "rock", "water", "sand", "grass", "tree", "flowers",
]
SKY, CLOUD, MOUNTAIN, SNOW, ROCK, WATER, SAND, GRASS, TREE, FLOWERS = range(10)

STYLES: tuple[str, ...] = ("day", "sunset", "dusk", "night", "winter", "autumn")
#: How often a seed draws each of :data:`STYLES`.
STYLE_WEIGHTS: tuple[float, ...] = (0.30, 0.15, 0.10, 0.10, 0.15, 0.20)
_STYLE_WEIGHTS = np.array(STYLE_WEIGHTS)

_F32 = np.float32


def _c(r: float, g: float, b: float) -> np.ndarray:
    """An sRGB 0..255 colour as a (3, 1, 1) float array that broadcasts over (3, H, W)."""
    return np.array([r, g, b], dtype=_F32).reshape(3, 1, 1) / 255.0


# Per-style colours, chosen by eye. "light" tints every lit ground surface, "haze" is
# what distant things fade into.
_PALETTES: dict[str, dict[str, np.ndarray]] = {
    "day": dict(
        sky_top=_c(55, 105, 195), sky_hor=_c(170, 200, 232), sun=_c(255, 250, 230), haze=_c(175, 198, 222),
        cloud=_c(252, 252, 254), cloud_shadow=_c(170, 178, 196), light=_c(255, 252, 245),
        mountain=_c(118, 108, 98), snow=_c(246, 248, 255), rock=_c(128, 124, 118),
        water=_c(25, 60, 100), sand=_c(222, 202, 152), grass=_c(80, 140, 40), grass2=_c(120, 150, 50),
        tree=_c(35, 80, 28), trunk=_c(70, 50, 35),
    ),
    "sunset": dict(
        sky_top=_c(60, 70, 140), sky_hor=_c(255, 155, 85), sun=_c(255, 205, 130), haze=_c(230, 150, 110),
        cloud=_c(255, 170, 125), cloud_shadow=_c(115, 80, 110), light=_c(255, 205, 160),
        mountain=_c(100, 72, 70), snow=_c(255, 215, 195), rock=_c(112, 92, 86),
        water=_c(35, 35, 65), sand=_c(215, 165, 120), grass=_c(90, 105, 35), grass2=_c(130, 110, 40),
        tree=_c(42, 52, 22), trunk=_c(50, 35, 25),
    ),
    "dusk": dict(
        sky_top=_c(28, 35, 85), sky_hor=_c(160, 125, 170), sun=_c(225, 165, 175), haze=_c(120, 105, 150),
        cloud=_c(150, 120, 160), cloud_shadow=_c(65, 58, 95), light=_c(175, 170, 210),
        mountain=_c(82, 76, 102), snow=_c(200, 200, 232), rock=_c(92, 92, 108),
        water=_c(25, 30, 62), sand=_c(165, 150, 150), grass=_c(60, 88, 58), grass2=_c(80, 92, 60),
        tree=_c(24, 40, 34), trunk=_c(38, 32, 38),
    ),
    "night": dict(
        sky_top=_c(4, 7, 20), sky_hor=_c(24, 36, 66), sun=_c(230, 235, 255), haze=_c(30, 42, 70),
        cloud=_c(62, 70, 95), cloud_shadow=_c(18, 22, 38), light=_c(150, 168, 215),
        mountain=_c(52, 58, 76), snow=_c(165, 180, 215), rock=_c(62, 66, 78),
        water=_c(8, 12, 30), sand=_c(100, 100, 112), grass=_c(38, 62, 56), grass2=_c(45, 60, 62),
        tree=_c(16, 32, 30), trunk=_c(20, 20, 26),
    ),
    "winter": dict(
        sky_top=_c(115, 145, 190), sky_hor=_c(215, 222, 232), sun=_c(255, 250, 240), haze=_c(210, 218, 230),
        cloud=_c(238, 240, 244), cloud_shadow=_c(168, 175, 188), light=_c(240, 245, 255),
        mountain=_c(108, 108, 114), snow=_c(248, 250, 255), rock=_c(104, 104, 110),
        water=_c(52, 72, 92), sand=_c(188, 182, 166), grass=_c(168, 160, 118), grass2=_c(205, 205, 195),
        tree=_c(30, 55, 45), trunk=_c(60, 50, 45),
    ),
    "autumn": dict(
        sky_top=_c(72, 118, 195), sky_hor=_c(200, 210, 222), sun=_c(255, 240, 210), haze=_c(200, 205, 210),
        cloud=_c(246, 243, 238), cloud_shadow=_c(162, 162, 172), light=_c(255, 240, 220),
        mountain=_c(122, 96, 76), snow=_c(245, 245, 250), rock=_c(122, 116, 108),
        water=_c(32, 58, 84), sand=_c(212, 186, 140), grass=_c(130, 135, 50), grass2=_c(160, 140, 60),
        tree=_c(190, 95, 25), trunk=_c(70, 50, 35),
    ),
}
# Autumn crowns vary tree by tree between these.
_AUTUMN_LEAVES = [_c(200, 90, 20), _c(218, 165, 35), _c(165, 42, 25), _c(125, 125, 30), _c(60, 90, 30)]
_FLOWER_COLORS = [_c(235, 60, 110), _c(250, 220, 60), _c(245, 245, 245), _c(150, 90, 210), _c(240, 120, 40)]


# ----------------------------------------------------------------------------- noise

@lru_cache(maxsize=256)
def _bspline_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (4, n_out) and weights (4, n_out) of cubic B-spline resampling.

    Output samples span control points 1..n_in-2 so all four taps stay in range.
    """
    t = (np.arange(n_out) + 0.5) / n_out * (n_in - 3) + 1.0
    i = np.floor(t).astype(np.intp)
    u = t - i
    w = np.stack([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3]) / 6.0
    idx, wts = np.stack([i - 1, i, i + 1, i + 2]), w.astype(_F32)
    idx.flags.writeable = wts.flags.writeable = False  # shared through the cache
    return idx, wts


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smoothly resample a small (gy, gx) grid to (h, w).

    einsum without ``optimize`` runs its own C loop, which on small shared machines
    beats both PIL's float resize and a BLAS matmul (whose threads fight each other).
    """
    iy, wy = _bspline_taps(h, grid.shape[0])
    ix, wx = _bspline_taps(w, grid.shape[1])
    rows = np.einsum("kh,khx->hx", wy, grid[iy])
    return np.einsum("kw,hkw->hw", wx, rows[:, ix])


def _fbm(rng: np.random.Generator, h: int, w: int, ny: float, nx: float, octaves: int = 3,
         gain: float = 0.5) -> np.ndarray:
    """Multi-octave value noise of shape (h, w), normalised to zero mean, unit std.

    ``ny`` x ``nx`` is the cell count of the coarsest octave; unequal counts stretch
    the features (more rows than columns = wide, flat blobs like clouds). The octaves
    are summed on the finest grid, so the full-size resample happens once.
    """
    gy = max(4, int(ny * 2 ** (octaves - 1)) + 3)
    gx = max(4, int(nx * 2 ** (octaves - 1)) + 3)
    acc = np.zeros((gy, gx), _F32)
    amp = 1.0
    for o in range(octaves):
        sy = max(4, int(ny * 2**o) + 3)
        sx = max(4, int(nx * 2**o) + 3)
        g = rng.random((sy, sx), dtype=_F32)
        acc += amp * (g if (sy, sx) == (gy, gx) else _upsample(g, gy, gx))
        amp *= gain
    out = _upsample(acc, h, w)
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _fbm1(rng: np.random.Generator, n: int, cells: int, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    """1-D multi-octave noise (zero mean, unit std) with linear interpolation.

    Linear segments leave kinks, which read as rocky ridges and bumpy shorelines.
    """
    xs = np.linspace(0.0, 1.0, n)
    out = np.zeros(n)
    amp = 1.0
    for o in range(octaves):
        k = cells * 2**o + 1
        out += amp * np.interp(xs, np.linspace(0.0, 1.0, k), rng.random(k))
        amp *= gain
    out -= out.mean()
    return (out / (out.std() + 1e-6)).astype(_F32)


def _smooth1(rng: np.random.Generator, n: int, cells: int, octaves: int = 2) -> np.ndarray:
    """Smooth 1-D noise (zero mean, unit std): B-spline curves for gentle shorelines."""
    out = np.zeros(n, _F32)
    amp = 1.0
    for o in range(octaves):
        k = cells * 2**o + 4
        idx, wts = _bspline_taps(n, k)
        out += amp * (wts * rng.random(k, dtype=_F32)[idx]).sum(axis=0)
        amp *= 0.4
    out -= out.mean()
    return out / (out.std() + 1e-6)


def _sstep(x: np.ndarray) -> np.ndarray:
    """Smoothstep on [0, 1] (clamped)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ----------------------------------------------------------------------------- scene state

class _Canvas:
    """Label map, planar (3, H, W) float image and the shared texture fields."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, style: str, look: str | None = None):
        # ``style`` decides the layout and every random draw; ``look`` (default: the
        # same) only which family's colours paint it (generate_scene's ``look``).
        self.rng, self.h, self.w, self.style = rng, h, w, style
        self.look = style if look is None else look
        # Per-scene variation: brightness of each colour and a faint global tint, so a
        # style is a family of looks. Kept small: per-channel jitter turns white green.
        tint = (1.0 + 0.025 * rng.standard_normal(3)).astype(_F32).reshape(3, 1, 1)
        self.pal = {
            k: np.clip(v * tint * _F32(1.0 + 0.07 * rng.standard_normal()), 0.0, 1.0)
            for k, v in _PALETTES[self.look].items()
        }
        self.label = np.full((h, w), SKY, np.uint8)
        self.img = np.zeros((3, h, w), _F32)
        self.yy = np.arange(h, dtype=_F32)[:, None]
        self.xx = np.arange(w, dtype=_F32)[None, :]
        self.mid = _fbm(rng, h, w, 6, 6, octaves=3)
        self.fine = _fbm(rng, h, w, min(h / 5, 48), min(w / 5, 48), octaves=2)
        self.sun_x = 0.5 * w

    def paint(self, rows: slice, mask: np.ndarray, color: np.ndarray, cls: int | None) -> None:
        """Write ``color`` (3, r, W) where ``mask`` (r, W) holds, inside row band ``rows``."""
        band = self.img[:, rows]
        np.copyto(band, color, where=mask)  # mask broadcasts over the leading channel axis
        if cls is not None:
            self.label[rows][mask] = cls


def _tree_profile(xs: np.ndarray, cx: np.ndarray, top: np.ndarray, rad: np.ndarray,
                  conifer: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top edge (row per column of ``xs``) of a row of crowns, and which crown it is.

    Broadleaf crowns are circles of radius ``rad`` whose top is at ``top``; conifers
    are triangles with their tip at ``top``. Columns without a crown get +inf.
    """
    dx = np.abs(xs[None, :] - cx[:, None])
    inside = dx <= rad[:, None]
    if conifer:
        prof = top[:, None] + 2.6 * dx
    else:
        prof = top[:, None] + rad[:, None] - np.sqrt(np.maximum(rad[:, None] ** 2 - dx**2, 0.0))
    prof = np.where(inside, prof, np.inf)
    which = prof.argmin(axis=0)
    return prof.min(axis=0).astype(_F32), which


# ----------------------------------------------------------------------------- drawing steps

def _draw_sky(cv: _Canvas, horizon: int) -> None:
    p, rng, w = cv.pal, cv.rng, cv.w
    yy = cv.yy[:horizon]
    t = np.clip(yy / max(horizon, 1), 0.0, 1.0) ** 1.7
    sky = p["sky_top"] + (p["sky_hor"] - p["sky_top"]) * t  # (3, horizon, 1)
    # Sun (moon at night): glow around a point, low and wide for sunset/dusk.
    low = cv.look in ("sunset", "dusk")
    sx = rng.uniform(0.1, 0.9) * w
    sy = horizon * (rng.uniform(0.6, 0.95) if low else rng.uniform(0.08, 0.45))
    d = np.sqrt((cv.xx - sx) ** 2 + (yy - sy) ** 2) / cv.h
    glow_r = {"sunset": 0.32, "dusk": 0.3, "night": 0.12}.get(cv.look, 0.2)
    strength = {"day": 0.25, "sunset": 0.8, "dusk": 0.45, "night": 0.2, "winter": 0.3, "autumn": 0.25}[cv.look]
    glow = strength * np.exp(-((d / glow_r) ** 2)) * (1.0 + 0.03 * cv.mid[:horizon])
    if cv.look in ("sunset", "night"):  # visible disc; a daytime sun would just clip to white
        glow = glow + _sstep((0.03 - d) / 0.006)
    cv.img[:, :horizon] = sky + p["sun"] * glow
    if cv.style == "night":  # drawn (the stream moves on) even where another look hides them
        u = rng.random((horizon, w), dtype=_F32)
        stars = np.where(u > 0.996, (u - 0.996) * 250.0, 0.0) * (1.0 - t)
        if cv.look == "night":
            cv.img[:, :horizon] += stars.astype(_F32)
    cv.sun_x = sx


def _draw_clouds(cv: _Canvas, horizon: int) -> None:
    rng, p = cv.rng, cv.pal
    cover = {"night": 0.3, "winter": 0.6, "dusk": 0.5}.get(cv.style, 0.45) * rng.uniform(0.0, 1.6)
    if cover < 0.1 or horizon < 8:
        return
    w = cv.w
    # More rows than columns -> wide, flat blobs; thinning towards the horizon.
    field = _fbm(rng, horizon, w, rng.uniform(5, 8), rng.uniform(2, 4), octaves=4, gain=0.55)
    yy = cv.yy[:horizon]
    v = field - 1.3 * (yy / horizon) ** 2
    thr = _F32(1.5 - 1.6 * min(cover, 0.9))
    mask = v > thr
    if not mask.any():
        return
    dens = _sstep((v - thr) / 0.7)
    # Lit from above: where the field still grows downwards we are at the sunny top.
    shift = max(1, cv.h // 48)
    grow = np.empty_like(v)
    grow[:-shift] = v[shift:] - v[:-shift]
    grow[-shift:] = 0
    lit = _sstep(0.6 + 1.2 * grow - 0.25 * dens + 0.12 * cv.fine[:horizon])
    col = p["cloud_shadow"] + (p["cloud"] - p["cloud_shadow"]) * lit
    a = 0.55 + 0.45 * dens
    band = cv.img[:, :horizon]
    cv.paint(slice(0, horizon), mask, band + (col - band) * a, CLOUD)


def _draw_mountains(cv: _Canvas, horizon: int) -> None:
    """0-3 ridge layers from far to near, with snow above a ragged line and rock."""
    rng, p, w = cv.rng, cv.pal, cv.w
    n_layers = int(rng.choice(4, p=[0.15, 0.3, 0.35, 0.2]))
    if n_layers == 0 or horizon < 8:
        return
    snowy = rng.random() < (0.95 if cv.style == "winter" else 0.5)
    rocky = rng.random() < 0.6
    xs = np.arange(w, dtype=_F32)
    heights = np.sort(horizon * rng.uniform(0.2, 0.75, n_layers))[::-1]  # far ranges tower
    top_row = int(max(0, horizon - heights.max() - 2))
    rows = slice(top_row, horizon)
    bh = horizon - top_row
    yy = cv.yy[rows]
    # Gullies: stretched vertically (more columns than rows); rock patches: blobby.
    gully = _fbm(rng, bh, w, 2, 16, octaves=3)
    rock_field = _fbm(rng, bh, w, 4, 5, octaves=3)
    fine = cv.fine[rows]
    snow_line = horizon - heights.max() * rng.uniform(0.3, 0.55) * (0.5 if cv.style == "winter" else 1.0)
    for k in range(n_layers):
        near = (k + 1) / n_layers
        prof = _fbm1(rng, w, int(rng.integers(1, 4)), octaves=5, gain=0.55)
        prof = (prof - prof.min()) / (np.ptp(prof) + 1e-6)
        if rng.random() < 0.5:  # let some ranges end inside the frame
            c, s = rng.uniform(0.2, 0.8) * w, rng.uniform(0.4, 1.0) * w
            prof = prof * np.clip(1.3 - np.abs(xs - c) / s, 0, 1)
        ridge = (horizon - heights[k] * prof - 1).astype(_F32)
        mask = yy >= ridge
        # Faces turned towards the sun side are lit: use the ridge slope, fading
        # down the slope, plus gullies for structure.
        slope = np.gradient(np.convolve(ridge, np.ones(7, _F32) / 7, mode="same")).astype(_F32)
        side = 1.0 if cv.sun_x < w / 2 else -1.0
        down = np.clip((yy - ridge) / (0.45 * heights[k] + 1), 0, 1)
        face = side * np.tanh(1.2 * slope) * (1 - 0.7 * down)
        shade = 0.85 + 0.3 * face + 0.14 * gully - 0.2 * down + 0.05 * fine
        col = p["mountain"] * (0.85 + 0.3 * rng.random()) * shade
        lab = np.full(mask.shape, MOUNTAIN, np.uint8)
        if rocky:
            rmask = (rock_field + 0.7 * gully) > rng.uniform(0.5, 1.3)
            lab[rmask] = ROCK
            # Bare rock: greyer and craggier (strong fine grain) than the earthy slope.
            np.copyto(col, p["rock"] * (1.05 * shade + 0.22 * fine), where=rmask)
        if snowy:
            smask = yy < snow_line + 0.07 * cv.h * (gully + 0.4 * fine) + 0.03 * k * cv.h
            lab[smask] = SNOW
            np.copyto(col, p["snow"] * (0.82 + 0.25 * face + 0.04 * fine), where=smask)
        # Aerial perspective: far layers and high slopes fade into the haze.
        haze = np.clip((0.55 - 0.45 * near) + 0.2 * (1 - near) * (1 - down), 0, 0.85)
        col = col + (p["haze"] - col) * haze
        cv.paint(rows, mask, col, None)
        cv.label[rows][mask] = lab[mask]


def _draw_ground(cv: _Canvas, horizon: int) -> tuple[str, int]:
    """Label and texture everything below the horizon.

    Returns the layout kind and the row water mirrors about: the horizon, or for a
    lake the foot of its far shore.
    """
    rng, p, h, w = cv.rng, cv.pal, cv.h, cv.w
    rows = slice(horizon, h)
    gh = h - horizon
    yy = cv.yy[rows]
    depth = (yy - horizon) / max(gh, 1)  # 0 at the horizon, 1 at the bottom edge
    kind = str(rng.choice(["sea", "lake", "meadow", "pond"], p=[0.25, 0.3, 0.2, 0.25]))
    lab = np.full((gh, w), GRASS, np.uint8)
    shore = np.full(w, np.inf, _F32)
    axis = horizon
    if kind in ("sea", "lake"):
        far_edge = horizon + (0.0 if kind == "sea" else rng.uniform(0.015, 0.06) * h + 1)
        axis = int(far_edge)
        if kind == "lake":
            far_edge = far_edge + 0.004 * h * _smooth1(rng, w, 6)
        # Shores flatten with distance, so keep their wiggle small relative to depth.
        reach = rng.uniform(0.3, 0.85)
        shore = (horizon + gh * reach + 0.05 * gh * (0.3 + reach) * _smooth1(rng, w, 2)).astype(_F32)
        water = (yy >= far_edge) & (yy < shore)
        sand_w = gh * rng.uniform(0.02, 0.6 if kind == "sea" else 0.2)
        sand_end = shore + sand_w * (1 + 0.35 * _smooth1(rng, w, 3))
        sand = (yy >= shore) & (yy < sand_end)
        if kind == "sea" and rng.random() < 0.4:
            sand = yy >= shore  # beach to the bottom edge
        lab[sand] = SAND
        if kind == "lake" and rng.random() < 0.3:
            lab[yy < far_edge] = SAND
        lab[water] = WATER
    elif kind == "pond":
        cx, cy = rng.uniform(0.2, 0.8) * w, horizon + gh * rng.uniform(0.3, 0.6)
        ry = gh * rng.uniform(0.1, 0.25)
        rx = ry * rng.uniform(2.5, 5.0)
        d = ((cv.xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 + 0.3 * cv.mid[rows]
        if rng.random() < 0.5:
            lab[d < 1.4] = SAND
        lab[d < 1.0] = WATER
    cv.label[rows] = lab

    # Grass: two tones in large patches, streaks flattened by perspective, coarse grain
    # near the viewer, hazy near the horizon.
    patches = _fbm(rng, gh, w, 4, 1.5, octaves=2)
    streak = _fbm(rng, gh, w, 14, 4, octaves=2)
    fine = cv.fine[rows]
    mix = _sstep(0.5 + 0.3 * patches)
    grass = p["grass"] + (p["grass2"] - p["grass"]) * mix
    grass = grass * (0.8 + 0.25 * depth + 0.05 * streak + (0.03 + 0.08 * depth) * fine)
    sand_col = p["sand"] * (0.95 + 0.04 * cv.mid[rows] + 0.04 * fine)
    # Wet, darker sand along the water line.
    wet = np.exp(-np.maximum(yy - shore, 0) / (0.02 * h + 1))
    sand_col = sand_col * (1 - 0.25 * wet)
    col = np.where(lab == SAND, sand_col, grass)
    haze = 0.5 * np.exp(-depth / 0.15)
    cv.img[:, rows] = col + (p["haze"] - col) * haze

    return kind, axis


def _paint_trees(cv: _Canvas, y0: int, mask: np.ndarray, x0: int, prof: np.ndarray, side: np.ndarray,
                 depth_px: float, color: np.ndarray, haze: float = 0.0) -> None:
    """Shade tree pixels in the box at (y0, x0): lit tops, dark leafy insides, one lit side."""
    hh, ww = mask.shape
    if not mask.any():
        return
    rows, cols = slice(y0, y0 + hh), slice(x0, x0 + ww)
    yy = cv.yy[rows]
    top = np.where(np.isfinite(prof), prof, yy[-1, 0])
    down = np.clip((yy - top) / max(depth_px, 1.0), 0, 1)
    leaf = cv.fine[rows, cols]
    sun = 1.0 if cv.sun_x < cv.w / 2 else -1.0
    shade = 1.0 - 0.5 * down + 0.28 * leaf - 0.15 * sun * side + 0.05 * cv.mid[rows, cols]
    tex = color * np.clip(shade, 0.15, 1.5)
    if haze:
        tex = tex + (cv.pal["haze"] - tex) * haze
    band = cv.img[:, rows, cols]
    np.copyto(band, tex, where=mask)
    cv.label[rows, cols][mask] = TREE


def _tree_line(cv: _Canvas, base_row: float, conifer: bool) -> None:
    """A forest edge of small crowns standing on ``base_row`` (far shore / horizon)."""
    rng, h, w = cv.rng, cv.h, cv.w
    xs = np.arange(w, dtype=_F32)
    n = int(w / (0.03 * h) * rng.uniform(0.8, 1.3)) + 2
    cx = (np.sort(rng.uniform(-0.02, 1.02, n)) * w).astype(_F32)
    rad = (0.022 * h * rng.uniform(0.6, 1.4, n) * rng.uniform(0.7, 1.5)).astype(_F32)
    if rng.random() < 0.5:  # only part of the shore is wooded
        c, s = rng.uniform(0, w), rng.uniform(0.2, 0.7) * w
        keep = np.abs(cx - c) < s
        cx, rad = cx[keep], rad[keep]
    if not len(cx):
        return
    base = base_row + 0.004 * h * _fbm1(rng, w, 4, 2)
    top = base[np.clip(cx.astype(int), 0, w - 1)] - rad * (2.6 if conifer else 1.7)
    prof, which = _tree_profile(xs, cx, top, rad, conifer)
    y0 = int(max(0, np.floor(top.min())))
    y1 = int(min(h, np.ceil(base.max()) + 1))
    if y1 <= y0:
        return
    yy = cv.yy[y0:y1]
    mask = (yy >= prof) & (yy < base + 0.5)
    side = np.clip((xs - cx[which]) / rad[which], -1, 1)
    _paint_trees(cv, y0, mask, 0, prof, side, 2.5 * float(rad.mean()), cv.pal["tree"], haze=0.3)


def _tree_cluster(cv: _Canvas, horizon: int, conifer: bool) -> None:
    """A clump of 1-5 trees on grass or sand, sized by distance (lower = nearer = bigger)."""
    rng, h, w = cv.rng, cv.h, cv.w
    for _ in range(6):  # find dry ground to stand on
        base = horizon + (h - horizon) * rng.uniform(0.05, 0.95)
        x_at = rng.uniform(0, w)
        if cv.label[min(int(base), h - 1), min(int(x_at), w - 1)] in (GRASS, SAND):
            break
    else:
        return
    scale = 0.03 * h + 0.3 * (base - horizon) * rng.uniform(0.4, 1.0)
    n = int(rng.integers(1, 6))
    cx = (x_at + scale * (np.cumsum(rng.uniform(0.5, 1.3, n)) - 0.5 * n)).astype(_F32)
    rad = (scale * rng.uniform(0.35, 0.6, n)).astype(_F32)
    trunk = (scale * rng.uniform(0.15, 0.4, n) * (0.3 if conifer else 1.0)).astype(_F32)
    top = (base - trunk - rad * (3.0 if conifer else 2.0)).astype(_F32)
    x0 = int(max(0, np.floor((cx - rad).min()) - 1))
    x1 = int(min(w, np.ceil((cx + rad).max()) + 2))
    y0 = int(max(0, np.floor(top.min()) - 1))
    y1 = int(min(h, np.ceil(base) + 1))
    if x1 <= x0 or y1 <= y0:
        return
    xs = np.arange(x0, x1, dtype=_F32)
    prof, which = _tree_profile(xs, cx, top, rad, conifer)
    yy = cv.yy[y0:y1]
    dx = np.abs(xs[None, :] - cx[:, None])
    inside = dx <= rad[:, None]
    if conifer:  # flat skirt
        bottom = np.where(inside, (base - trunk)[:, None], -np.inf).max(axis=0)
    else:  # rounded underside, a bit flatter than the top
        under = np.sqrt(np.maximum(rad[:, None] ** 2 - dx**2, 0))
        bottom = np.where(inside, (top + rad)[:, None] + 0.75 * under, -np.inf).max(axis=0)
    edge = 0.1 * scale * cv.fine[y0:y1, x0:x1]
    crown = (yy >= prof + edge) & (yy <= bottom + edge)
    tw = max(0.05 * scale, 0.6)
    trunks = np.zeros_like(crown)
    for i in range(n):
        trunks |= (np.abs(xs - cx[i]) < tw) & (yy < base) & (yy >= top[i] + rad[i])
    trunks &= ~crown
    color = cv.pal["tree"]
    if cv.style == "autumn":  # drawn (the stream moves on) even where another look ignores them
        leaves = _AUTUMN_LEAVES[int(rng.integers(len(_AUTUMN_LEAVES)))] * _F32(rng.uniform(0.8, 1.1))
        if cv.look == "autumn":
            color = leaves
    side = np.clip((xs - cx[which]) / rad[which], -1, 1)
    _paint_trees(cv, y0, crown, x0, prof, side, 2.2 * float(rad.mean()), color)
    if trunks.any():
        band = cv.img[:, y0:y1, x0:x1]
        np.copyto(band, cv.pal["trunk"] * (0.8 + 0.15 * cv.fine[y0:y1, x0:x1]), where=trunks)
        cv.label[y0:y1, x0:x1][trunks] = TREE
    # Soft contact shadow on the ground under the clump.
    sh_rows = slice(int(min(h - 1, base)), int(min(h, base + 0.25 * scale + 2)))
    sy = cv.yy[sh_rows]
    sx = cv.xx[:, x0:x1]
    shadow = np.exp(-(((sx - cx.mean()) / (0.6 * scale * n ** 0.5 + 1)) ** 2)) * np.exp(-(sy - base) / (0.1 * scale + 1))
    ground = np.isin(cv.label[sh_rows, x0:x1], (GRASS, SAND, FLOWERS))
    cv.img[:, sh_rows, x0:x1] *= 1.0 - 0.35 * shadow * ground


def _flower_patches(cv: _Canvas, horizon: int) -> None:
    rng, h = cv.rng, cv.h
    rows = slice(horizon, h)
    gh = h - horizon
    field = _fbm(rng, gh, cv.w, 3, 3, octaves=3)
    depth = (cv.yy[rows] - horizon) / max(gh, 1)
    patch = (field > rng.uniform(0.7, 1.4)) & (cv.label[rows] == GRASS) & (depth > 0.12)
    if not patch.any():
        return
    k = rng.choice(len(_FLOWER_COLORS), 2, replace=False)
    c1, c2 = _FLOWER_COLORS[k[0]], _FLOWER_COLORS[k[1]]
    fcol = np.where(cv.mid[rows] > 0, c1, c2) * cv.pal["light"]
    # Blossoms: single-pixel dots (the final blur rounds them), clumped by the fine
    # field, denser towards the patch centre and bigger/brighter near the viewer.
    speck = rng.random((gh, cv.w), dtype=_F32)
    density = 0.25 + 0.2 * cv.fine[rows] + 0.25 * np.clip(field - 1.0, 0, 1) + 0.15 * depth
    dots = _sstep((speck - (1.0 - density)) / 0.15) * (0.75 + 0.25 * depth)
    band = cv.img[:, rows]
    cv.paint(rows, patch, band + (fcol - band) * dots, FLOWERS)


def _boulders(cv: _Canvas, horizon: int) -> None:
    rng, h, w = cv.rng, cv.h, cv.w
    for _ in range(int(rng.integers(1, 5))):
        base = horizon + (h - horizon) * rng.uniform(0.15, 1.0)
        r = (0.01 * h + 0.12 * (base - horizon)) * rng.uniform(0.3, 1.0)
        cx = rng.uniform(0, w)
        rx = r * rng.uniform(1.0, 1.8)
        x0, x1 = int(max(0, cx - rx - 2)), int(min(w, cx + rx + 3))
        y0, y1 = int(max(0, base - r - 2)), int(min(h, base + 0.15 * r + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = cv.yy[y0:y1], cv.xx[:, x0:x1]
        d = ((xx - cx) / rx) ** 2 + ((yy - base) / r) ** 2 + 0.15 * cv.mid[y0:y1, x0:x1]
        m = (d < 1.0) & (yy < base + 0.15 * r) & np.isin(cv.label[y0:y1, x0:x1], (GRASS, SAND, FLOWERS))
        if not m.any():
            continue
        up = np.clip((base - yy) / r, 0, 1)
        sun = 1.0 if cv.sun_x < w / 2 else -1.0
        shade = 0.5 + 0.45 * up + 0.15 * cv.fine[y0:y1, x0:x1] - 0.15 * sun * np.clip((xx - cx) / rx, -1, 1)
        band = cv.img[:, y0:y1, x0:x1]
        np.copyto(band, cv.pal["rock"] * cv.pal["light"] * shade, where=m)
        cv.label[y0:y1, x0:x1][m] = ROCK


def _draw_reflections(cv: _Canvas, horizon: int, axis: int) -> None:
    """Water shows a darkened, rippled, upside-down copy of what is beyond it.

    Distant things mirror about the horizon (a flat surface reflects the sky at the
    elevation equal to the view's depression angle); a lake's far shore stands a
    little lower, so lakes mirror about the shore's foot (``axis``). One axis per
    scene: a per-column axis tears the mirror image into vertical strips.
    """
    wy, wx = np.nonzero(cv.label == WATER)
    if not len(wy):
        return
    rng, p, h, w = cv.rng, cv.pal, cv.h, cv.w
    y0 = int(wy.min())
    ripple_full = _fbm(rng, h - y0, w, (h - y0) / 4 + 2, 3, octaves=2)  # thin horizontal streaks
    ripple = ripple_full[wy - y0, wx]
    dist = (wy - horizon).astype(_F32)  # steeper view = weaker mirror, larger ripples
    amp = 0.6 + 0.06 * dist
    sy = np.clip((2 * axis - 1 - wy - 0.25 * amp * np.abs(ripple)).astype(np.intp), 0, h - 1)
    sx = np.clip((wx + amp * ripple).astype(np.intp), 0, w - 1)
    refl = cv.img[:, sy, sx]  # (3, N)
    # Reflections dim towards the viewer (Fresnel, roughly) where the water's own
    # colour takes over.
    strength = 0.8 - 0.5 * np.clip(dist / (0.35 * h), 0, 1)
    water = p["water"][:, :, 0]
    col = refl * (0.85 * strength) + water * (1 - strength)
    col *= 1.0 + 0.1 * ripple
    # Glitter under the sun or moon.
    spread = 0.04 * w + 0.25 * dist
    glint = np.exp(-(((wx - cv.sun_x) / spread) ** 2)) * np.clip(ripple - 0.9, 0, None)
    boost = {"sunset": 0.9, "night": 0.6, "dusk": 0.5}.get(cv.look, 0.35)
    col += p["sun"][:, :, 0] * (boost * glint)
    cv.img[:, wy, wx] = col


def _finish(cv: _Canvas) -> np.ndarray:
    """Tint lit ground by the style's light, vignette, soften, grain; return HxWx3 uint8."""
    p = cv.pal
    # Sky and clouds are light sources themselves; everything else is lit.
    sky_like = (cv.label <= CLOUD).astype(_F32)
    light = p["light"] + (1.0 - p["light"]) * sky_like
    vignette = 1.0 - 0.3 * ((cv.xx / cv.w - 0.5) ** 2 + (cv.yy / cv.h - 0.5) ** 2)
    img = cv.img * light * vignette
    # A slight [1 2 1] blur (rows, then columns) so borders look photographed.
    if cv.h >= 96:
        img[:, 1:-1] = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
        img[:, :, 1:-1] = 0.25 * img[:, :, :-2] + 0.5 * img[:, :, 1:-1] + 0.25 * img[:, :, 2:]
    img += 0.008 * cv.fine * (1.0 - 0.7 * sky_like)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


# ----------------------------------------------------------------------------- public API

def generate_scene(seed: int, size: int = 256, width: int | None = None,
                   look: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Generate one landscape.

    Returns ``(label, image, style)``: an ``HxW`` uint8 id map (ids index
    :data:`LANDSCAPE_CLASSES`), an ``HxWx3`` uint8 RGB image and the style name (one
    of :data:`STYLES`). ``size`` is the height; ``width`` defaults to ``size``. The
    same arguments always give the same result.

    ``look`` (one of :data:`STYLES`; default: the seed's own style) paints the seed's
    scene with another style family's colours: the label map is identical, only the
    colours change (the seed's style still decides the layout, e.g. winter's low snow
    line; a forced night has no stars and a forced autumn one leaf colour for all trees).
    The returned style is the seed's own. The style-diversity measure uses it to draw one
    map under several families (``evaluation/diversity.py``).
    """
    h = int(size)
    w = int(width) if width is not None else h
    if int(seed) < 0:
        raise SpadeganError(f"landscape seed must be >= 0, got {seed}")
    if h < 32 or w < 32:
        raise SpadeganError(f"landscape size must be at least 32x32 pixels, got {w}x{h}")
    if look is not None and look not in STYLES:
        raise SpadeganError(f"unknown landscape look {look!r}; choose one of {', '.join(STYLES)}")
    rng = np.random.default_rng(seed)
    style = STYLES[int(rng.choice(len(STYLES), p=_STYLE_WEIGHTS))]
    cv = _Canvas(rng, h, w, style, look)
    horizon = int(h * rng.uniform(0.38, 0.62))

    _draw_sky(cv, horizon)
    _draw_clouds(cv, horizon)
    _draw_mountains(cv, horizon)
    kind, axis = _draw_ground(cv, horizon)
    conifer = rng.random() < (0.7 if style == "winter" else 0.35)
    # A forest edge on the far shore or the horizon (not out at sea).
    if rng.random() < 0.55 and kind != "sea":
        far = horizon + (int(0.02 * h) if kind == "lake" else 0)
        _tree_line(cv, far, conifer)
    # Reflect now, before near objects exist, so water mirrors only what is beyond it.
    _draw_reflections(cv, horizon, axis)
    if rng.random() < 0.65:
        for _ in range(int(rng.integers(1, 5))):
            _tree_cluster(cv, horizon, conifer)
    if rng.random() < 0.5:
        _flower_patches(cv, horizon)
    if rng.random() < 0.4:
        _boulders(cv, horizon)
    return cv.label, _finish(cv), style


def generate_batch(seeds: Iterable[int], size: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate square scenes for several seeds.

    Returns ``(labels N x H x W uint8, images N x H x W x 3 uint8, styles)``.
    """
    labels, images, styles = [], [], []
    for s in seeds:
        lab, img, st = generate_scene(int(s), size)
        labels.append(lab)
        images.append(img)
        styles.append(st)
    if not labels:
        raise SpadeganError("generate_batch needs at least one seed")
    return np.stack(labels), np.stack(images), styles


def make_landscapes(out: str, count: int, size: int = 256, seed: int = 0, val_fraction: float = 0.0,
                    val_count: int | None = None) -> dict:
    """Write a landscapes dataset in the ``custom`` dataset-mode layout.

    Creates ``out/train_img/land_000000.jpg`` (JPEG, quality 95) with
    ``out/train_label/land_000000.png`` (uint8 ids), the same under ``val_img`` /
    ``val_label`` for the last ``val_count`` (default ``round(count * val_fraction)``)
    scenes, ``out/classes.json`` (the landscapes class table) and
    ``out/summary.json``. Scene *i* uses seed ``seed + i``, so stems name the seed
    offset. Returns the summary dict (counts, size, seed, style histogram).
    """
    from tqdm import tqdm

    if count < 1:
        raise SpadeganError(f"count must be >= 1, got {count}")
    if size < 32:
        raise SpadeganError(f"size must be at least 32 pixels, got {size}")
    if seed < 0:
        raise SpadeganError(f"seed must be >= 0, got {seed}")
    if val_count is None:
        if not 0.0 <= val_fraction < 1.0:
            raise SpadeganError(f"val_fraction must be in [0, 1), got {val_fraction}")
        val_count = int(round(count * val_fraction))
    if not 0 <= val_count <= count:
        raise SpadeganError(f"val_count must be between 0 and count ({count}), got {val_count}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise SpadeganError(f"{root} exists and is not a folder; choose another output path")
    n_train = count - val_count
    splits = [(s, a, b) for s, a, b in (("train", 0, n_train), ("val", n_train, count)) if b > a]
    for split, _, _ in splits:
        (root / f"{split}_img").mkdir(parents=True, exist_ok=True)
        (root / f"{split}_label").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).parent / "classes" / "landscapes.json", root / "classes.json")
    styles: dict[str, int] = {}
    with tqdm(total=count, desc="landscapes", unit="img") as bar:
        for split, a, b in splits:
            for i in range(a, b):
                lab, img, st = generate_scene(seed + i, size)
                stem = f"land_{i:06d}"
                Image.fromarray(img).save(root / f"{split}_img" / f"{stem}.jpg", quality=95)
                Image.fromarray(lab).save(root / f"{split}_label" / f"{stem}.png")
                styles[st] = styles.get(st, 0) + 1
                bar.update(1)
    summary = {
        "out": str(root),
        "train": n_train,
        "val": val_count,
        "size": size,
        "seed": seed,
        "styles": dict(sorted(styles.items())),
        "classes": list(LANDSCAPE_CLASSES),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``spadegan make-landscapes``: write the procedural dataset to a folder."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="spadegan make-landscapes",
        description="Write the procedural landscapes dataset (train_img/, train_label/, val_img/, "
                    "val_label/, classes.json) for --dataset_mode landscapes.",
    )
    ap.add_argument("--out", "--dataroot", dest="out", default="datasets/landscapes",
                    help="output folder (default: %(default)s)")
    ap.add_argument("--count", type=int, default=2000, help="number of pairs in total (default: %(default)s)")
    ap.add_argument("--size", type=int, default=256, help="image height and width in pixels (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first scene (default: %(default)s)")
    ap.add_argument("--val_fraction", type=float, default=0.05,
                    help="share of the pairs written to val_* (default: %(default)s)")
    ap.add_argument("--val_count", type=int, default=None, help="exact number of val pairs (overrides --val_fraction)")
    args = ap.parse_args(argv)
    summary = make_landscapes(args.out, args.count, size=args.size, seed=args.seed,
                              val_fraction=args.val_fraction, val_count=args.val_count)
    print(f"wrote {summary['train']} train + {summary['val']} val pairs of {args.size}x{args.size} to {args.out}; "
          f"styles: {summary['styles']}")
    return 0
