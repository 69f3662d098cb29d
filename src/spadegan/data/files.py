"""Finding a dataset's files: the folder layout of each --dataset_mode, pairing label maps
with photos (and instance maps) by name, and opening images with clear errors.

The layouts are described in `spadegan.data.datasets`; `FINDERS` maps each mode to the
function listing its files, `pair_samples` pairs them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from PIL import Image

from ..errors import SpadeganError


#: File suffixes taken as images (case-insensitive), as in the official image_folder.py.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


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


def file_stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def cityscapes_key(path: str) -> str:
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


def pair_samples(labels: list[str], images: list[str], instances: list[str] | None, opt,
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


FINDERS = {
    "custom": _find_custom,
    "coco": lambda o: _find_split_layout(o, not o.no_instance, o.isTrain and not o.coco_no_portraits),
    "facades": lambda o: _find_split_layout(o, False, False),
    "ade20k": _find_ade20k,
    "cityscapes": _find_cityscapes,
    "landscapes": _find_landscapes,
}


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def open_image(path: str) -> Image.Image:
    """Open and decode an image, turning any decoder failure into a SpadeganError."""
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise SpadeganError(f"{path} does not exist (was it removed after the dataset was listed?)") from None
    except Exception as e:  # truncated/corrupt files raise OSError, SyntaxError, zlib errors ...
        raise SpadeganError(f"{path}: cannot read image ({e}); re-export or remove the file") from None
