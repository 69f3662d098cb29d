"""Load-time preprocessing: scale, crop and flip a label map, instance map and photo alike.

Every official ``--preprocess_mode`` is supported with the official size rules:

* ``resize_and_crop``: resize to ``load_size x load_size``, then a random ``crop_size``
  square;
* ``crop``: a random ``crop_size`` square of the original;
* ``scale_width``: width -> ``load_size``, height ``int(load_size * h / w)``;
* ``scale_width_and_crop``: the same, then a random ``crop_size`` square;
* ``scale_shortside``: short side -> ``load_size``, long side
  ``int(load_size * long / short)``;
* ``scale_shortside_and_crop``: the same, then a random ``crop_size`` square;
* ``fixed``: resize to ``crop_size x round(crop_size / aspect_ratio)`` (``load_size`` unused);
* ``none``: each side rounded to the nearest multiple of 32 (Python ``round``, halves go
  to even; at least 32) and resized to that, as the official ``__make_power_2``.

A crop window that reaches past the (scaled) image is zero-padded, as in the official
code (PIL's ``crop``): label 0 / black. The horizontal flip is applied only in training
and without ``--no_flip``.

The crop position and the flip are drawn once per sample (:func:`get_params`) from a
``numpy.random.Generator`` the caller owns, and then applied identically to the label map,
the instance map and the photo, so they stay aligned. Nothing here touches global random
state, which is what makes items reproducible for a seed whatever the number of workers.
Label and instance maps are resized with nearest neighbour (no new ids), photos with
bicubic; photos become ``3xHxW`` float tensors in ``[-1, 1]``.

Image labels (``--label_nc 0``: sketches, edge maps, depth, colour layouts) are read as
float channels (:func:`label_image_array`: 1 for greyscale files, 3 for colour ones; 8-bit
values / 255, 16/32-bit ones / 65535, float images as they are, alpha dropped), resized
bilinearly per channel with the same crop and flip as the photo and scaled to ``[-1, 1]``
(:func:`transform_label_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import SpadeganError
from .palettes import grey_ids

__all__ = [
    "TransformParams",
    "get_params",
    "scaled_size",
    "output_size",
    "apply_transform",
    "transform_label",
    "transform_image",
    "image_to_tensor",
    "label_to_tensor",
    "label_image_to_ids",
    "colour_label_message",
    "label_image_channels",
    "label_image_array",
    "channels_message",
    "transform_label_image",
    "resize_label_array",
    "resize_label_image",
]

# The official 'none' mode rounds each side to a multiple of this.
_NONE_BASE = 32


@dataclass(frozen=True)
class TransformParams:
    """Per-sample random choices shared by a label map, its instance map and its photo."""

    crop_pos: tuple[int, int]  # (x, y) of the crop window's top-left corner
    flip: bool  # mirror left-right (only used when training without --no_flip)


def _scale_width(w: int, h: int, target: int) -> tuple[int, int]:
    if w == target:
        return w, h
    return target, int(target * h / w)


def _scale_shortside(w: int, h: int, target: int) -> tuple[int, int]:
    short, long_ = min(w, h), max(w, h)
    if short == target:
        return w, h
    long_ = int(target * long_ / short)
    return (target, long_) if w == short else (long_, target)


def _round_to_base(w: int, h: int, base: int = _NONE_BASE) -> tuple[int, int]:
    # max(1, ...): a side under base/2 would round to 0, which PIL cannot resize to
    return max(1, int(round(w / base))) * base, max(1, int(round(h / base))) * base


def scaled_size(opt, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) after the scaling step of ``opt.preprocess_mode``, before any crop."""
    w, h = size
    mode = opt.preprocess_mode
    if "resize" in mode:
        return opt.load_size, opt.load_size
    if "scale_width" in mode:
        return _scale_width(w, h, opt.load_size)
    if "scale_shortside" in mode:
        return _scale_shortside(w, h, opt.load_size)
    return w, h


