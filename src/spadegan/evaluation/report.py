"""What `spadegan eval` reports: metric rows, the printed table, metrics.json, samples.png,
and where each checkpoint sits on the epoch axis (for metrics against epoch)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpadeganError
from .split import EvalSplit


def epoch_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, G weights) of every `<epoch>_net_G` file; .pth before .safetensors (checkpoint rule)."""
    from ..checkpoint import WEIGHT_SUFFIXES

    found: dict[int, Path] = {}
    for suffix in WEIGHT_SUFFIXES:
        for p in folder.glob(f"*_net_G{suffix}"):
            m = re.fullmatch(r"(\d+)_net_G" + re.escape(suffix), p.name)
            if m:
                found.setdefault(int(m.group(1)), p)
    return sorted(found.items())


def _latest_epoch_position(folder: Path) -> float | None:
    """Where 'latest' sits on the epoch axis, from iter.txt (and the loss log's epoch length)."""
    try:
        nums = [int(float(x)) for x in (folder / "iter.txt").read_text().replace(",", " ").split()]
    except (OSError, ValueError):
        return None
    if len(nums) < 2:
        return None
    epoch, into = nums[0], nums[1]
    if into == 0:
        return float(epoch - 1)  # saved at the end of epoch - 1
    log = folder / "loss_log.txt"
    if log.is_file():
        from .plots import parse_loss_log

        entries = parse_loss_log(log)
        length = max((e["iters"] for e in entries), default=0)
        if length > 0:
            return epoch - 1 + min(1.0, into / length)
    return None


def weights_epoch(weights: Path, folder: Path) -> float | None:
    m = re.fullmatch(r"(\d+)_net_G\.(?:pth|safetensors)", weights.name)
    if m:
        return float(m.group(1))
    if weights.stem == "latest_net_G":
        return _latest_epoch_position(folder)
    return None


def class_names(opt: Any, n: int) -> list[str]:
    from ..data.palettes import classes_for_dataset_mode

    if n == 0:  # image labels (--label_nc 0): no classes
        return []
    try:
        classes = classes_for_dataset_mode(opt.dataset_mode, opt.label_nc)
    except SpadeganError:
        classes = classes_for_dataset_mode("custom", opt.label_nc)
    names = {c.id: c.name for c in classes}
    return [names.get(i, f"class {i}") for i in range(n)]


def metrics_row(seg: dict[str, Any] | None, fid: dict[str, Any] | None, names: list[str],
         seg_dist: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"miou": None, "pixel_accuracy": None, "mean_accuracy": None, "per_class_iou": None,
                           "seg_fd": None, "seg_kid_mean": None, "seg_kid_std": None}
    if seg is not None:
        row.update(miou=seg["miou"], pixel_accuracy=seg["pixel_accuracy"], mean_accuracy=seg["mean_accuracy"],
                   per_class_iou={n: (None if math.isnan(v) else v) for n, v in zip(names, seg["per_class_iou"])})
    if fid is not None:
        row.update(fid)
    if seg_dist is not None:
        row.update(seg_dist)
    return row


