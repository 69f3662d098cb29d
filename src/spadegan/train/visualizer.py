"""What training shows: loss_log.txt, the web/ page of samples, TensorBoard, result pages.

Files follow the official layout under `checkpoints/<name>/`:
- `loss_log.txt`: a header line per run, then `(epoch: E, iters: I, time: T) GAN: x ...`
  lines (iters = samples into the epoch, time = seconds per sample, as the official code).
- `web/index.html` + `web/images/epochEEE_iterIII_{input_label,synthesized_image,real_image}.png`
  (batches tiled into one picture, label maps in the dataset's palette colours).
- `logs/`: TensorBoard scalars and images (skipped, with one line saying why, when tensorboard
  is not installed or fails to import; other failures of TensorBoard are errors).
The pictures and pages themselves are made by `spadegan.visuals`.
"""

from __future__ import annotations

import html
import re
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..fileio import atomic_write_bytes
from ..options import Options
from ..visuals import image_row, image_to_numpy, label_to_numpy, page, save_png, tile


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
        self.writer = self._open_tensorboard()

    def _open_tensorboard(self):
        """TensorBoard's writer under logs/, or None after one line saying why: tensorboard not
        installed (an optional extra), or installed but failing to import (its error named).
        Any other failure propagates."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            if isinstance(e, ModuleNotFoundError) and e.name == "tensorboard":
                self._print("TensorBoard logging off: tensorboard is not installed "
                            "(pip install 'spadegan[train]')")
            else:  # e.g. a version torch refuses, or a missing dependency of tensorboard
                self._print(f"TensorBoard logging off: tensorboard is installed but cannot be imported "
                            f"({type(e).__name__}: {e}); reinstall it (pip install 'spadegan[train]')")
            return None
        return SummaryWriter(log_dir=str(self.dir / "logs"))

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
        body = "".join(f"<h3>{html.escape(h)}</h3>\n" + image_row(cells, self.opt.display_winsize)
                       for h, cells in rows)
        path = self.web_dir / "index.html"
        atomic_write_bytes(path, page(f"Experiment name = {self.opt.name}", body, refresh=60))
        return path

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None