def output_size(opt, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of a sample of input size ``size`` after the whole transform."""
    mode = opt.preprocess_mode
    w, h = scaled_size(opt, size)
    if "crop" in mode:
        w = h = opt.crop_size
    if mode == "none":
        w, h = _round_to_base(w, h)
    if mode == "fixed":
        w, h = opt.crop_size, int(round(opt.crop_size / opt.aspect_ratio))
    return w, h


def get_params(opt, size: tuple[int, int], rng: np.random.Generator) -> TransformParams:
    """Draw the crop position and flip for one sample of (w, h) ``size``.

    Always three draws (x, y, flip), whatever the mode, so one sample's choices never
    depend on another's. The crop range is the scaled size minus ``crop_size``
    (inclusive), as in the official ``get_params``.
    """
    new_w, new_h = scaled_size(opt, size)
    x = int(rng.integers(0, max(0, new_w - opt.crop_size) + 1))
    y = int(rng.integers(0, max(0, new_h - opt.crop_size) + 1))
    flip = bool(rng.random() > 0.5)
    return TransformParams((x, y), flip)


def apply_transform(img: Image.Image, opt, params: TransformParams,
                    method: int = Image.BICUBIC) -> Image.Image:
    """Scale, crop and flip one PIL image (label maps: ``method=Image.NEAREST``)."""
    mode = opt.preprocess_mode
    w, h = img.size
    nw, nh = scaled_size(opt, (w, h))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), method)
    if "crop" in mode:
        x, y = params.crop_pos
        img = img.crop((x, y, x + opt.crop_size, y + opt.crop_size))
    if mode == "none":
        rw, rh = _round_to_base(*img.size)
        if (rw, rh) != img.size:
            img = img.resize((rw, rh), method)
    if mode == "fixed":
        img = img.resize((opt.crop_size, int(round(opt.crop_size / opt.aspect_ratio))), method)
    if opt.isTrain and not opt.no_flip and params.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def label_image_to_ids(img: Image.Image, path: str = "<label>") -> Image.Image:
    """A single-channel PIL image of class/instance ids from a label file's image.

    8-bit (L), palette (P: the palette indices are the ids), 16-bit and 32-bit maps are
    kept as they are. RGB/RGBA maps are accepted only when R == G == B (a grey map saved
    as RGB); real colour label maps raise SpadeganError pointing to convert-labels.
    """
    mode = img.mode
    if mode in ("L", "P", "I", "F"):
        return img
    if mode.startswith("I;16"):
        return img.convert("I")
    if mode in ("LA", "PA"):
        return img.getchannel(0)
    if mode in ("1",):
        return img.convert("L")
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(img)[..., :3]
        grey = grey_ids(arr)
        if grey is not None:
            return Image.fromarray(np.ascontiguousarray(grey))
        raise SpadeganError(colour_label_message(path, arr))
    raise SpadeganError(f"{path}: label maps must be single-channel id images, got PIL mode {mode}; "
                        "save them as 8-bit grayscale PNGs holding class ids")


def colour_label_message(path: str, rgb: np.ndarray) -> str:
    """The error for an RGB label map whose channels differ (a colour-coded map)."""
    flat = rgb.reshape(-1, 3)
    sample = flat[np.flatnonzero((flat[:, 0] != flat[:, 1]) | (flat[:, 1] != flat[:, 2]))[:1]]
    colour = tuple(int(v) for v in sample[0]) if len(sample) else None
    return (f"{path}: looks like a colour label map (RGB pixels such as {colour}), but class ids "
            "are expected (one 8-bit grayscale value per pixel); convert the folder with "
            "`spadegan convert-labels --palette PALETTE in_dir out_dir` (PALETTE: ade20k, coco, "
            "cityscapes, landscapes, a classes.json or an 'R G B' per-line text file)")


# Per-pixel arithmetic is done in numpy: in DataLoader workers on a busy machine torch's
# small elementwise ops cost more in dispatch/threading than the work itself.
def label_to_tensor(img: Image.Image, dontcare_to: int | None = None) -> torch.Tensor:
    """Single-channel id image -> float tensor ``1xHxW`` holding the ids themselves.

    ``dontcare_to``: the value 255 (dontcare) is replaced by this (``label_nc``).
    """
    arr = np.array(img, dtype=np.float32)  # a fresh, writable copy
    if dontcare_to is not None:
        arr[arr == 255] = dontcare_to
    return torch.from_numpy(arr)[None]


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor ``3xHxW`` in ``[-1, 1]``.

    Computed as ``(x / 255 - 0.5) / 0.5`` in float32, the official ToTensor + Normalize.
    """
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    out = arr.astype(np.float32, order="C")  # a C-contiguous CHW copy
    out /= 255.0
    out -= 0.5
    out /= 0.5
    return torch.from_numpy(out)


def transform_label(img: Image.Image, opt, params: TransformParams, path: str = "<label>",
                    dontcare_to: int | None = None) -> torch.Tensor:
    """Label or instance map -> ``1xHxW`` float ids, nearest-neighbour resized."""
    ids = label_image_to_ids(img, path)
    return label_to_tensor(apply_transform(ids, opt, params, Image.NEAREST), dontcare_to)


def transform_image(img: Image.Image, opt, params: TransformParams) -> torch.Tensor:
    """Photo (any PIL mode; converted to RGB) -> ``3xHxW`` in ``[-1, 1]``, bicubic resized."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return image_to_tensor(apply_transform(img, opt, params, Image.BICUBIC))


# ---- image labels (--label_nc 0) ---------------------------------------------------------------
_GREY_MODES = ("1", "L", "LA", "I", "F")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def label_image_channels(img: Image.Image, path: str = "<label>") -> int:
    """The channels a label image gives: 1 for greyscale files (L, I, I;16, F, 1), 3 for colour ones."""
    if img.mode in _GREY_MODES or img.mode.startswith("I;16"):
        return 1
    if img.mode in _COLOUR_MODES:
        return 3
    raise SpadeganError(f"{path}: unsupported image mode {img.mode} for a label image; save it as an 8-bit "
                        "greyscale or RGB PNG")


def channels_message(path: str, found: int, expected: int, source: str = "--input_nc") -> str:
    """The error for a label image whose channel count differs from the model's."""
    kind = {1: "greyscale", 3: "RGB"}
    return (f"{path} has {found} channel(s) ({kind.get(found, '?')}) but {source} is {expected} "
            f"({kind.get(expected, '?')}); save every label image with {expected} channel(s)")


def label_image_array(img: Image.Image, path: str = "<label>", channels: int | None = None,
                      source: str = "--input_nc") -> np.ndarray:
    """A label image -> (H, W, C) float32 in [0, 1]; `channels` (1 or 3), if given, must match the
    file (else the error names the file, both counts and `source`, where the expected count is from)."""
    c = label_image_channels(img, path)
    if channels is not None and c != channels:
        raise SpadeganError(channels_message(path, c, channels, source))
    mode = img.mode
    if c == 3:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if mode in ("1", "LA"):
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "L":
        arr = arr / 255.0
    elif img.mode != "F":  # 16- and 32-bit integer greyscale: depth maps and the like
        arr = np.clip(arr / 65535.0, 0.0, 1.0)
    return arr[..., None]


def _channels_to_tensor(chans: list[Image.Image]) -> torch.Tensor:
    out = np.stack([np.asarray(ch, dtype=np.float32) for ch in chans])
    out -= 0.5
    out /= 0.5
    return torch.from_numpy(out)


def transform_label_image(img: Image.Image, opt, params: TransformParams, path: str = "<label>",
                          channels: int | None = None) -> torch.Tensor:
    """Image label -> ``CxHxW`` float in [-1, 1]: bilinear resize, the photo's crop and flip."""
    arr = label_image_array(img, path, channels)
    chans = [apply_transform(Image.fromarray(np.ascontiguousarray(arr[..., i])), opt, params,
                             Image.BILINEAR) for i in range(arr.shape[-1])]
    return _channels_to_tensor(chans)


def _resized_channels(arr: np.ndarray, size: tuple[int, int]) -> list[Image.Image]:
    chans = []
    for i in range(arr.shape[-1]):
        ch = Image.fromarray(np.ascontiguousarray(arr[..., i], dtype=np.float32))
        chans.append(ch if ch.size == (size[1], size[0]) else ch.resize((size[1], size[0]), Image.BILINEAR))
    return chans


def resize_label_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> (h, w, C) at (h, w) ``size``, bilinear per channel (as the datasets)."""
    return np.stack([np.asarray(ch, dtype=np.float32) for ch in _resized_channels(arr, size)], -1)


def resize_label_image(arr: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, C) float32 in [0, 1] -> ``CxHxW`` in [-1, 1] at (h, w) ``size`` (bilinear, as the datasets)."""
    return _channels_to_tensor(_resized_channels(arr, size))
