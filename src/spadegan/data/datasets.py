"""Paired label-map/photo datasets in the official SPADE folder layouts.

``create_dataset(opt)`` finds the files of one ``--dataset_mode``, pairs them and returns a
``torch.utils.data.Dataset`` whose items are the official dicts:

* ``label``: float ``1xHxW`` class ids. With ``--contain_dontcare_label`` the dontcare
  value 255 becomes ``label_nc`` (the extra one-hot channel). With ``--label_nc 0`` the
  label image itself: float ``input_nc x H x W`` in ``[-1, 1]``, resized bilinearly (see
  ``transforms.transform_label_image``).
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

:func:`spadegan.data.validate.validate_dataset` reads every file once before training and raises
``SpadeganError`` naming the file and value for bad label ids, size mismatches,
unreadable images and colour label maps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import SpadeganError
from . import transforms as T
from .files import FINDERS, Sample, cityscapes_key, file_stem, open_image, pair_samples, size_text

if TYPE_CHECKING:
    from ..options import Options

__all__ = ["PairedDataset", "create_dataset", "resolve_dataset_options"]


DONTCARE = 255


# ---- listing and pairing -----------------------------------------------------------------


# ---- options -------------------------------------------------------------------------------
def resolve_dataset_options(opt: "Options") -> "Options":
    """Options with the dataset's implicit choices made explicit; call before building nets.

    The tutorial's custom command has neither ``--instance_dir`` nor ``--no_instance``:
    return ``opt.replace(no_instance=True)`` then (printing one line), so the networks,
    the saved options, test and synthesize all agree. ``--label_nc 0`` (image labels) implies
    ``no_instance`` too, and ``--input_nc 0`` becomes the channel count of the first label
    file (one printed line for both). Otherwise ``opt`` is returned as is.
    """
    if opt.image_label:
        return _resolve_image_label(opt)
    if opt.dataset_mode == "custom" and not opt.instance_dir and not opt.no_instance:
        print("spadegan: no --instance_dir given, so no instance maps are used "
              "(no_instance=True is saved with the options)", flush=True)
        return opt.replace(no_instance=True)  # replace() keeps the defaults opt.txt compares against
    return opt


def _resolve_image_label(opt: "Options") -> "Options":
    """--label_nc 0: no instance maps; --input_nc from the first label file when it is 0."""
    changes: dict[str, Any] = {}
    said = []
    if not opt.no_instance:
        changes["no_instance"] = True
        said.append("no instance maps (no_instance=True)")
    if opt.input_nc == 0:
        finder = FINDERS.get(opt.dataset_mode)
        if finder is None:
            raise SpadeganError(f"unknown --dataset_mode {opt.dataset_mode!r}; choose one of {', '.join(FINDERS)}")
        first = finder(opt.replace(no_instance=True))[0][0]
        changes["input_nc"] = T.label_image_channels(open_image(first), first)
        said.append(f"input_nc={changes['input_nc']} detected from {first}")
    if not changes:
        return opt
    print(f"spadegan: --label_nc 0: the label images are the generator's input; {', '.join(said)} "
          "(saved with the options)", flush=True)
    return opt.replace(**changes)


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
        label_img = open_image(s.label)
        params = T.get_params(opt, label_img.size, self.rng(index, epoch))
        if opt.image_label:
            label = T.transform_label_image(label_img, opt, params, s.label, channels=opt.input_nc)
        else:
            label = T.transform_label(label_img, opt, params, s.label,
                                      dontcare_to=opt.label_nc if opt.contain_dontcare_label else None)
        photo = open_image(s.image)
        if photo.size != label_img.size:
            raise SpadeganError(f"{s.label} is {size_text(label_img.size)} but its photo {s.image} is "
                                f"{size_text(photo.size)}; label maps and photos must have the same size")
        image = T.transform_image(photo, opt, params)
        if opt.no_instance or s.instance is None:
            instance = torch.zeros(())  # the official dataset's placeholder 0
        else:
            instance = T.transform_label(open_image(s.instance), opt, params, s.instance)
        return {"label": label, "instance": instance, "image": image, "path": s.image}


def reading_options(opt: "Options", phase: str, crop_size: int, **changes: Any) -> "Options":
    """Test-time options that read `phase` of a model's dataset in order, unflipped, resized
    to `crop_size` (preprocess_mode fixed): how evaluation and the style bank read photos."""
    return opt.replace(phase=phase, isTrain=False, no_flip=True, serial_batches=True, preprocess_mode="fixed",
                       crop_size=crop_size, load_size=crop_size, seed=0, **changes)


def create_dataset(opt: "Options") -> PairedDataset:
    """The dataset of ``opt.dataset_mode`` (see the module docstring for layouts).

    Raises SpadeganError for missing or empty folders and pairs whose names differ. Call
    :func:`resolve_dataset_options` first (done here too, for direct callers), and
    :func:`spadegan.data.validate.validate_dataset` to check the files' contents.
    """
    opt = resolve_dataset_options(opt)
    finder = FINDERS.get(opt.dataset_mode)
    if finder is None:
        raise SpadeganError(f"unknown --dataset_mode {opt.dataset_mode!r}; choose one of {', '.join(FINDERS)}")
    labels, images, instances = finder(opt)
    key = cityscapes_key if opt.dataset_mode == "cityscapes" else file_stem
    samples = pair_samples(labels, images, instances, opt, key)
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


# ---- validation ----------------------------------------------------------------------------


