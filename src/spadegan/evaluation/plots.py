"""Training curves from a SPADE ``loss_log.txt`` and metric curves from an eval history.

The log format is the official one, which our trainer also writes, e.g.::

    ================ Training Loss (Mon Jan  1 00:00:00 2024) ================
    (epoch: 1, iters: 100, time: 0.123) GAN: 0.812 GAN_Feat: 1.234 VGG: 2.345 D_Fake: 0.456 D_real: 0.567

Any ``name: value`` pairs after the parenthesis are read (``KLD``, ``GAN_Feat`` ...), so the
plot adapts to whichever losses were enabled. Figures are drawn with matplotlib's Agg
renderer through ``matplotlib.figure.Figure`` directly, so nothing here changes the global
pyplot backend of a host program.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SpadeganError

__all__ = ["parse_loss_log", "plot_loss_log", "plot_metrics"]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf)"
_HEADER = re.compile(r"^\s*\((?P<head>[^)]*)\)(?P<rest>.*)$")
_PAIR = re.compile(r"([A-Za-z_][\w.]*)\s*:\s*(" + _NUMBER + r")", re.IGNORECASE)
_EXAMPLE = "(epoch: 1, iters: 100, time: 0.123) GAN: 0.812 GAN_Feat: 1.234 VGG: 2.345"


def parse_loss_log(loss_log_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries of a ``loss_log.txt``: dicts with ``epoch``, ``iters``, ``time``, ``losses``.

    Header and other non-matching lines are skipped, so appended logs of resumed runs work.
    """
    path = os.fspath(loss_log_path)
    if not os.path.isfile(path):
        raise SpadeganError(f"loss log '{path}' does not exist; it is written as "
                            "checkpoints/<name>/loss_log.txt during training")
    entries: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _HEADER.match(line)
            if not m:
                continue
            head = {k.lower(): float(v) for k, v in _PAIR.findall(m.group("head"))}
            if "epoch" not in head or "iters" not in head:
                continue
            losses = {k: float(v) for k, v in _PAIR.findall(m.group("rest"))}
            if not losses:
                continue
            entries.append({"epoch": int(head["epoch"]), "iters": int(head["iters"]),
                            "time": head.get("time"), "losses": losses})
    return entries


def _new_figure(n_panels: int, ncols_max: int = 3) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise SpadeganError(
            "plotting needs matplotlib; install it with `pip install matplotlib` "
            "(or `pip install spadegan[eval]`)"
        ) from exc
    ncols = max(1, min(ncols_max, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Any, out_png: str | os.PathLike[str]) -> str:
    out = os.fspath(out_png)
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        fig.savefig(out, dpi=100, format="png")
    except OSError as exc:
        raise SpadeganError(f"cannot write plot '{out}': {exc}") from exc
    return out


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc, buf = [], 0.0, []
    for v in values:
        buf.append(v)
        acc += v
        if len(buf) > window:
            acc -= buf.pop(0)
        out.append(acc / len(buf))
    return out


def plot_loss_log(loss_log_path: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> str:
    """One subplot per loss against global progress in epochs; returns the PNG path.

    Progress is ``epoch - 1 + iters / E`` with ``E`` the largest ``iters`` in the log (the
    log does not state the epoch length; ``iters`` counts images within the epoch).
    """
    entries = parse_loss_log(loss_log_path)
    if not entries:
        raise SpadeganError(
            f"no loss lines found in '{os.fspath(loss_log_path)}'; expected lines like "
            f"'{_EXAMPLE}'"
        )
    epoch_len = max(max(e["iters"] for e in entries), 1)
    names: list[str] = []
    for e in entries:  # keep first-seen order, which is the trainer's order
        names.extend(k for k in e["losses"] if k not in names)
    fig, axes = _new_figure(len(names))
    for ax, name in zip(axes, names):
        pts = [(e["epoch"] - 1 + e["iters"] / epoch_len, e["losses"][name])
               for e in entries if name in e["losses"] and math.isfinite(e["losses"][name])]
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if len(ys) > 50:
            # Raw GAN losses are noisy; a faint raw line plus a moving average reads better.
            ax.plot(xs, ys, lw=0.6, alpha=0.35, color="tab:blue")
            ax.plot(xs, _moving_average(ys, max(5, len(ys) // 50)), lw=1.4, color="tab:blue")
        else:
            ax.plot(xs, ys, lw=1.2, marker="." if len(ys) < 20 else None, color="tab:blue")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _save(fig, out_png)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_metric_value(v: Any) -> bool:
    # None / NaN / "unavailable" mark a metric that could not be computed that time;
    # other strings (status, reasons) and containers are not plottable metrics.
    if v is None or isinstance(v, float) or _is_number(v):
        return True
    return isinstance(v, str) and v.strip().lower() in {"unavailable", "n/a", "nan"}


def plot_metrics(history: Sequence[Mapping[str, Any]], out_png: str | os.PathLike[str],
                 x_key: str = "epoch") -> str:
    """One subplot per scalar metric in ``history`` (dicts with ``x_key`` + metrics).

    Non-numeric values (None, NaN, "unavailable", lists such as per-class IoU) are skipped;
    a metric that never had a number gets an empty panel saying so, rather than vanishing.
    Returns the PNG path.
    """
    if not history:
        raise SpadeganError("metric history is empty; evaluate at least once before plotting")
    names: list[str] = []
    for i, row in enumerate(history):
        if not isinstance(row, Mapping) or x_key not in row:
            raise SpadeganError(f"metric history entry {i} needs an '{x_key}' key, got {row!r}")
        for k, v in row.items():
            if k != x_key and k not in names and _is_metric_value(v):
                names.append(k)
    if not names:
        raise SpadeganError(f"metric history has no metrics besides '{x_key}'")
    fig, axes = _new_figure(len(names))
    for ax, name in zip(axes, names):
        pts = sorted((row[x_key], row[name]) for row in history
                     if _is_number(row.get(name)) and _is_number(row[x_key]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.2)
        else:
            ax.text(0.5, 0.5, "no values (unavailable)", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.set_title(name)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    return _save(fig, out_png)
