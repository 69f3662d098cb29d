"""Tensors -> pictures and HTML pages, shared by training, `spadegan test`, eval and synthesize.

- `to_uint8` / `image_to_numpy`: images in [-1, 1] -> uint8 levels / (B, H, W, 3) arrays;
  `from_uint8` back;
  `tile`: a batch as one picture;
- `label_palette` / `label_to_numpy`: label maps in the dataset's palette colours (image
  labels as they are; a dataset mode without a class table, e.g. facades, gets generated
  colours, said once);
- `save_png`: an atomic PNG write;
- `write_results_page`: the `index.html` grid of images (what `spadegan test` writes), built
  from `page` and `image_row`, which the training visualizer's web/ page uses too.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .device import say_once
from .fileio import atomic_write_bytes
from .options import Options


# ---- tensors -> pictures --------------------------------------------------------------------
def tile(images: np.ndarray, max_cols: int = 8) -> np.ndarray:
    """(B, H, W, 3) uint8 -> one (rows*H, cols*W, 3) picture, at most `max_cols` across."""
    b, h, w, c = images.shape
    cols = min(b, max_cols)
    rows = math.ceil(b / cols)
    out = np.zeros((rows * h, cols * w, c), dtype=images.dtype)
    for i in range(b):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return out


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 levels (same shape, on the CPU), rounded as a PNG stores them."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 levels -> float images in [-1, 1] (the inverse of `to_uint8`)."""
    return images.float() / 127.5 - 1.0


def image_to_numpy(t: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (B,3,H,W) or (3,H,W) -> (B,H,W,3) uint8."""
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.size(1) == 1:
        t = t.expand(-1, 3, -1, -1)
    return to_uint8(t).permute(0, 2, 3, 1).contiguous().numpy()


def label_palette(opt: Options) -> np.ndarray:
    """(label_channels, 3) colours for the ids the networks see (dontcare index -> black)."""
    from .data.palettes import DATASET_CLASS_TABLES, DONTCARE, classes_for_dataset_mode, palette_array
    mode = opt.dataset_mode
    if mode not in DATASET_CLASS_TABLES and mode != "custom":  # e.g. facades: no class table
        say_once(f"--dataset_mode {mode} has no palette: label maps are drawn in generated colours "
                 "(those of --dataset_mode custom)")
        mode = "custom"
    classes = classes_for_dataset_mode(mode, opt.label_nc)
    n = opt.label_channels
    pal = palette_array(classes, n)
    if opt.contain_dontcare_label and not any(c.id == opt.label_nc and c.id != DONTCARE for c in classes):
        # index label_nc is the mapped 255 (coco, custom): draw it black like the palettes do
        pal[opt.label_nc] = 0
    return pal


def label_to_numpy(label: torch.Tensor, opt: Options) -> np.ndarray:
    """Label maps (B,1,H,W) or (1,H,W) of ids -> (B,H,W,3) uint8 in the dataset's colours; image
    labels (--label_nc 0: (B,C,H,W) in [-1, 1]) as the pictures they are."""
    from .data.palettes import label_to_color
    if opt.image_label:
        return image_to_numpy(label)
    t = label.detach().cpu()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    ids = t[:, 0].round().long().numpy()
    pal = label_palette(opt)
    return np.stack([label_to_color(m, pal) for m in ids])


def save_png(arr: np.ndarray, path: str | Path) -> None:
    """Atomic PNG write (a reader never sees half an image)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---- HTML -------------------------------------------------------------------------------------
_STYLE = ("body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated;border:1px solid #ccc}"
          "td{padding:4px;text-align:center;vertical-align:top;font-size:small}")


def page(title: str, body: str, refresh: int | None = None) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{meta}<title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n"
            ).encode()


def image_row(cells: Iterable[tuple[str, str]], width: int) -> str:
    tds = "".join(f'<td><a href="{html.escape(src)}"><img src="{html.escape(src)}" style="width:{width}px">'
                  f"</a><br>{html.escape(caption)}</td>" for src, caption in cells)
    return f"<table><tr>{tds}</tr></table>\n"


def write_results_page(folder: str | Path, title: str, rows: Sequence[tuple[str, Sequence[tuple[str, str]]]],
                       width: int = 256) -> Path:
    """`folder/index.html`: one table row per (heading, [(image path relative to folder, caption)])."""
    folder = Path(folder)
    body = "".join(f"<h3>{html.escape(head)}</h3>\n" + image_row(cells, width) for head, cells in rows)
    path = folder / "index.html"
    atomic_write_bytes(path, page(title, body))
    return path
