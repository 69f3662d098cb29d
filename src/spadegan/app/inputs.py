"""Decoding what a request sends (label PNG, style image, seed) and encoding the answer.

Pure functions run in the server's thread pool; every bad input becomes an `HTTPError`
naming the problem (see `spadegan.app.server` for the accepted encodings).
"""

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..data.palettes import grey_ids
from ..errors import SpadeganError


#: Seeds are limited to 32 bits: every RNG (numpy legacy, torch) accepts them and they are
#: exact in JavaScript numbers, so the page can display and edit them losslessly.
MAX_SEED = 2**32 - 1


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def open_upload(data: bytes, what: str, *, max_pixels: int, require_png: bool) -> Image.Image:
    """Open and fully decode ``data``; map every Pillow failure to a 400 naming ``what``."""
    if not data:
        raise HTTPError(400, f"{what} is empty (0 bytes)")
    if require_png and not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise HTTPError(400, f"{what} is not a PNG file (PNG signature missing)")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is stricter; silence Pillow's bomb *warning*.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            # Check before load(): a tiny file can declare a gigantic image.
            if w * h > max_pixels:
                raise HTTPError(413, f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels")
            if require_png and im.format != "PNG":
                raise HTTPError(400, f"{what} is not a PNG file (it is {im.format})")
            im.load()
    except HTTPError:
        raise
    except Image.DecompressionBombError as exc:
        raise HTTPError(413, f"{what} is too large to decode: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # OSError covers "image file is truncated", bad CRCs and unknown formats.
        raise HTTPError(400, f"{what} could not be decoded (truncated or corrupt image?): {exc}") from exc
    except Exception as exc:  # Pillow plugins raise assorted types on hostile input
        raise HTTPError(400, f"{what} could not be decoded: {type(exc).__name__}: {exc}") from exc
    return im


def _palette_lookup(classes: Sequence[dict]) -> dict[int, int]:
    """Packed 0xRRGGBB colour -> class id (first class wins on duplicate colours)."""
    lut: dict[int, int] = {}
    for c in classes:
        r, g, b = (int(v) for v in c["color"])
        lut.setdefault((r << 16) | (g << 8) | b, int(c["id"]))
    return lut


def _fmt_colors(keys: np.ndarray, counts: np.ndarray, limit: int = 5) -> str:
    order = np.argsort(-counts)[:limit]
    parts = [f"#{int(keys[i]):06x} ({int(counts[i])} px)" for i in order]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more


def decode_label(
    data: bytes, *, label_nc: int, classes: Sequence[dict], width: int, height: int, max_pixels: int
) -> np.ndarray:
    """Decode a label PNG (see module docstring for the accepted encodings).

    Returns a ``(height, width)`` id map (``uint8`` if ``label_nc <= 256`` else ``int64``),
    nearest-neighbour resized to the model size. Raises :class:`HTTPError` on bad input.
    """
    im = open_upload(data, "label", max_pixels=max_pixels, require_png=True)
    mode = im.mode
    if mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "LA", "PA"):
        if mode in ("LA", "PA"):
            im = im.getchannel(0)  # alpha is not part of a label
        ids = np.asarray(im).astype(np.int64)
    elif mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        keys, inverse = np.unique(packed.ravel(), return_inverse=True)
        lut = _palette_lookup(classes)
        mapped = [lut.get(int(k), -1) for k in keys]
        if all(m >= 0 for m in mapped):
            ids = np.asarray(mapped, dtype=np.int64)[inverse].reshape(packed.shape)
        elif (grey := grey_ids(rgb)) is not None:
            ids = grey
        else:
            unknown = np.asarray([k for k, m in zip(keys, mapped) if m < 0])
            counts = np.bincount(inverse.ravel(), minlength=len(keys))[[i for i, m in enumerate(mapped) if m < 0]]
            raise HTTPError(
                400,
                "label is an RGB image with colours that are not palette colours and it is not "
                f"gray (R==G==B) either; unknown colours: {_fmt_colors(unknown, counts)}. "
                "Send a grayscale PNG of class ids or use exactly the palette colours from /api/info.",
            )
    else:
        raise HTTPError(400, f"label PNG has unsupported mode {mode!r}; use 8-bit grayscale (L) class ids")

    if ids.ndim != 2:
        raise HTTPError(400, f"label must be a single-channel id map, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= label_nc):
        bad, counts = np.unique(ids[(ids < 0) | (ids >= label_nc)], return_counts=True)
        listed = ", ".join(f"{int(b)} ({int(n)} px)" for b, n in zip(bad[:8], counts[:8]))
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise HTTPError(
            400,
            f"label contains class id(s) {listed}{more}, but this model accepts ids 0..{label_nc - 1} "
            f"(label_nc={label_nc})",
        )
    if ids.shape != (height, width):
        # Mode "I" keeps ids > 255 intact through the resize; NEAREST never invents ids.
        ids = np.asarray(
            Image.fromarray(ids.astype(np.int32), mode="I").resize((width, height), Image.Resampling.NEAREST)
        ).astype(np.int64)
    return ids.astype(np.uint8 if label_nc <= 256 else np.int64)


def decode_label_image(data: bytes, *, channels: int, width: int, height: int, max_pixels: int) -> np.ndarray:
    """Decode a label image PNG for a --label_nc 0 model: greyscale for `channels` 1, RGB for 3.

    Returns ``(height, width, channels)`` float32 in [0, 1], resized bilinearly to the model
    size (as the datasets resize label images). Another channel count is a 400 naming both.
    """
    from ..data.transforms import label_image_array, resize_label_array

    im = open_upload(data, "label", max_pixels=max_pixels, require_png=True)
    try:
        arr = label_image_array(im, "label", channels, source="this model's input_nc")
    except SpadeganError as exc:
        raise HTTPError(400, str(exc)) from None
    if arr.shape[:2] != (height, width):
        arr = np.clip(resize_label_array(arr, (height, width)), 0.0, 1.0)
    return arr


def decode_style(data: bytes, *, width: int, height: int, max_pixels: int) -> np.ndarray:
    """Decode a style image (any Pillow format) to ``(height, width, 3) uint8``."""
    im = open_upload(data, "style image", max_pixels=max_pixels, require_png=False)
    try:
        im = im.convert("RGB")
    except Exception as exc:
        raise HTTPError(400, f"style image could not be converted to RGB: {exc}") from exc
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def parse_seed(value: str | None) -> int | None:
    """Parse the ``seed`` form field; ``None``/empty means "draw a random seed"."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not re.fullmatch(r"[+]?\d{1,20}", text):
        raise HTTPError(400, f"seed must be an integer in 0..{MAX_SEED}, got {value[:40]!r}")
    seed = int(text)
    if seed > MAX_SEED:
        raise HTTPError(400, f"seed must be an integer in 0..{MAX_SEED}, got {seed}")
    return seed


def encode_png(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3) uint8`` image; low compression because latency matters more."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
