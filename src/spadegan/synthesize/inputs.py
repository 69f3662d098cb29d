"""Reading what a user hands the synthesizer: label maps, label images, instance maps, style photos.

This is spadegan's one label decoder: `spadegan synthesize`, the `Synthesizer` API and the
paint app (`spadegan.app.inputs`) all turn a label map into class ids with `read_label_ids`
under a `LabelSpace`, which says which ids the model accepts and what 255 means:

- `LabelSpace.for_options(opt, classes)`: a checkpoint's ids; with a dontcare class
  (`--contain_dontcare_label`) 255 becomes the extra class `label_nc`, as in the datasets;
- `LabelSpace.model_ids(n, classes)`: ids already in the model's numbering (0..n-1, 255 is
  just an id), the paint app's protocol (`spadegan.app.backend.SynthesisBackend`);
- `LabelSpace.dataset_ids(n, classes)`: a dataset's own ids 0..n-1 with 255 (dontcare) kept
  as 255, for official OASIS runs, whose generator maps them itself
  (`spadegan.oasis_checkpoint.oasis_label_channels`).

A label map is an 8/16-bit id image (or array/tensor), or a colour image in the palette
(`spadegan.data.palettes.color_to_label`; a grey R == G == B image reads as ids). A colour not
in the palette, an id the model does not know, a missing or unreadable file raise
`SpadeganError` naming the file (`where`) and the value. The result is range-checked here,
once; what comes out is what the network may read.

Models trained with `--label_nc 0` read a label *image* instead (`read_label_image`):
greyscale or RGB, `input_nc` channels, as float32 in [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..data.palettes import ClassInfo, color_to_label, grey_ids
from ..data.transforms import channels_message, image_to_tensor, label_image_array
from ..errors import SpadeganError

IMAGE_EXTS = {".png", ".bmp", ".gif", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
DONTCARE = 255
#: how many out-of-range ids an error lists
_MAX_LISTED_IDS = 8

LabelLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, Image.Image]
ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, Image.Image]


@dataclass(frozen=True)
class LabelSpace:
    """The class ids a model accepts and how a label map's values become them.

    `channels`: ids accepted after the dontcare mapping (0..channels-1); `dontcare`: whether
    255 means the extra class `label_nc`; `classes`: the palette colour label maps are read
    with; `accepts`: the rule as error messages state it; `keeps_dontcare`: 255 is accepted
    and kept as it is (`dataset_ids`).
    """

    label_nc: int
    channels: int
    dontcare: bool
    classes: tuple[ClassInfo, ...]
    accepts: str
    keeps_dontcare: bool = False

    @classmethod
    def for_options(cls, opt: Any, classes: Sequence[ClassInfo]) -> "LabelSpace":
        """A checkpoint's label space (its options: label_nc, contain_dontcare_label, dataset_mode)."""
        dontcare = bool(opt.contain_dontcare_label)
        if dontcare:
            top = opt.label_nc if opt.dataset_mode == "ade20k" else opt.label_nc - 1
            accepts = f"0..{top} and 255 (dontcare)"
        else:
            accepts = f"0..{opt.label_channels - 1} (label_nc={opt.label_nc}, no dontcare class)"
        return cls(opt.label_nc, opt.label_channels, dontcare, tuple(classes), accepts)

    @classmethod
    def model_ids(cls, n: int, classes: Sequence[ClassInfo | dict]) -> "LabelSpace":
        """Ids in the model's own numbering, 0..n-1, where 255 is an id like any other (the paint
        app's protocol). `classes`: ClassInfo or {"id", "name", "color"} dicts."""
        infos = tuple(c if isinstance(c, ClassInfo) else ClassInfo(
            int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]))  # type: ignore[arg-type]
            for c in classes)
        return cls(n, n, False, infos, f"ids 0..{n - 1} (label_nc={n})")

    @classmethod
    def dataset_ids(cls, n: int, classes: Sequence[ClassInfo]) -> "LabelSpace":
        """A dataset's own ids 0..n-1 plus 255 (dontcare), which stays 255 (official OASIS runs)."""
        return cls(n, n, False, tuple(classes), f"0..{n - 1} and {DONTCARE} (dontcare)", keeps_dontcare=True)


