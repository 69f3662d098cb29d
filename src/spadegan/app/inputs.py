"""Decoding what a request sends (label PNG, style image, seed) and encoding the answer.

Pure functions run in the server's thread pool; every bad input becomes an `HTTPError`
naming the problem (see `spadegan.app.server` for the accepted encodings). Label maps and
label images are read by spadegan's one decoder, `spadegan.synthesize.inputs`, as
`spadegan synthesize` and the `Synthesizer` read them.
"""

import io
import re
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

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


def decode_label(
    data: bytes, *, label_nc: int, classes: Sequence[dict], width: int, height: int, max_pixels: int
) -> np.ndarray:
    """Decode a label PNG (see module docstring for the accepted encodings).

    The ids are read by spadegan's one label decoder (`spadegan.synthesize.inputs`) in the
    app's label space: model ids ``0..label_nc-1`` (255 is an id, not dontcare), colour
    PNGs in the palette ``classes``, grey RGB PNGs as ids. Returns a ``(height, width)`` id
    map (``uint8`` if ``label_nc <= 256`` else ``int64``), nearest-neighbour resized to the
    model size. Raises :class:`HTTPError` (400, the decoder's message) on bad input.
    """
    from ..synthesize.inputs import LabelSpace, read_label_ids

    im = open_upload(data, "label", max_pixels=max_pixels, require_png=True)
    try:
        ids = read_label_ids(im, LabelSpace.model_ids(label_nc, classes), "label")
    except SpadeganError as exc:
        raise HTTPError(400, str(exc)) from None
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
    from ..data.transforms import resize_label_array
    from ..synthesize.inputs import read_label_image

    im = open_upload(data, "label", max_pixels=max_pixels, require_png=True)
    try:
        arr = read_label_image(im, channels, "label")
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


#: At most this many classes re-rolled in one request.
MAX_REGION_SEEDS = 256


def parse_region_seeds(value: str | None, label_nc: int) -> dict[int, int] | None:
    """Parse the ``region_seeds`` form field: a JSON object ``{"<class id>": seed, ...}`` (ids in
    ``0..label_nc-1``, seeds in ``0..MAX_SEED``); ``None``/empty/``{}`` means none."""
    import json

    if value is None or value.strip() in ("", "{}"):
        return None
    try:
        obj = json.loads(value)
    except ValueError as exc:
        raise HTTPError(400, f"region_seeds must be a JSON object {{\"<class id>\": seed}}: {exc}") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, f"region_seeds must be a JSON object {{\"<class id>\": seed}}, got {type(obj).__name__}")
    if len(obj) > MAX_REGION_SEEDS:
        raise HTTPError(400, f"region_seeds lists {len(obj)} classes; at most {MAX_REGION_SEEDS}")
    out: dict[int, int] = {}
    for key, seed in obj.items():
        if not re.fullmatch(r"\d{1,9}", str(key)) or not 0 <= int(key) < label_nc:
            raise HTTPError(400, f"region_seeds: class id {str(key)[:20]!r} is not in 0..{label_nc - 1}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise HTTPError(400, f"region_seeds: the seed of class {key} must be an integer in 0..{MAX_SEED}, "
                                 f"got {str(seed)[:40]!r}")
        out[int(key)] = seed
    return out or None


def encode_png(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3) uint8`` image; low compression because latency matters more."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
