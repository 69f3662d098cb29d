"""Class tables and colour palettes for label maps, and colour <-> id conversion.

Each dataset's classes live in ``spadegan/data/classes/<name>.json`` as a list of
``{"id": int, "name": str, "color": [r, g, b]}`` objects (extra keys such as
``"note"`` are allowed and ignored):

* ``ade20k.json``: ADE20K SceneParsing, id 0 ``other`` plus ids 1..150. Names are the
  first synonym of each row of ``objectInfo150``; colours are the standard 150-colour
  palette of the CSAIL scene-parsing demos. That palette gives road (7) and
  skyscraper (49) the same grey, so skyscraper is stored as (140, 140, 141) to keep the
  table unambiguous; a standard-coloured image's (140, 140, 140) reads back as road.
* ``coco.json``: COCO-Stuff, ids 0..181 (0..90 things, including the 11 ids the
  dataset never uses, 91..181 stuff), i.e. ``labels.txt`` minus one, plus 255
  ``unlabeled``. Colours are the bit-interleaving palette (:func:`bit_color`).
* ``cityscapes.json``: Cityscapes labelIds 0..33 with the official colours; the
  license plate (-1) is never written to id maps and stays ``car``. The official table
  repeats colours (ids 0-4 are all black, pole/polegroup share a grey); colour lookups
  resolve a repeated colour to the lowest id.
* ``landscapes.json``: the 10 classes of the procedural landscapes set
  (:mod:`spadegan.data.landscapes`).

Ids outside a table's range are drawn with the bit-interleaving fallback colour and
255 ("don't care") is drawn black.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..errors import SpadeganError
from ..fileio import MAX_OPTIONS_BYTES, read_limited

__all__ = [
    "ClassInfo",
    "DATASET_CLASS_TABLES",
    "COMMON_SCENE_CLASSES",
    "DONTCARE",
    "bit_color",
    "load_classes",
    "palette_array",
    "label_to_color",
    "color_to_label",
    "grey_ids",
    "load_palette_file",
    "classes_for_dataset_mode",
    "common_classes_first",
    "convert_labels",
]

#: Label value that means "don't care / unlabeled" in every dataset here.
DONTCARE = 255

#: Built-in class tables, by dataset mode name.
DATASET_CLASS_TABLES = ("ade20k", "coco", "cityscapes", "landscapes")

#: Outdoor-scene class names a paint UI lists first (matched loosely, see
#: :func:`common_classes_first`).
COMMON_SCENE_CLASSES: tuple[str, ...] = (
    "sky", "cloud", "sea", "water", "river", "mountain", "hill", "snow", "rock",
    "sand", "grass", "field", "tree", "flower", "road", "building",
)

# Images with more distinct unknown colours than this are almost surely photos, not
# label maps; the error lists only the most frequent ones.
_MAX_REPORTED_COLORS = 5


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class: its label id, a human-readable name and an RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


PaletteLike = Union[np.ndarray, Sequence[ClassInfo]]


def bit_color(ids: np.ndarray | int) -> np.ndarray:
    """Deterministic distinct colour(s) for label id(s): the bit-interleaving palette.

    The bits of ``id + 1`` are dealt round-robin to R, G and B, most significant
    colour bit first (the +1 keeps id 0 from being black, which means "don't care").
    Returns uint8 of shape ``ids.shape + (3,)``.
    """
    k = np.asarray(ids, dtype=np.int64) + 1
    out = np.zeros(k.shape + (3,), dtype=np.int64)
    for bit in range(8):
        for ch in range(3):
            out[..., ch] |= ((k >> (3 * bit + ch)) & 1) << (7 - bit)
    return out.astype(np.uint8)


def _classes_dir() -> Path:
    return Path(str(resources.files("spadegan.data") / "classes"))


def _parse_class_list(obj: object, path: str) -> list[ClassInfo]:
    """Validate a decoded classes.json document (list, or dict with "classes")."""
    if isinstance(obj, dict) and "classes" in obj:
        obj = obj["classes"]
    if not isinstance(obj, list) or not obj:
        raise SpadeganError(
            f"{path}: expected a non-empty JSON list of {{\"id\", \"name\", \"color\"}} "
            "objects; fix the file or pass a text palette with one 'R G B' line per id"
        )
    classes: list[ClassInfo] = []
    seen: set[int] = set()
    for i, entry in enumerate(obj):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not {"id", "name", "color"} <= entry.keys():
            raise SpadeganError(f"{where} must be an object with keys id, name, color")
        cid, name, color = entry["id"], entry["name"], entry["color"]
        if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
            raise SpadeganError(f"{where}: id {cid!r} must be a non-negative integer")
        if cid in seen:
            raise SpadeganError(f"{where}: id {cid} appears twice; give each class its own id")
        if (
            not isinstance(color, (list, tuple))
            or len(color) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
        ):
            raise SpadeganError(f"{where}: color {color!r} must be [r, g, b] with integers 0..255")
        seen.add(cid)
        classes.append(ClassInfo(cid, str(name), (color[0], color[1], color[2])))
    return sorted(classes, key=lambda c: c.id)


def load_classes(name: str) -> list[ClassInfo]:
    """Load a built-in class table (``ade20k``, ``coco``, ``cityscapes``, ``landscapes``).

    Returns the classes sorted by id.
    """
    if name not in DATASET_CLASS_TABLES:
        raise SpadeganError(
            f"unknown class table {name!r}; choose one of {', '.join(DATASET_CLASS_TABLES)} "
            "or load your own with load_palette_file(path)"
        )
    path = _classes_dir() / f"{name}.json"
    with open(path, encoding="utf-8") as f:
        return _parse_class_list(json.load(f), str(path))


def load_palette_file(path: str | os.PathLike) -> list[ClassInfo]:
    """Load a palette from a classes.json or a text file of ``R G B`` lines.

    The JSON form is a list of ``{"id", "name", "color"}`` objects. In the text form
    line *i* (ignoring blank lines and ``#`` comments) is the colour of id *i*;
    values may be separated by spaces or commas and text after the third number is the
    class name.
    """
    p = Path(path)
    if not p.is_file():
        raise SpadeganError(f"palette file {p} does not exist; pass a classes.json or an 'R G B' text file")
    try:
        text = read_limited(p, MAX_OPTIONS_BYTES, "palette file").decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpadeganError(f"palette file {p} is not UTF-8 text ({e})") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpadeganError(f"{p}: invalid JSON ({e}); fix the file") from None
        return _parse_class_list(obj, str(p))
    classes: list[ClassInfo] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split(None, 3)
        try:
            rgb = tuple(int(v) for v in parts[:3])
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise SpadeganError(f"{p}:{lineno}: expected 'R G B' with integers 0..255, got {line!r}")
        cid = len(classes)
        name = parts[3].strip() if len(parts) > 3 else f"class {cid}"
        if name.split()[0].lstrip("-").isdigit():
            # "id R G B" files would otherwise load silently shifted by one column.
            raise SpadeganError(
                f"{p}:{lineno}: {line!r} has a 4th number; write 'R G B [name]' lines in id order "
                "(line i is id i) or use a classes.json with explicit ids"
            )
        classes.append(ClassInfo(cid, name, rgb))  # type: ignore[arg-type]
    if not classes:
        raise SpadeganError(f"{p}: no colours found; write one 'R G B' line per class id")
    return classes


def palette_array(classes: Sequence[ClassInfo], n: int) -> np.ndarray:
    """Colours for ids ``0..n-1`` as an ``(n, 3)`` uint8 array.

    Ids the table does not define get the :func:`bit_color` fallback.
    """
    if n < 1:
        raise SpadeganError(f"palette size must be >= 1, got {n}")
    pal = bit_color(np.arange(n))
    for c in classes:
        if c.id < n:
            pal[c.id] = c.color
    return pal


def _as_palette(palette: PaletteLike) -> np.ndarray:
    if isinstance(palette, np.ndarray):
        pal = np.asarray(palette)
        if pal.ndim != 2 or pal.shape[1] != 3:
            raise SpadeganError(f"palette array must have shape (n, 3), got {pal.shape}")
        return pal.astype(np.uint8)
    classes = list(palette)
    n = max((c.id for c in classes if c.id != DONTCARE), default=-1) + 1
    return palette_array(classes, max(n, 1))


def label_to_color(label: np.ndarray, palette: PaletteLike) -> np.ndarray:
    """Colourise an ``HxW`` id map into an ``HxWx3`` uint8 image.

    ``palette`` is an ``(n, 3)`` array (row = id) or a class list. 255 and negative
    ids ("don't care") are black; ids beyond the palette use :func:`bit_color`.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise SpadeganError(f"label map must be 2-D (H, W), got shape {label.shape}")
    pal = _as_palette(palette)
    ids = label.astype(np.int64)
    top = int(ids.max(initial=0))
    # A lookup table covering every id present makes this one gather.
    lut = bit_color(np.arange(max(top + 1, len(pal))))
    lut[: len(pal)] = pal
    if top >= DONTCARE:
        lut[DONTCARE] = 0
    out = lut[np.clip(ids, 0, None)]
    out[ids < 0] = 0
    return out


def _color_table(palette: PaletteLike) -> dict[int, int]:
    """Map packed 0xRRGGBB -> id; a repeated colour resolves to the lowest id."""
    table: dict[int, int] = {}
    if isinstance(palette, np.ndarray):
        items = [(i, tuple(int(v) for v in row)) for i, row in enumerate(_as_palette(palette))]
    else:
        items = sorted(((c.id, c.color) for c in palette), key=lambda t: t[0])
    for cid, (r, g, b) in items:
        table.setdefault((r << 16) | (g << 8) | b, cid)
    # label_to_color draws "don't care" black, so read black back as 255 unless a
    # class owns black (e.g. ADE20K "other", Cityscapes "unlabeled").
    table.setdefault(0, DONTCARE)
    return table


def grey_ids(rgb: np.ndarray) -> np.ndarray | None:
    """The ids of a grey id map saved as RGB (R == G == B at every pixel), else None."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    return None


def color_to_label(rgb: np.ndarray, palette: PaletteLike, path_for_errors: str = "<array>") -> np.ndarray:
    """Convert an ``HxWx3`` (or ``HxWx4``, alpha ignored) colour label image to ids.

    Colours must match the palette exactly (no nearest-colour guessing: antialiased
    or JPEG-compressed label images are rejected). Black maps to 255 unless a class
    owns black. Returns uint8, or int32 when an id above 255 occurs.

    Raises SpadeganError naming ``path_for_errors`` and up to 5 unknown colours with
    their pixel counts and one (x, y) location each.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise SpadeganError(
            f"{path_for_errors}: expected an RGB colour label image, got array of shape {arr.shape}; "
            "save label maps as RGB PNGs, or pass 8-bit id PNGs without converting"
        )
    arr = arr[..., :3].astype(np.int32)
    packed = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    uniq, first, inverse, counts = np.unique(
        packed.ravel(), return_index=True, return_inverse=True, return_counts=True
    )
    table = _color_table(palette)
    ids = np.array([table.get(int(k), -1) for k in uniq], dtype=np.int64)
    unknown = np.flatnonzero(ids < 0)
    if unknown.size:
        order = unknown[np.argsort(-counts[unknown], kind="stable")][:_MAX_REPORTED_COLORS]
        w = arr.shape[1]
        parts = []
        for u in order:
            k = int(uniq[u])
            y, x = divmod(int(first[u]), w)
            parts.append(f"#{k:06x} ({k >> 16}, {(k >> 8) & 255}, {k & 255}) x{int(counts[u])} px "
                         f"e.g. at (x={x}, y={y})")
        more = f" and {unknown.size - len(order)} more" if unknown.size > len(order) else ""
        raise SpadeganError(
            f"{path_for_errors}: {unknown.size} colour(s) not in the palette: {'; '.join(parts)}{more}. "
            "Repaint those pixels with palette colours (disable antialiasing, save as PNG, not JPEG) "
            "or add the colours to the palette file"
        )
    out = ids[inverse].reshape(packed.shape)
    return out.astype(np.uint8 if out.max(initial=0) <= 255 else np.int32)


def classes_for_dataset_mode(mode: str, label_nc: int) -> list[ClassInfo]:
    """Class table for a dataset mode, padded to cover ids ``0..label_nc-1``.

    Ids are those stored in the dataset's label files (ADE20K keeps 0 = other,
    1..150). Built-in tables are returned whole; ids below ``label_nc`` that they
    lack (and every id for ``custom``) get a generic ``"class N"`` entry with the
    fallback colour.
    """
    if not isinstance(label_nc, int) or label_nc < 1:
        raise SpadeganError(f"label_nc must be a positive integer, got {label_nc!r}")
    if mode in DATASET_CLASS_TABLES:
        classes = load_classes(mode)
    elif mode == "custom":
        classes = []
    else:
        raise SpadeganError(
            f"unknown dataset mode {mode!r}; choose one of {', '.join(DATASET_CLASS_TABLES + ('custom',))}"
        )
    have = {c.id for c in classes}
    fallback = bit_color(np.arange(label_nc))
    extra = [
        ClassInfo(i, f"class {i}", tuple(int(v) for v in fallback[i]))  # type: ignore[arg-type]
        for i in range(label_nc)
        if i not in have
    ]
    return sorted(classes + extra, key=lambda c: c.id)


def _name_words(name: str) -> set[str]:
    words = set()
    for w in name.lower().replace(";", " ").replace(",", " ").replace("-", " ").split():
        words.add(w)
        if w.endswith("s") and len(w) > 3:  # "clouds", "flowers" -> singular
            words.add(w[:-1])
    return words


def common_classes_first(classes: Sequence[ClassInfo]) -> list[ClassInfo]:
    """Reorder classes so those matching :data:`COMMON_SCENE_CLASSES` come first.

    Matching is by word, so ``sky-other``, ``clouds`` and ``flowers`` count; common
    classes keep the order of COMMON_SCENE_CLASSES, the rest keep their id order.
    """
    rank = {n: i for i, n in enumerate(COMMON_SCENE_CLASSES)}

    def key(c: ClassInfo) -> tuple[int, int]:
        hits = [rank[w] for w in _name_words(c.name) if w in rank]
        return (min(hits) if hits else len(rank), c.id)

    return sorted(classes, key=key)


def convert_labels(palette_path_or_name: str, in_dir: str, out_dir: str) -> int:
    """Convert every colour label image in ``in_dir`` into an 8-bit id PNG in ``out_dir``.

    ``palette_path_or_name`` is a built-in table name or a palette file (see
    :func:`load_palette_file`). Output files keep the input stem with a ``.png``
    suffix. Returns the number of files written.
    """
    from PIL import Image
    from tqdm import tqdm

    if palette_path_or_name in DATASET_CLASS_TABLES and not os.path.exists(palette_path_or_name):
        classes = load_classes(palette_path_or_name)
    else:
        classes = load_palette_file(palette_path_or_name)
    src = Path(in_dir)
    if not src.is_dir():
        raise SpadeganError(f"label folder {src} does not exist; pass the folder holding the colour label PNGs")
    exts = {".png", ".bmp", ".gif", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise SpadeganError(f"no images found in {src}; expected colour label PNGs there")
    dup = sorted(s for s, k in Counter(p.stem for p in files).items() if k > 1)
    if dup:
        raise SpadeganError(f"{src}: several files share the stem(s) {', '.join(dup[:5])}; keep one image per stem")
    dst = Path(out_dir)
    if dst.resolve() == src.resolve():
        raise SpadeganError(f"output folder {dst} is the input folder; choose another so the originals are kept")
    dst.mkdir(parents=True, exist_ok=True)
    for p in tqdm(files, desc="convert labels", unit="img"):
        try:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise SpadeganError(f"{p}: cannot read image ({e}); remove or fix the file") from None
        ids = color_to_label(rgb, classes, str(p))
        if ids.dtype != np.uint8:
            raise SpadeganError(
                f"{p}: uses class id {int(ids.max())} > 255, which 8-bit label PNGs cannot hold; "
                "renumber the palette to at most 256 classes"
            )
        Image.fromarray(ids).save(dst / f"{p.stem}.png")
    return len(files)
