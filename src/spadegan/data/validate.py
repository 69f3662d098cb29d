"""Checking a dataset before training: `validate_dataset` reads every label map, photo and
instance map once and reports problems (unreadable files, colour label maps, size
mismatches, ids the options do not allow) naming the file, the value and the fix. For image
labels (`--label_nc 0`) it checks sizes, channels (against `--input_nc`) and pairing instead
of ids."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import SpadeganError
from . import transforms as T
from .datasets import DONTCARE, PairedDataset
from .files import Sample, open_image, size_text

if TYPE_CHECKING:
    from ..options import Options


@dataclass
class DatasetReport:
    """What :func:`validate_dataset` found. ``problems`` empty means the data is usable."""

    dataset_mode: str
    pairs: int
    label_pixels: dict[int, int] = field(default_factory=dict)  # raw id -> pixels (255 included)
    label_files: dict[int, int] = field(default_factory=dict)  # raw id -> files containing it
    max_id: int = -1  # largest id that is not dontcare
    dontcare_pixels: int = 0
    min_label_nc: int = 1  # smallest --label_nc that fits (with the current dontcare setting)
    label_sizes: Counter = field(default_factory=Counter)  # (w, h) -> count
    photo_modes: Counter = field(default_factory=Counter)  # PIL mode -> count
    label_modes: Counter = field(default_factory=Counter)
    label_channels: Counter = field(default_factory=Counter)  # image labels: channels -> count
    instances: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_pixels(self) -> int:
        return sum(self.label_pixels.values())

    def error_message(self, limit: int = 3) -> str:
        shown = self.problems[:limit]
        more = len(self.problems) - len(shown)
        return "; ".join(shown) + (f" (and {more} more problem kinds; run spadegan check-dataset "
                                   "with the same flags to list them)" if more > 0 else "")


def _read_label(path: str) -> tuple[np.ndarray | None, Image.Image | None, str | None]:
    try:
        img = open_image(path)
    except SpadeganError as e:
        return None, None, str(e)
    try:
        ids = T.label_image_to_ids(img, path)
    except SpadeganError as e:
        return None, img, str(e)
    return np.asarray(ids), img, None


def _read_label_image(path: str) -> tuple[int | None, Image.Image | None, str | None]:
    """(channels, image, error) of an image label (`--label_nc 0`)."""
    try:
        img = open_image(path)
        return T.label_image_channels(img, path), img, None
    except SpadeganError as e:
        return None, None, str(e)


def _probe_photo(path: str) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """Decode a photo (JPEGs at reduced scale: the whole stream is still read, so
    truncation is caught, at a fraction of the cost). Returns (size, mode, error)."""
    try:
        img = Image.open(path)
        size, mode = img.size, img.mode
        if img.format == "JPEG":
            img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        img.load()
        return size, mode, None
    except FileNotFoundError:
        return None, None, f"{path} does not exist"
    except Exception as e:
        return None, None, f"{path}: cannot read image ({e}); re-export or remove the file"


def _check_sample(s: Sample, image_label: bool = False) -> dict[str, Any]:
    """Everything validate_dataset needs from one pair, read once (runs in a thread)."""
    out: dict[str, Any] = {"sample": s, "errors": []}
    if image_label:
        ids = None
        out["channels"], img, err = _read_label_image(s.label)
    else:
        ids, img, err = _read_label(s.label)
    if err:
        out["errors"].append(("colour" if "colour label map" in err else "read", err))
    if img is not None:
        out["label_size"], out["label_mode"] = img.size, img.mode
    if ids is not None:
        if ids.dtype == np.uint8:
            counts = np.bincount(ids.ravel(), minlength=256)
            present = np.flatnonzero(counts)
            out["counts"] = {int(i): int(counts[i]) for i in present}
        else:
            vals, cnt = np.unique(ids, return_counts=True)
            out["counts"] = {int(v): int(c) for v, c in zip(vals, cnt)}
    size, mode, err = _probe_photo(s.image)
    if err:
        out["errors"].append(("read", err))
    else:
        out["photo_mode"] = mode
        if img is not None and size != img.size:
            out["errors"].append(("size", f"{s.label} is {size_text(img.size)} but its photo {s.image} is "
                                          f"{size_text(size)}; label maps and photos must have the same size"))
    if s.instance is not None:
        try:
            inst = open_image(s.instance)
            if img is not None and inst.size != img.size:
                out["errors"].append(("size", f"{s.label} is {size_text(img.size)} but its instance map "
                                              f"{s.instance} is {size_text(inst.size)}; they must have the same size"))
        except SpadeganError as e:
            out["errors"].append(("read", str(e)))
    return out


def validate_dataset(opt: "Options", dataset: PairedDataset, progress: bool = True,
                     raise_on_error: bool = True) -> DatasetReport:
    """Read every label map, photo and instance map once and check them against ``opt``.

    Problems (raised together as one SpadeganError unless ``raise_on_error`` is False):
    unreadable/corrupt files, colour (RGB) label maps where ids are expected, label/photo
    (or instance) sizes that differ, label ids >= label_nc that are not dontcare (255), and
    255 without ``--contain_dontcare_label``; for image labels (``--label_nc 0``), files whose
    channel count is not ``--input_nc``. Each names a file and the value, and the fix.
    Non-RGB photos (converted when loaded) and crops that will be zero-padded are reported
    as warnings.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    samples = list(dataset.samples)
    report = DatasetReport(opt.dataset_mode, len(samples))
    found = _Findings(opt)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(samples), desc="checking dataset", unit="pair", disable=not progress,
                 file=sys.stderr) as bar:
        for r in pool.map(functools.partial(_check_sample, image_label=opt.image_label), samples):
            bar.update(1)
            found.add(r, report)
    found.summarise(report)
    report.problems = found.problems()
    report.warnings += found.warnings(report)
    report.seconds = time.perf_counter() - t0
    if report.problems and raise_on_error:
        raise SpadeganError(report.error_message())
    return report


