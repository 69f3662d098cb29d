"""Paired label-map/photo datasets in the official SPADE folder layouts, and their loaders.

``create_dataset(opt)`` finds the files of one ``--dataset_mode``, pairs them and returns a
``torch.utils.data.Dataset`` whose items are the official dicts:

* ``label``: float ``1xHxW`` class ids. With ``--contain_dontcare_label`` the dontcare
  value 255 becomes ``label_nc`` (the extra one-hot channel).
* ``instance``: float ``1xHxW`` instance ids (8-bit maps as they are, Cityscapes' 32-bit
  ``*_instanceIds.png`` ids such as 26001 exactly), or a 0 tensor with ``--no_instance``.
* ``image``: float ``3xHxW`` photo in ``[-1, 1]`` (grayscale/RGBA/palette photos are
  converted to RGB).
* ``path``: the photo's path.

Layouts (``phase`` below is ``--phase``, with ``test`` read as ``val``):

* ``custom``: ``--label_dir``, ``--image_dir`` and optionally ``--instance_dir``. The
  official tutorial command has neither ``--instance_dir`` nor ``--no_instance`` (the
  official code then crashes); :func:`resolve_dataset_options` turns that into
  ``no_instance=True`` and says so in one line.
* ``coco``: ``dataroot/<phase>_img``, ``<phase>_label``, ``<phase>_inst``, plus the
  ``*_portrait`` folders when training (unless ``--coco_no_portraits``). 255 = dontcare.
* ``ade20k``: every ``.jpg`` (photo) and ``.png`` (label) found recursively under
  dataroot whose name contains ``_train_`` / ``_val_``. The ids 0..150 are used AS THEY
  ARE, 0 ("other") being channel 0: the official ADE20K dataset computes ``label - 1`` but
  never stores the result, and the released checkpoints were trained that way. Hence in
  this mode, with ``--contain_dontcare_label``, the id ``label_nc`` (150) is a valid
  class and shares the last channel with dontcare. (The official code reads any phase but
  ``test`` as ``train``; here ``--phase val`` reads ``_val_``.)
* ``cityscapes``: ``leftImg8bit/<phase>/*/*.png`` photos, ``gtFine/<phase>/*/*_labelIds.png``
  labels and ``*_instanceIds.png`` instances, paired by the first three ``_``-separated
  name components (``city_seq_frame``).
* ``facades``: ``dataroot/<phase>_img``, ``<phase>_label``; no instance maps.
* ``landscapes``: ``dataroot/<phase>_img``, ``<phase>_label`` as written by
  ``spadegan make-landscapes``.

Files are paired by name (stem; the Cityscapes rule above) unless ``--no_pairing_check``,
which pairs them in natural sort order. ``--max_dataset_size`` keeps the first pairs.
(The official ``files.list`` cache, ``--cache_filelist_read/write``, is not used: listing
folders is fast and a stale cache is a classic source of wrong pairs.)

Randomness: each item's crop and flip come from ``numpy.random.default_rng((seed, epoch,
index))``; the trainer's sampler (``spadegan.train.sampling``) hands ``(index, epoch)``
keys to the dataset, so an item depends only on the seed, the epoch and the index, never
on the number of workers, the process or what was loaded before. ``dataset[i]`` uses
``dataset.epoch``.
The seed is ``--seed``; without it a random one in training and 0 in test (so test-time
crops are the same every run).

:func:`validate_dataset` reads every file once before training and raises
``SpadeganError`` naming the file and value for bad label ids, size mismatches,
unreadable images and colour label maps.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import time
import weakref
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter  # subclassed: see SignalSafeDataLoader

from ..errors import SpadeganError
from . import transforms as T

if TYPE_CHECKING:
    from ..options import Options

__all__ = [
    "IMG_EXTENSIONS",
    "Sample",
    "PairedDataset",
    "DatasetReport",
    "create_dataset",
    "resolve_dataset_options",
    "validate_dataset",
    "natural_key",
]

#: File suffixes taken as images (case-insensitive), as in the official image_folder.py.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

DONTCARE = 255


# ---- listing and pairing -----------------------------------------------------------------
def natural_key(path: str) -> list:
    """Sort key that orders 'img2' before 'img10' (the official natural sort)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def _is_image(name: str) -> bool:
    # hidden files (macOS ._x.png resource forks, .DS_Store) are never images
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _list_images(folder: str, what: str, hint: str) -> list[str]:
    """Images under ``folder`` (walked recursively, as the official make_dataset does)."""
    if not os.path.isdir(folder):
        raise SpadeganError(f"{what} folder {folder} does not exist{hint}")
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, f) for f in files if _is_image(f)]
    if not found:
        raise SpadeganError(f"{what} folder {folder} holds no images "
                            f"({', '.join(IMG_EXTENSIONS)}){hint}")
    return sorted(found, key=natural_key)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _cityscapes_key(path: str) -> str:
    # city_seq_frame_leftImg8bit.png / city_seq_frame_gtFine_labelIds.png -> city_seq_frame
    return "_".join(os.path.basename(path).split("_")[:3])


