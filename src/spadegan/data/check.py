"""`spadegan check-dataset` and `spadegan convert-labels`: the dataset helpers of the CLI.

``spadegan check-dataset <the same flags as train>`` finds and pairs the files exactly as
training would, reads every file once (:func:`~spadegan.data.validate.validate_dataset`)
and prints a summary: pairs, sizes, photo modes, the classes present with pixel counts
(and names, for the datasets spadegan has class tables for), whether dontcare (255)
appears and the smallest ``--label_nc`` that fits. For image labels (``--label_nc 0``) it
checks sizes, channels (against ``--input_nc``) and pairing instead of ids. Problems are
listed, then raised as one SpadeganError (exit code 2 from the CLI).

``spadegan convert-labels --palette PALETTE in_dir out_dir`` turns colour label images into
8-bit id PNGs (:func:`spadegan.data.palettes.convert_labels`).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SpadeganError
from .datasets import create_dataset, resolve_dataset_options
from .validate import DatasetReport, validate_dataset

__all__ = ["check_main", "convert_main", "format_report", "class_names"]


def class_names(dataset_mode: str) -> dict[int, str]:
    """id -> name for the dataset modes with a built-in class table (else empty)."""
    from . import palettes

    if dataset_mode not in palettes.DATASET_CLASS_TABLES:
        return {}
    return {c.id: c.name for c in palettes.load_classes(dataset_mode)}


def _size_range(report: DatasetReport) -> str:
    if not report.label_sizes:
        return "none readable"
    sizes = sorted(report.label_sizes)
    areas = sorted(sizes, key=lambda wh: wh[0] * wh[1])
    common, n = report.label_sizes.most_common(1)[0]
    if len(sizes) == 1:
        return f"all {common[0]}x{common[1]}"
    return (f"{len(sizes)} distinct, smallest {areas[0][0]}x{areas[0][1]}, largest {areas[-1][0]}x{areas[-1][1]}, "
            f"most common {common[0]}x{common[1]} ({n})")


def format_report(report: DatasetReport, opt, names: dict[int, str] | None = None) -> str:
    """The human-readable summary check-dataset prints."""
    lines = [f"dataset_mode {report.dataset_mode}: {report.pairs} pairs"
             + (f", {report.instances} instance maps" if report.instances else ", no instance maps")
             + f" (checked in {report.seconds:.1f} s)",
             f"label {'image' if opt.image_label else 'map'} sizes: {_size_range(report)}",
             "photos: " + (", ".join(f"{n} {m}" for m, n in report.photo_modes.most_common()) or "none readable")]
    lines += _image_label_lines(report, opt) if opt.image_label else _class_lines(report, opt, names or {})
    for w in report.warnings:
        lines.append(f"warning: {w}")
    for p in report.problems:
        lines.append(f"problem: {p}")
    lines.append("OK: the dataset is ready for training" if report.ok
                 else f"{len(report.problems)} problem kind(s) found; fix them before training")
    return "\n".join(lines)


def _image_label_lines(report: DatasetReport, opt) -> list[str]:
    """--label_nc 0: the label images' channels and modes (no ids to count)."""
    chans = ", ".join(f"{n} with {c} channel(s)" for c, n in sorted(report.label_channels.items())) or "none readable"
    modes = ", ".join(f"{n} {m}" for m, n in report.label_modes.most_common())
    return [f"label images (--label_nc 0, read as float channels in [-1, 1]): {chans}"
            + (f" ({modes})" if modes else "") + f"; the model reads --input_nc {opt.input_nc}"]


