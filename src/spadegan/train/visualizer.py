"""What training shows: loss_log.txt, the web/ page of samples, TensorBoard, result pages.

Files follow the official layout under `checkpoints/<name>/`:
- `loss_log.txt`: a header line per run, then `(epoch: E, iters: I, time: T) GAN: x ...`
  lines (iters = samples into the epoch, time = seconds per sample, as the official code).
- `web/index.html` + `web/images/epochEEE_iterIII_{input_label,synthesized_image,real_image}.png`
  (batches tiled into one picture, label maps in the dataset's palette colours).
- `logs/`: TensorBoard scalars and images (skipped, with one notice, without tensorboard).
`write_results_page` makes the `index.html` grid that `spadegan test` writes.
"""

from __future__ import annotations

import html
import math
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..fileio import atomic_write_bytes
from ..options import Options


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


def image_to_numpy(t: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (B,3,H,W) or (3,H,W) -> (B,H,W,3) uint8."""
    t = t.detach().float().cpu()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.size(1) == 1:
        t = t.expand(-1, 3, -1, -1)
    arr = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).contiguous().numpy()


def label_palette(opt: Options) -> np.ndarray:
    """(label_channels, 3) colours for the ids the networks see (dontcare index -> black)."""
    from ..data.palettes import DONTCARE, classes_for_dataset_mode, palette_array
    try:
        classes = classes_for_dataset_mode(opt.dataset_mode, opt.label_nc)
    except Exception:  # an unknown mode still gets the fallback colours
        classes = classes_for_dataset_mode("custom", opt.label_nc)
    n = opt.label_channels
    pal = palette_array(classes, n)
    if opt.contain_dontcare_label and not any(c.id == opt.label_nc and c.id != DONTCARE for c in classes):
        # index label_nc is the mapped 255 (coco, custom): draw it black like the palettes do
        pal[opt.label_nc] = 0
    return pal


def label_to_numpy(label: torch.Tensor, opt: Options) -> np.ndarray:
    """Label maps (B,1,H,W) or (1,H,W) of ids -> (B,H,W,3) uint8 in the dataset's colours."""
    from ..data.palettes import label_to_color
    t = label.detach().cpu()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    ids = t[:, 0].round().long().numpy()
    pal = label_palette(opt)
    return np.stack([label_to_color(m, pal) for m in ids])


def save_png(arr: np.ndarray, path: str | Path) -> None:
    """Atomic PNG write (a reader never sees half an image)."""
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---- HTML -------------------------------------------------------------------------------------
_STYLE = ("body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated;border:1px solid #ccc}"
          "td{padding:4px;text-align:center;vertical-align:top;font-size:small}")


def _page(title: str, body: str, refresh: int | None = None) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{meta}<title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n"
            ).encode()


def _row(cells: Iterable[tuple[str, str]], width: int) -> str:
    tds = "".join(f'<td><a href="{html.escape(src)}"><img src="{html.escape(src)}" style="width:{width}px">'
                  f"</a><br>{html.escape(caption)}</td>" for src, caption in cells)
    return f"<table><tr>{tds}</tr></table>\n"


def write_results_page(folder: str | Path, title: str, rows: Sequence[tuple[str, Sequence[tuple[str, str]]]],
                       width: int = 256) -> Path:
    """`folder/index.html`: one table row per (heading, [(image path relative to folder, caption)])."""
    folder = Path(folder)
    body = "".join(f"<h3>{html.escape(head)}</h3>\n" + _row(cells, width) for head, cells in rows)
    path = folder / "index.html"
    atomic_write_bytes(path, _page(title, body))
    return path


# ---- the training visualizer ---------------------------------------------------------------------
_SAMPLE_RE = re.compile(r"^epoch(\d+)_iter(\d+)_(.+)\.png$")
VISUAL_ORDER = ("input_label", "synthesized_image", "real_image")