# ---- files ----------------------------------------------------------------------------------------
def open_image(path: Path, what: str) -> Image.Image:
    """Open and decode an image file; a missing, folder, unreadable or oversized file raises
    SpadeganError naming `what` and the path."""
    if not path.exists():
        raise SpadeganError(f"{what} {path} does not exist")
    if path.is_dir():
        raise SpadeganError(f"{what} {path} is a folder, not an image file")
    try:
        im = Image.open(path)
        im.load()
    except Image.DecompressionBombError as e:  # Pillow's pixel limit: a tiny file may declare a huge image
        raise SpadeganError(f"{what} {path} is refused: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SpadeganError(f"{what} {path} cannot be read as an image ({e}); is it a PNG?") from None
    return im


def ids_from_image(im: Image.Image, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ids, None) for id images (alpha dropped), (None, rgb) for colour images."""
    mode = im.mode
    if mode in ("L", "P", "I", "1") or mode.startswith("I;16"):
        return np.asarray(im if mode != "1" and not mode.startswith("I;16") else im.convert("I")).astype(np.int64), None
    if mode in ("LA", "PA"):
        return np.asarray(im.getchannel(0)).astype(np.int64), None
    if mode == "F":
        arr = np.asarray(im)
        if not np.all(arr == np.round(arr)):
            raise SpadeganError(f"{where}: a float image with non-integer values is not a label map")
        return arr.astype(np.int64), None
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return None, np.asarray(im.convert("RGB"))
    raise SpadeganError(f"{where}: unsupported image mode {mode}; save label maps as 8-bit PNGs")


def _ids_from_array(label: np.ndarray | torch.Tensor, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    arr = np.squeeze(arr) if arr.ndim > 2 and arr.shape[0] == 1 else arr
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return None, arr[..., :3].astype(np.uint8)
    if arr.ndim == 2:
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise SpadeganError(f"{where}: label values must be integer class ids")
        return arr.astype(np.int64), None
    raise SpadeganError(f"{where}: a label map must be H x W ids or H x W x 3 colours, got shape {arr.shape}")


# ---- class-id label maps ----------------------------------------------------------------------------
def ids_from_colours(rgb: np.ndarray, space: LabelSpace, where: str) -> np.ndarray:
    """(H, W, 3) colours -> int64 ids: the palette's colours, else a grey id map saved as RGB,
    else the palette's error naming the unknown colours."""
    try:
        return color_to_label(rgb, list(space.classes), where).astype(np.int64)
    except SpadeganError:
        grey = grey_ids(rgb)
        if grey is None:
            raise
        return grey.astype(np.int64)


def check_ids(ids: np.ndarray, space: LabelSpace, where: str) -> np.ndarray:
    """Map 255 to the dontcare class (when the space has one) and check every id is accepted;
    an unknown id raises SpadeganError naming `where`, the ids (lowest first, with pixel counts)
    and the rule."""
    if space.dontcare:
        ids = np.where(ids == DONTCARE, space.label_nc, ids)
    bad = (ids < 0) | (ids >= space.channels)
    if space.keeps_dontcare:
        bad &= ids != DONTCARE
    if bad.any():
        vals, counts = np.unique(ids[bad], return_counts=True)
        listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(vals[:_MAX_LISTED_IDS], counts[:_MAX_LISTED_IDS]))
        more = f" and {len(vals) - _MAX_LISTED_IDS} more" if len(vals) > _MAX_LISTED_IDS else ""
        raise SpadeganError(f"{where}: label id(s) {listed}{more} not known to this model, which accepts "
                            f"{space.accepts}; use the ids of the dataset it was trained on")
    return ids