def _fmt(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"


def format_table(metrics: dict[str, Any]) -> str:
    """The results table printed by ``spadegan eval`` (mIoU and accuracy in percent)."""
    rows = [("synthesized", metrics["synthesized"]), ("real (mIoU bound, segFD floor)", metrics["real"])]
    if metrics.get("baseline") and metrics["baseline"].get("status", "ok") == "ok":
        rows.append(("baseline: class mean colours", metrics["baseline"]))
    fid_ok = metrics["fid_status"] == "ok"
    sfd = metrics.get("seg_fd") or {"status": "off"}
    sfd_ok = sfd["status"] == "ok"
    sfd_none = "off" if sfd["status"] == "off" else "unavail."
    head = (f"{'':30} {'mIoU':>6} {'acc':>6} {'m.acc':>6} {'FID':>8} {'KID x1e3':>9} "
            f"{'segFD':>7} {'segKID x1e3':>11}")
    lines = [head, "-" * len(head)]
    for title, r in rows:
        is_real = title.startswith("real")
        fid = "-" if is_real else (_fmt(r.get("fid")) if fid_ok else "unavail.")
        kid = "-" if is_real else (_fmt(None if r.get("kid_mean") is None else 1e3 * r["kid_mean"])
                                   if fid_ok else "unavail.")
        sfd_v = _fmt(r.get("seg_fd"), digits=3) if sfd_ok else sfd_none
        skid_v = (_fmt(None if r.get("seg_kid_mean") is None else 1e3 * r["seg_kid_mean"])
                  if sfd_ok else sfd_none)
        lines.append(f"{title:30} {_fmt(r['miou'], True):>6} {_fmt(r['pixel_accuracy'], True):>6} "
                     f"{_fmt(r['mean_accuracy'], True):>6} {fid:>8} {kid:>9} {sfd_v:>7} {skid_v:>11}")
    notes = []
    if metrics.get("miou_status") == "n/a":
        notes.append(f"mIoU n/a: {metrics['miou_reason']}")
    elif metrics["segmenter"]["status"] != "ok":
        notes.append(f"mIoU unavailable: {metrics['segmenter']['reason']}")
    if not fid_ok:
        notes.append(f"FID/KID unavailable: {metrics['fid_reason']}")
    if sfd_ok:
        ref = sfd["reference"]
        notes.append(f"segFD/segKID: distances in the segmenter's feature space to {ref['num_images']} real "
                     f"{ref['phase']} photos (not FID/KID; lower = more like real photos; the real row is "
                     "the floor from two independent real sets); see metrics.json seg_fd.description")
    elif sfd["status"] == "unavailable":
        notes.append(f"segFD/segKID unavailable: {sfd['reason']}")
    if metrics.get("baseline") and metrics["baseline"].get("status") == "unavailable":
        notes.append(f"baseline unavailable: {metrics['baseline']['reason']}")
    notes += metrics.get("notes", [])
    return "\n".join(lines + [f"note: {n}" for n in notes])


def samples_png(path: Path, split: EvalSplit, fake: torch.Tensor, baseline: torch.Tensor | None,
                 opt: Any, n: int) -> str:
    """A grid: one row per example with label (colours, or the label image), real photo, synthesized, baseline."""
    from ..visuals import label_palette, label_to_numpy

    n = min(n, len(split))
    cols = []
    if opt.image_label:
        cols.append(label_to_numpy(split.labels[:n], opt))
    else:
        pal = label_palette(opt)
        cols.append(pal[split.labels[:n].clamp(0, pal.shape[0] - 1).numpy()])
    cols.append(split.images[:n].permute(0, 2, 3, 1).numpy())
    cols.append(fake[:n].permute(0, 2, 3, 1).numpy())
    if baseline is not None:
        cols.append(baseline[:n].permute(0, 2, 3, 1).numpy())
    return save_grid(cols, path)


def save_grid(columns: list[np.ndarray], path: Path, gap: int = 2) -> str:
    """Columns of N x H x W x 3 uint8 pictures as one PNG grid (row i = the i-th of each), white gaps."""
    from ..visuals import save_png

    n, h, w = columns[0].shape[:3]
    grid = np.full((n * (h + gap) - gap, len(columns) * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        for j, col in enumerate(columns):
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = col[i]
    save_png(grid, path)
    return str(path)


def write_json(path: Path, obj: Any) -> None:
    from ..fileio import atomic_write_bytes

    def clean(v: Any) -> Any:  # JSON has no NaN: write null
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    atomic_write_bytes(path, (json.dumps(clean(obj), indent=2) + "\n").encode())


#: Metrics recorded per checkpoint in ``metrics.json`` "epochs" and plotted against epoch.
HISTORY_KEYS = ("miou", "pixel_accuracy", "fid", "kid_mean", "seg_fd", "seg_kid_mean")