class Visualizer:
    """loss_log.txt, web/ samples and TensorBoard for one run (a no-op on ranks other than 0)."""

    def __init__(self, opt: Options, enabled: bool = True, out=None):
        self.opt = opt
        self.enabled = enabled
        self.out = out  # a callable printing one line (the trainer passes tqdm.write)
        self.dir = opt.expr_dir
        self.web_dir = self.dir / "web"
        self.img_dir = self.web_dir / "images"
        self.log_name = self.dir / "loss_log.txt"
        self.writer = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not opt.no_html:
            self.img_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_name, "a") as fh:
            fh.write("================ Training Loss (%s) ================\n" % time.strftime("%c"))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is an optional extra
            self._print("TensorBoard logging off: install tensorboard (pip install 'spadegan[train]')")
        else:
            self.writer = SummaryWriter(log_dir=str(self.dir / "logs"))

    def _print(self, msg: str) -> None:
        (self.out or (lambda m: print(m, file=sys.stdout, flush=True)))(msg)

    @staticmethod
    def format_errors(epoch: int, i: int, errors: Mapping[str, float], t: float) -> str:
        """The official loss line (note the trailing space)."""
        msg = "(epoch: %d, iters: %d, time: %.3f) " % (epoch, i, t)
        for k, v in errors.items():
            msg += "%s: %.3f " % (k, v)
        return msg

    def print_current_errors(self, epoch: int, i: int, errors: Mapping[str, float], t: float,
                             echo: bool = True) -> None:
        if not self.enabled:
            return
        msg = self.format_errors(epoch, i, errors, t)
        if echo:
            self._print(msg)
        with open(self.log_name, "a") as fh:
            fh.write(msg + "\n")

    def plot_current_errors(self, errors: Mapping[str, float], step: int, lr: Mapping[str, float] | None = None) -> None:
        if not (self.enabled and self.writer):
            return
        for k, v in errors.items():
            self.writer.add_scalar(f"loss/{k}", v, step)
        for k, v in (lr or {}).items():
            self.writer.add_scalar(f"lr/{k}", v, step)
        self.writer.flush()

    def visuals_to_numpy(self, visuals: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        out = {}
        for k, t in visuals.items():
            arr = label_to_numpy(t, self.opt) if "label" in k else image_to_numpy(t)
            out[k] = tile(arr)
        return out

    def display_current_results(self, visuals: Mapping[str, torch.Tensor], epoch: int, step: int) -> None:
        """Save the samples as PNGs, refresh web/index.html and log them to TensorBoard."""
        if not self.enabled:
            return
        pics = self.visuals_to_numpy(visuals)
        if self.writer:
            for k, arr in pics.items():
                self.writer.add_image(k, arr, step, dataformats="HWC")
            self.writer.flush()
        if self.opt.no_html:
            return
        for k, arr in pics.items():
            save_png(arr, self.img_dir / ("epoch%.3d_iter%.3d_%s.png" % (epoch, step, k)))
        self.write_index()

    def write_index(self) -> Path:
        """web/index.html from the sample files present (newest first; survives resumes)."""
        groups: dict[tuple[int, int], dict[str, str]] = {}
        for p in self.img_dir.glob("epoch*_iter*_*.png"):
            m = _SAMPLE_RE.match(p.name)
            if m:
                groups.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = p.name
        rows = []
        for (ep, it), items in sorted(groups.items(), reverse=True):
            keys = [k for k in VISUAL_ORDER if k in items] + sorted(k for k in items if k not in VISUAL_ORDER)
            rows.append((f"epoch {ep}, iters {it}", [("images/" + items[k], k) for k in keys]))
        body = "".join(f"<h3>{html.escape(h)}</h3>\n" + _row(cells, self.opt.display_winsize)
                       for h, cells in rows)
        path = self.web_dir / "index.html"
        atomic_write_bytes(path, _page(f"Experiment name = {self.opt.name}", body, refresh=60))
        return path

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None