def read_label_ids(label: LabelLike, space: LabelSpace, where: str | None = None) -> np.ndarray:
    """Any label map (path, PIL image, (H, W) ids or (H, W, 3) colours as array or tensor) ->
    (H, W) int64 ids of `space`, dontcare mapped, validated (see the module docstring)."""
    if isinstance(label, (str, os.PathLike)):
        where = where or str(label)
        label = open_image(Path(label), "label map")
    where = where or "label map"
    ids, rgb = ids_from_image(label, where) if isinstance(label, Image.Image) else _ids_from_array(label, where)
    if rgb is not None:
        ids = ids_from_colours(rgb, space, where)
    return check_ids(ids, space, where)


# ---- label images (--label_nc 0) -------------------------------------------------------------------
def _array_label_image(label: np.ndarray | torch.Tensor, where: str, channels: int) -> np.ndarray:
    """An (H, W[, C]) array or (C, H, W) tensor image label -> (H, W, C) float32 in [0, 1]."""
    is_tensor = isinstance(label, torch.Tensor)
    arr = label.detach().cpu().numpy() if is_tensor else np.asarray(label)
    if is_tensor and arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise SpadeganError(f"{where}: a label image must be H x W (greyscale) or H x W x 3 (RGB), "
                            f"got shape {tuple(arr.shape)}")
    arr = arr[..., :3]  # alpha is not part of the label
    if arr.shape[-1] != channels:
        raise SpadeganError(channels_message(where, arr.shape[-1], channels, "this model's input_nc"))
    if arr.dtype in (np.uint8, np.uint16):
        return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 65535.0)
    if arr.dtype.kind != "f":
        raise SpadeganError(f"{where}: label image arrays must be uint8, uint16 or float in [0, 1], not {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise SpadeganError(f"{where}: a float label image must hold values in [0, 1] (uint8: 0..255), "
                            f"got {float(arr.min()):.3g}..{float(arr.max()):.3g}")
    return arr.astype(np.float32)


def read_label_image(label: LabelLike, channels: int, where: str | None = None) -> np.ndarray:
    """An image label (path, PIL image, (H, W[, C]) array, (C, H, W) tensor) -> (H, W, channels)
    float32 in [0, 1]; another channel count raises SpadeganError naming the file and both counts."""
    if isinstance(label, (str, os.PathLike)):
        where = where or str(label)
        label = open_image(Path(label), "label image")
    where = where or "label image"
    if isinstance(label, Image.Image):
        return label_image_array(label, where, channels, source="this model's input_nc")
    return _array_label_image(label, where, channels)


# ---- instance maps and style photos -----------------------------------------------------------------
def read_instance_ids(instance: LabelLike, where: str | None = None) -> np.ndarray:
    """An instance map (path, PIL image, array, tensor) -> (H, W) int64 ids; in a colour image
    every distinct colour is an instance."""
    if isinstance(instance, (str, os.PathLike)):
        where = where or str(instance)
        instance = open_image(Path(instance), "instance map")
    where = where or "instance map"
    if isinstance(instance, Image.Image):
        ids, rgb = ids_from_image(instance, where)
        if rgb is not None:
            ids = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        return ids
    arr = instance.detach().cpu().numpy() if isinstance(instance, torch.Tensor) else np.asarray(instance)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise SpadeganError(f"{where}: an instance map must be H x W ids, got shape {arr.shape}")
    return arr.astype(np.int64)


def style_tensor(style: ImageLike, size: tuple[int, int], where: str | None = None) -> torch.Tensor:
    """A photo (path, PIL image, (H, W[, 3]) array or tensor) -> (3, H, W) in [-1, 1] at `size`
    (H, W), bicubic, as the datasets resize and normalise photos."""
    if isinstance(style, (str, os.PathLike)):
        where = where or str(style)
        style = open_image(Path(style), "style image")
    if isinstance(style, torch.Tensor):
        style = style.detach().cpu().numpy()
    if isinstance(style, np.ndarray):
        arr = style if style.dtype == np.uint8 else np.clip(style, 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise SpadeganError(f"{where or 'style image'}: expected H x W x 3 uint8, got shape {arr.shape}")
        style = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    im = style.convert("RGB")
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BICUBIC)
    return image_to_tensor(im)