@dataclass(frozen=True)
class Sample:
    """The files of one training pair."""

    label: str
    image: str
    instance: str | None = None


def _index_by_key(paths: Sequence[str], key: Callable[[str], str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        k = key(p)
        if k in out:
            raise SpadeganError(f"two {what} files have the same name {k!r}: {out[k]} and {p}; "
                                "keep one file per name")
        out[k] = p
    return out


def _examples(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _pair(labels: list[str], images: list[str], instances: list[str] | None, opt,
          key: Callable[[str], str]) -> list[Sample]:
    """Pair label maps with photos (and instance maps) by name, or by order."""
    if opt.no_pairing_check:
        # pair in natural order: the lists must be equally long for that to mean anything
        if len(labels) != len(images):
            raise SpadeganError(
                f"{len(labels)} label maps but {len(images)} photos (e.g. {labels[0]} and {images[0]}); "
                "with --no_pairing_check they are paired in sorted order, so the counts must match")
        if instances is not None and len(instances) != len(labels):
            raise SpadeganError(f"{len(labels)} label maps but {len(instances)} instance maps "
                                f"(e.g. {instances[0] if instances else 'none'}); the counts must match")
        return [Sample(l, i, instances[n] if instances is not None else None)
                for n, (l, i) in enumerate(zip(labels, images))]
    by_image = _index_by_key(images, key, "photo")
    by_label = _index_by_key(labels, key, "label")
    lonely_labels = [p for k, p in by_label.items() if k not in by_image]
    lonely_images = [p for k, p in by_image.items() if k not in by_label]
    if lonely_labels or lonely_images:
        parts = []
        if lonely_labels:
            parts.append(f"{len(lonely_labels)} label map(s) without a photo of the same name "
                         f"({_examples(lonely_labels)})")
        if lonely_images:
            parts.append(f"{len(lonely_images)} photo(s) without a label map of the same name "
                         f"({_examples(lonely_images)})")
        if len(lonely_labels) == 1 and len(lonely_images) == 1:
            parts.append(f"the pair ({lonely_labels[0]}, {lonely_images[0]}) has different names")
        hint = (" or pass --no_pairing_check to pair them in sorted order"
                if len(labels) == len(images) else "")
        raise SpadeganError("label maps and photos do not pair up by name: " + "; ".join(parts)
                            + f"; rename or remove those files{hint}")
    by_inst = None
    if instances is not None:
        by_inst = _index_by_key(instances, key, "instance")
        missing = [p for k, p in by_label.items() if k not in by_inst]
        if missing:
            raise SpadeganError(f"{len(missing)} label map(s) have no instance map of the same name "
                                f"({_examples(missing)}); add them or pass --no_instance")
    return [Sample(p, by_image[key(p)], by_inst[key(p)] if by_inst is not None else None)
            for p in labels]


def _data_phase(opt) -> str:
    # the official coco/facades read phase 'test' from the val folders
    return "val" if opt.phase == "test" else opt.phase


def _need_root(opt, layout: str) -> str:
    root = opt.dataroot
    if not os.path.isdir(root):
        raise SpadeganError(f"--dataroot {root} does not exist; point it at the {opt.dataset_mode} "
                            f"dataset ({layout})")
    return root


def _find_split_layout(opt, with_instances: bool, portraits: bool) -> tuple[list, list, list | None]:
    """coco / facades / landscapes: dataroot/<phase>_img, _label (, _inst)."""
    phase = _data_phase(opt)
    layout = f"{phase}_img/, {phase}_label/" + (f", {phase}_inst/" if with_instances else "")
    root = _need_root(opt, f"folders {layout}")
    hint = f" ({opt.dataset_mode} layout: {os.path.join(root, '')}{{{layout.replace('/', '')}}})"

    def gather(suffix: str, what: str) -> list[str]:
        paths = _list_images(os.path.join(root, f"{phase}_{suffix}"), what, hint)
        portrait = os.path.join(root, f"{phase}_{suffix}_portrait")
        if portraits and os.path.isdir(portrait):
            paths += _list_images(portrait, what, hint)
        return sorted(paths, key=natural_key)

    labels = gather("label", "label")
    images = gather("img", "photo")
    instances = None
    if with_instances:
        inst_dir = os.path.join(root, f"{phase}_inst")
        if not os.path.isdir(inst_dir):
            raise SpadeganError(f"instance folder {inst_dir} does not exist; add the instance maps "
                                "or pass --no_instance to train without them")
        instances = gather("inst", "instance")
    return labels, images, instances


def _find_custom(opt) -> tuple[list, list, list | None]:
    hint = " (pass the folder of label maps with --label_dir and of photos with --image_dir)"
    labels = _list_images(opt.label_dir, "--label_dir", hint)
    images = _list_images(opt.image_dir, "--image_dir", hint)
    instances = None
    if not opt.no_instance:
        if not opt.instance_dir:  # resolve_dataset_options normally turned this into no_instance
            raise SpadeganError("--dataset_mode custom without --instance_dir needs --no_instance")
        instances = _list_images(opt.instance_dir, "--instance_dir",
                                 " (leave --instance_dir out to train without instance maps)")
    return labels, images, instances


def _find_ade20k(opt) -> tuple[list, list, list | None]:
    phase = _data_phase(opt)
    root = _need_root(opt, "ADEChallengeData2016 with images/*.jpg and annotations/*.png")
    tag = f"_{phase}_"
    labels, images = [], []
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            # the name, not the whole path, must carry the phase (a dataroot such as
            # ./my_train_data/ must not match every file)
            if tag not in f or f.startswith("."):
                continue
            if f.endswith(".jpg"):
                images.append(os.path.join(dirpath, f))
            elif f.endswith(".png"):
                labels.append(os.path.join(dirpath, f))
    if not labels or not images:
        other = "train" if phase != "train" else "val"
        n_other = sum(f"_{other}_" in f for _, _, fs in os.walk(root, followlinks=True) for f in fs)
        if n_other:
            tag_hint = f"; {n_other} files have '_{other}_' in their names: pass --phase {other}?"
        else:
            tag_hint = ""
        raise SpadeganError(
            f"found {len(images)} photos (.jpg) and {len(labels)} label maps (.png) with {tag!r} in "
            f"their names under --dataroot {root}; ade20k mode expects ADEChallengeData2016's "
            f"images/.../ADE{tag}*.jpg and annotations/.../ADE{tag}*.png (phase {opt.phase!r}){tag_hint}")
    if not opt.no_instance:
        raise SpadeganError("ade20k has no instance maps; pass --no_instance")
    return sorted(labels, key=natural_key), sorted(images, key=natural_key), None


def _find_cityscapes(opt) -> tuple[list, list, list | None]:
    phase = _data_phase(opt)
    root = _need_root(opt, "leftImg8bit/ and gtFine/")
    hint = f" (cityscapes layout: {os.path.join(root, 'leftImg8bit', phase)}/<city>/*_leftImg8bit.png " \
           f"and {os.path.join(root, 'gtFine', phase)}/<city>/*_gtFine_labelIds.png)"
    gt = _list_images(os.path.join(root, "gtFine", phase), "label", hint)
    labels = [p for p in gt if p.endswith("_labelIds.png")]
    if not labels:
        raise SpadeganError(f"no *_labelIds.png files under {os.path.join(root, 'gtFine', phase)}{hint}")
    images = _list_images(os.path.join(root, "leftImg8bit", phase), "photo", hint)
    instances = None
    if not opt.no_instance:
        instances = [p for p in gt if p.endswith("_instanceIds.png")]
        if not instances:
            raise SpadeganError(f"no *_instanceIds.png files under {os.path.join(root, 'gtFine', phase)}; "
                                "add them or pass --no_instance")
    return labels, images, instances


def _find_landscapes(opt) -> tuple[list, list, list | None]:
    root = opt.dataroot
    if not os.path.isdir(root):
        raise SpadeganError(
            f"landscapes dataset folder --dataroot {root} does not exist; make it first with "
            f"`spadegan make-landscapes` writing to {root} (see `spadegan make-landscapes --help`), "
            "or pass --dataroot where you wrote it")
    return _find_split_layout(opt, with_instances=False, portraits=False)


# ---- options -------------------------------------------------------------------------------
def resolve_dataset_options(opt: "Options") -> "Options":
    """Options with the dataset's implicit choices made explicit; call before building nets.

    The tutorial's custom command has neither ``--instance_dir`` nor ``--no_instance``:
    return ``opt.replace(no_instance=True)`` then (printing one line), so the networks,
    the saved options, test and synthesize all agree. Otherwise ``opt`` is returned as is.
    """
    if opt.dataset_mode == "custom" and not opt.instance_dir and not opt.no_instance:
        print("spadegan: no --instance_dir given, so no instance maps are used "
              "(no_instance=True is saved with the options)", flush=True)
        new = opt.replace(no_instance=True)
        # keep the parse-time defaults that opt.txt's "[default: ...]" comments come from
        if hasattr(opt, "_defaults"):
            object.__setattr__(new, "_defaults", getattr(opt, "_defaults"))
        return new
    return opt


_FINDERS = {
    "custom": _find_custom,
    "coco": lambda o: _find_split_layout(o, not o.no_instance, o.isTrain and not o.coco_no_portraits),
    "facades": lambda o: _find_split_layout(o, False, False),
    "ade20k": _find_ade20k,
    "cityscapes": _find_cityscapes,
    "landscapes": _find_landscapes,
}


# ---- the dataset -------------------------------------------------------------------------
class PairedDataset(Dataset):
    """Label map + photo (+ instance map) pairs, transformed per ``opt`` (see module doc).

    ``opt``: the resolved Options; ``samples``: the file pairs; ``seed``: base seed of
    every item's crop/flip draw. Items are indexed by ``i`` (using ``self.epoch``) or by
    the ``(i, epoch)`` keys the trainer's sampler yields.
    """

    def __init__(self, opt, samples: Sequence[Sample], seed: int):
        self.opt = opt
        self.samples = list(samples)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def label_paths(self) -> list[str]:
        return [s.label for s in self.samples]

    @property
    def image_paths(self) -> list[str]:
        return [s.image for s in self.samples]

    @property
    def instance_paths(self) -> list[str]:
        return [s.instance for s in self.samples if s.instance is not None]

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        """The generator for one item: a pure function of (seed, epoch, index)."""
        return np.random.default_rng((self.seed, int(epoch), int(index)))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        index = int(index)
        if index < 0:
            index += len(self.samples)
        return self.load(index, epoch)

    def load(self, index: int, epoch: int = 0) -> dict[str, Any]:
        opt, s = self.opt, self.samples[index]
        label_img = _open(s.label)
        params = T.get_params(opt, label_img.size, self.rng(index, epoch))
        label = T.transform_label(label_img, opt, params, s.label,
                                  dontcare_to=opt.label_nc if opt.contain_dontcare_label else None)
        photo = _open(s.image)
        if photo.size != label_img.size:
            raise SpadeganError(f"{s.label} is {_wh(label_img.size)} but its photo {s.image} is "
                                f"{_wh(photo.size)}; label maps and photos must have the same size")
        image = T.transform_image(photo, opt, params)
        if opt.no_instance or s.instance is None:
            instance = torch.zeros(())  # the official dataset's placeholder 0
        else:
            instance = T.transform_label(_open(s.instance), opt, params, s.instance)
        return {"label": label, "instance": instance, "image": image, "path": s.image}


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _open(path: str) -> Image.Image:
    """Open and decode an image, turning any decoder failure into a SpadeganError."""
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise SpadeganError(f"{path} does not exist (was it removed after the dataset was listed?)") from None
    except Exception as e:  # truncated/corrupt files raise OSError, SyntaxError, zlib errors ...
        raise SpadeganError(f"{path}: cannot read image ({e}); re-export or remove the file") from None


def create_dataset(opt: "Options") -> PairedDataset:
    """The dataset of ``opt.dataset_mode`` (see the module docstring for layouts).

    Raises SpadeganError for missing or empty folders and pairs whose names differ. Call
    :func:`resolve_dataset_options` first (done here too, for direct callers), and
    :func:`validate_dataset` to check the files' contents.
    """
    opt = resolve_dataset_options(opt)
    finder = _FINDERS.get(opt.dataset_mode)
    if finder is None:
        raise SpadeganError(f"unknown --dataset_mode {opt.dataset_mode!r}; choose one of {', '.join(_FINDERS)}")
    labels, images, instances = finder(opt)
    key = _cityscapes_key if opt.dataset_mode == "cityscapes" else _stem
    samples = _pair(labels, images, instances, opt, key)
    if opt.max_dataset_size < len(samples):
        samples = samples[: max(0, int(opt.max_dataset_size))]
    if not samples:
        raise SpadeganError(f"--max_dataset_size {opt.max_dataset_size} leaves no samples")
    if opt.seed is not None:
        seed = int(opt.seed)
    elif opt.isTrain:  # fresh augmentations per run unless --seed is given
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    else:  # test crops (e.g. scale_width_and_crop's vertical offset) are the same every run
        seed = 0
    return PairedDataset(opt, samples, seed)


# ---- the loader's worker processes -------------------------------------------------------
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_LIVE_ITERS: "weakref.WeakSet[_SignalSafeIter]" = weakref.WeakSet()  # for the exit hook


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: leave SIGINT/SIGTERM to the main process.

    Ctrl-C in a terminal or ``kill``/``timeout`` on the process group reach the workers
    too; if they died of it, the trainer could not fetch the batch it needs to finish its
    step and save ``latest``. So workers ignore both (the main process shuts them down when
    it exits). They start with the signals blocked (see :class:`SignalSafeDataLoader`), so
    one sent while a worker was starting is discarded here rather than killing it.
    """
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class _SignalSafeIter(_MultiProcessingDataLoaderIter):
    """Workers started with SIGINT/SIGTERM blocked; stopped with SIGKILL if they linger."""

    def __init__(self, loader: DataLoader) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            super().__init__(loader)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _LIVE_ITERS.add(self)

    def _shutdown_workers(self) -> None:
        super()._shutdown_workers()
        # torch's last resort is SIGTERM, which these workers ignore
        for w in getattr(self, "_workers", []):
            if w.is_alive():
                w.kill()
                w.join(timeout=5)


class SignalSafeDataLoader(DataLoader):
    """A DataLoader whose worker processes leave SIGINT/SIGTERM to the main process.

    Workers are started with the signals blocked: between a worker's start and its
    ``worker_init_fn`` (:func:`ignore_stop_signals`, which ignores and unblocks them)
    PyTorch's own handler would let a SIGTERM kill it. The main process still gets the
    signals: its mask is restored as soon as the workers exist, and a signal that arrived
    meanwhile is delivered then. Because the workers ignore SIGTERM, the usual last resort
    for a worker that does not stop (SIGTERM, from PyTorch and from multiprocessing at
    interpreter exit, the latter followed by a join that would then wait forever) is
    replaced: SIGKILL after the regular shutdown, and an exit hook that shuts live workers
    down before multiprocessing's hook runs.
    """

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return super()._get_iterator()
        self.check_worker_number_rationality()
        return _SignalSafeIter(self)


@atexit.register
def _shutdown_live_workers() -> None:
    # registered after multiprocessing's and torch's exit hooks, so it runs before them
    for it in list(_LIVE_ITERS):
        try:
            it._shutdown_workers()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# ---- validation ----------------------------------------------------------------------------
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
        img = _open(path)
    except SpadeganError as e:
        return None, None, str(e)
    try:
        ids = T.label_image_to_ids(img, path)
    except SpadeganError as e:
        return None, img, str(e)
    return np.asarray(ids), img, None


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


def _check_sample(s: Sample) -> dict[str, Any]:
    """Everything validate_dataset needs from one pair, read once (runs in a thread)."""
    out: dict[str, Any] = {"sample": s, "errors": []}
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
            out["errors"].append(("size", f"{s.label} is {_wh(img.size)} but its photo {s.image} is "
                                          f"{_wh(size)}; label maps and photos must have the same size"))
    if s.instance is not None:
        try:
            inst = _open(s.instance)
            if img is not None and inst.size != img.size:
                out["errors"].append(("size", f"{s.label} is {_wh(img.size)} but its instance map "
                                              f"{s.instance} is {_wh(inst.size)}; they must have the same size"))
        except SpadeganError as e:
            out["errors"].append(("read", str(e)))
    return out


def validate_dataset(opt: "Options", dataset: PairedDataset, progress: bool = True,
                     raise_on_error: bool = True) -> DatasetReport:
    """Read every label map, photo and instance map once and check them against ``opt``.

    Problems (raised together as one SpadeganError unless ``raise_on_error`` is False):
    unreadable/corrupt files, colour (RGB) label maps where ids are expected, label/photo
    (or instance) sizes that differ, label ids >= label_nc that are not dontcare (255), and
    255 without ``--contain_dontcare_label``. Each names a file and the value, and the fix.
    Non-RGB photos (converted when loaded) and crops that will be zero-padded are reported
    as warnings.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    samples = list(dataset.samples)
    report = DatasetReport(opt.dataset_mode, len(samples))
    kinds: dict[str, list[str]] = defaultdict(list)
    pixels: Counter = Counter()
    files: Counter = Counter()
    bad_ids: list[tuple[str, int]] = []  # (file, largest offending id)
    dontcare_files: list[str] = []
    too_small: list[str] = []
    # ade20k keeps its ids 0..150 with label_nc 150: the id label_nc shares the dontcare channel
    limit = opt.label_nc + int(opt.contain_dontcare_label and opt.dataset_mode == "ade20k")
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(samples), desc="checking dataset", unit="pair", disable=not progress,
                 file=sys.stderr) as bar:
        for r in pool.map(_check_sample, samples):
            bar.update(1)
            s = r["sample"]
            for kind, msg in r["errors"]:
                kinds[kind].append(msg)
            if "photo_mode" in r:
                report.photo_modes[r["photo_mode"]] += 1
            if "label_size" in r:
                report.label_sizes[r["label_size"]] += 1
                report.label_modes[r["label_mode"]] += 1
                if "crop" in opt.preprocess_mode:
                    sw, sh = T.scaled_size(opt, r["label_size"])
                    if sw < opt.crop_size or sh < opt.crop_size:
                        too_small.append(f"{s.label} ({_wh(r['label_size'])} -> {_wh((sw, sh))})")
            if s.instance is not None:
                report.instances += 1
            counts = r.get("counts")
            if counts is None:
                continue
            pixels.update(counts)
            files.update(counts.keys())
            over = [i for i in counts if (i >= limit or i < 0) and not (i == DONTCARE and opt.contain_dontcare_label)]
            if DONTCARE in over:
                dontcare_files.append(s.label)
            over = [i for i in over if i != DONTCARE]
            if over:
                bad_ids.append((s.label, max(over, key=abs)))
    report.label_pixels = dict(sorted(pixels.items()))
    report.label_files = dict(sorted(files.items()))
    report.dontcare_pixels = int(pixels.get(DONTCARE, 0))
    report.max_id = max((i for i in pixels if i != DONTCARE), default=-1)
    ade = opt.dataset_mode == "ade20k" and opt.contain_dontcare_label
    report.min_label_nc = max(1, report.max_id + (0 if ade else 1))

    problems: list[str] = []
    for kind in ("read", "colour", "size"):
        msgs = kinds.get(kind, [])
        if msgs:
            problems.append(msgs[0] + (f" (and {len(msgs) - 1} more file(s) like it)" if len(msgs) > 1 else ""))
    negative = [(f, i) for f, i in bad_ids if i < 0]
    if negative:
        f, i = negative[0]
        problems.append(f"{f}: label id {i} is negative; class ids must be 0 or more")
    bad_ids = [(f, i) for f, i in bad_ids if i >= 0]
    if bad_ids:
        f, i = bad_ids[0]
        top = max(i for _, i in bad_ids)
        need = top + (0 if ade else 1)
        others = (f" (and {len(bad_ids) - 1} more file(s), ids up to {top})" if len(bad_ids) > 1 else "")
        rule = (f"label id {i} > label_nc {opt.label_nc} (ade20k mode with --contain_dontcare_label "
                f"takes ids 0..label_nc)" if ade else f"label id {i} >= label_nc {opt.label_nc}")
        problems.append(f"{f}: {rule}{others}; pass --label_nc {need} or fix those label maps")
    if dontcare_files:
        more = f" (and {len(dontcare_files) - 1} more file(s))" if len(dontcare_files) > 1 else ""
        problems.append(f"{dontcare_files[0]}: label id 255 (dontcare) found{more} but "
                        "--contain_dontcare_label is not set; pass --contain_dontcare_label (255 becomes "
                        f"class {opt.label_nc}), or --label_nc 256 if 255 is a real class")
    report.problems = problems

    converted = {m: n for m, n in report.photo_modes.items() if m != "RGB"}
    if converted:
        report.warnings.append(f"{sum(converted.values())} photo(s) are not RGB ("
                               + ", ".join(f"{n} {m}" for m, n in sorted(converted.items()))
                               + "); they are converted to RGB when loaded")
    if too_small:
        report.warnings.append(f"{len(too_small)} sample(s) are smaller than --crop_size {opt.crop_size} "
                               f"after {opt.preprocess_mode} scaling, e.g. {too_small[0]}; their crops "
                               "are zero-padded (label 0, black photo)")
    report.seconds = time.perf_counter() - t0
    if problems and raise_on_error:
        raise SpadeganError(report.error_message())
    return report