class _Findings:
    """What `validate_dataset` collects over the pairs, and the problems and warnings it makes of it."""

    def __init__(self, opt: "Options"):
        self.opt = opt
        self.kinds: dict[str, list[str]] = defaultdict(list)  # "read" / "colour" / "size" -> messages
        self.pixels: Counter = Counter()
        self.files: Counter = Counter()
        self.bad_ids: list[tuple[str, int]] = []  # (file, largest offending id)
        self.dontcare_files: list[str] = []
        self.too_small: list[str] = []
        # ade20k keeps its ids 0..150 with label_nc 150: the id label_nc shares the dontcare channel
        self.ade = opt.dataset_mode == "ade20k" and opt.contain_dontcare_label
        self.limit = opt.label_nc + int(self.ade)

    def add(self, r: dict[str, Any], report: DatasetReport) -> None:
        """One pair's `_check_sample` result."""
        opt, s = self.opt, r["sample"]
        for kind, msg in r["errors"]:
            self.kinds[kind].append(msg)
        if "photo_mode" in r:
            report.photo_modes[r["photo_mode"]] += 1
        if "label_size" in r:
            report.label_sizes[r["label_size"]] += 1
            report.label_modes[r["label_mode"]] += 1
            if "crop" in opt.preprocess_mode:
                sw, sh = T.scaled_size(opt, r["label_size"])
                if sw < opt.crop_size or sh < opt.crop_size:
                    self.too_small.append(f"{s.label} ({size_text(r['label_size'])} -> {size_text((sw, sh))})")
        if s.instance is not None:
            report.instances += 1
        if r.get("channels") is not None:
            report.label_channels[r["channels"]] += 1
            if r["channels"] != opt.input_nc:
                self.kinds["channels"].append(T.channels_message(s.label, r["channels"], opt.input_nc))
        counts = r.get("counts")
        if counts is None:
            return
        self.pixels.update(counts)
        self.files.update(counts.keys())
        over = [i for i in counts
                if (i >= self.limit or i < 0) and not (i == DONTCARE and opt.contain_dontcare_label)]
        if DONTCARE in over:
            self.dontcare_files.append(s.label)
        over = [i for i in over if i != DONTCARE]
        if over:
            self.bad_ids.append((s.label, max(over, key=abs)))

    def summarise(self, report: DatasetReport) -> None:
        """The id statistics of the report."""
        report.label_pixels = dict(sorted(self.pixels.items()))
        report.label_files = dict(sorted(self.files.items()))
        report.dontcare_pixels = int(self.pixels.get(DONTCARE, 0))
        report.max_id = max((i for i in self.pixels if i != DONTCARE), default=-1)
        report.min_label_nc = max(1, report.max_id + (0 if self.ade else 1))

    def problems(self) -> list[str]:
        """One message per kind of problem, naming the first file and the fix."""
        opt = self.opt
        problems: list[str] = []
        for kind in ("read", "colour", "size", "channels"):
            msgs = self.kinds.get(kind, [])
            if msgs:
                problems.append(msgs[0] + (f" (and {len(msgs) - 1} more file(s) like it)" if len(msgs) > 1 else ""))
        negative = [(f, i) for f, i in self.bad_ids if i < 0]
        if negative:
            f, i = negative[0]
            problems.append(f"{f}: label id {i} is negative; class ids must be 0 or more")
        bad_ids = [(f, i) for f, i in self.bad_ids if i >= 0]
        if bad_ids:
            f, i = bad_ids[0]
            top = max(i for _, i in bad_ids)
            need = top + (0 if self.ade else 1)
            others = (f" (and {len(bad_ids) - 1} more file(s), ids up to {top})" if len(bad_ids) > 1 else "")
            rule = (f"label id {i} > label_nc {opt.label_nc} (ade20k mode with --contain_dontcare_label "
                    f"takes ids 0..label_nc)" if self.ade else f"label id {i} >= label_nc {opt.label_nc}")
            problems.append(f"{f}: {rule}{others}; pass --label_nc {need} or fix those label maps")
        if self.dontcare_files:
            more = f" (and {len(self.dontcare_files) - 1} more file(s))" if len(self.dontcare_files) > 1 else ""
            problems.append(f"{self.dontcare_files[0]}: label id 255 (dontcare) found{more} but "
                            "--contain_dontcare_label is not set; pass --contain_dontcare_label (255 becomes "
                            f"class {opt.label_nc}), or --label_nc 256 if 255 is a real class")
        return problems

    def warnings(self, report: DatasetReport) -> list[str]:
        """Photos converted to RGB and crops that will be zero-padded."""
        out = []
        converted = {m: n for m, n in report.photo_modes.items() if m != "RGB"}
        if converted:
            out.append(f"{sum(converted.values())} photo(s) are not RGB ("
                       + ", ".join(f"{n} {m}" for m, n in sorted(converted.items()))
                       + "); they are converted to RGB when loaded")
        if self.too_small:
            out.append(f"{len(self.too_small)} sample(s) are smaller than --crop_size {self.opt.crop_size} "
                       f"after {self.opt.preprocess_mode} scaling, e.g. {self.too_small[0]}; their crops "
                       "are zero-padded (" + ("black label image" if self.opt.image_label else "label 0")
                       + ", black photo)")
        return out