def _class_lines(report: DatasetReport, opt, names: dict[int, str]) -> list[str]:
    """Class-id labels: the classes present with pixel counts, dontcare, the smallest --label_nc."""
    total = report.total_pixels or 1
    lines = []
    classes = [i for i in report.label_pixels if i != 255]
    lines.append(f"classes present: {len(classes)}"
                 + (f" (ids {min(classes)}..{max(classes)})" if classes else ""))
    if report.dontcare_pixels:
        lines.append(f"dontcare (255): {report.dontcare_pixels:,} px ({100 * report.dontcare_pixels / total:.2f}%) "
                     f"in {report.label_files.get(255, 0)} files"
                     + ("" if opt.contain_dontcare_label else " -- needs --contain_dontcare_label"))
    else:
        lines.append("dontcare (255): absent")
    ade = opt.dataset_mode == "ade20k" and opt.contain_dontcare_label
    lines.append(f"smallest --label_nc that fits: {report.min_label_nc}"
                 + (" (ade20k mode: ids 0..label_nc with --contain_dontcare_label)" if ade else "")
                 + f"; you have --label_nc {opt.label_nc}"
                 + (" --contain_dontcare_label" if opt.contain_dontcare_label else ""))
    if report.label_pixels:
        width = max([len(names.get(i, "")) for i in report.label_pixels] + [4])
        lines.append(f"  {'id':>5}  {'name':<{width}}  {'pixels':>13}  {'share':>7}  files")
        for i, px in sorted(report.label_pixels.items(), key=lambda kv: -kv[1]):
            name = names.get(i, "dontcare" if i == 255 else "")
            lines.append(f"  {i:>5}  {name:<{width}}  {px:>13,}  {100 * px / total:>6.2f}%  "
                         f"{report.label_files.get(i, 0)}")
    return lines


_CHECK_USAGE = """usage: spadegan check-dataset [the flags you pass to spadegan train]

Finds, pairs and reads every file of the dataset as training would, checks label ids,
sizes and file integrity, and prints a summary (classes with pixel counts, the smallest
--label_nc that fits; with --label_nc 0, the label images' channels against --input_nc).
Exit code 0 when the data is usable.
Examples:
  spadegan check-dataset --dataset_mode coco --dataroot ./datasets/coco_stuff
  spadegan check-dataset --dataset_mode custom --label_dir L --image_dir I --label_nc 300 --contain_dontcare_label
  spadegan check-dataset --dataset_mode custom --label_dir edges --image_dir photos --label_nc 0

The accepted flags (those of spadegan train) follow.
"""


def check_main(argv: list[str]) -> int:
    """`spadegan check-dataset`: validate a dataset given train flags; 0 when usable."""
    from .. import options

    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_CHECK_USAGE)
        options.parse(["--help"], train=True)  # prints the flags and exits
        return 0
    opt = resolve_dataset_options(options.parse(argv, train=True))
    dataset = create_dataset(opt)
    report = validate_dataset(opt, dataset, progress=True, raise_on_error=False)
    print(format_report(report, opt, class_names(opt.dataset_mode)))
    sys.stdout.flush()
    if not report.ok:
        raise SpadeganError(report.error_message())
    return 0


def _palette_size(palette: str) -> int:
    from . import palettes

    if palette in palettes.DATASET_CLASS_TABLES and not os.path.exists(palette):
        classes = palettes.load_classes(palette)
    else:
        classes = palettes.load_palette_file(palette)
    return max((c.id for c in classes if c.id != palettes.DONTCARE), default=-1) + 1


def convert_main(argv: list[str]) -> int:
    """`spadegan convert-labels --palette PALETTE in_dir out_dir`: colour maps -> id maps."""
    from . import palettes

    p = argparse.ArgumentParser(
        prog="spadegan convert-labels",
        description="Convert colour label images (each class painted in its palette colour) into "
                    "8-bit id PNGs that --label_dir expects. Colours must match exactly.")
    p.add_argument("--palette", required=True,
                   help="a dataset name (" + ", ".join(palettes.DATASET_CLASS_TABLES)
                        + "), a classes.json, or a text file with one 'R G B' line per class id")
    p.add_argument("in_dir", help="folder of colour label images")
    p.add_argument("out_dir", help="folder to write the id PNGs to (created)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help exits 0; usage errors become one-line SpadeganErrors
        if e.code == 0:
            return 0
        raise SpadeganError("usage: spadegan convert-labels --palette PALETTE in_dir out_dir") from None
    n = palettes.convert_labels(args.palette, args.in_dir, args.out_dir)
    nc = _palette_size(args.palette)
    print(f"wrote {n} id maps to {args.out_dir}; train with --dataset_mode custom --label_dir {args.out_dir} "
          f"--label_nc {nc} (add --contain_dontcare_label if black/unlabelled pixels became 255)")
    return 0
