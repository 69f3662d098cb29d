"""What the paint app needs from a model (`SynthesisBackend`) and how it checks one: the
palette it offers, the common classes shown first, the class the eraser paints."""

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import SpadeganError

log = logging.getLogger("spadegan.app")


#: Class names shown at the top of the palette, in this order (GauGAN demo style). Matched
#: against normalised class names (lower case, "-other"/"-merged"/"-stuff" suffixes dropped).
COMMON_CLASS_NAMES: tuple[str, ...] = (
    "sky", "clouds", "cloud", "sea", "water", "river", "mountain", "hill", "rock", "stone",
    "grass", "tree", "bush", "flower", "sand", "snow", "dirt", "gravel", "mud", "road",
    "house", "building", "bridge", "fog", "fence", "field", "plant", "wall",
)


#: Names that mark the "nothing painted" class the eraser paints with.
BACKGROUND_CLASS_NAMES: tuple[str, ...] = ("background", "unlabeled", "unlabelled", "void", "none", "other")


@runtime_checkable
class SynthesisBackend(Protocol):
    """What the app needs from a model. The real adapter wraps a ``Synthesizer``.

    Attributes
    ----------
    label_nc: number of class ids accepted (ids ``0..label_nc-1``); larger ids are
        rejected by the server with a 400 before they reach the backend.
    width, height: model resolution; labels (and styles) are resized to it.
    classes: palette entries ``{"id": int, "name": str, "color": [r, g, b]}``; ids must be
        unique; entries with ids ``>= label_nc`` are left out of the palette (with a logged
        warning). Ids without an entry are valid but unnamed.
    use_vae: whether a style image is supported (``styles`` entries may be non-None).
    name: shown in the page header.
    input_nc (optional, default 0): 1 or 3 for a model conditioned on label *images*
        (``--label_nc 0``: greyscale or RGB sketches, edges, colour layouts). Then
        ``label_nc`` may be 0, ``classes`` must be empty, and the labels passed to
        ``synthesize_batch`` are ``(height, width, input_nc)`` float32 images in [0, 1];
        the page offers a free colour (or grey) brush instead of the class palette.
    supports_region_seeds (optional, default False): the model draws per-class noise (3D
        noise, OASIS); then requests may carry ``region_seeds`` and ``synthesize_batch`` is
        called with the keyword ``region_seeds`` (one ``{class id: seed}`` dict or None per
        image) whenever one of the batch's requests has them; never otherwise, so backends
        without the attribute keep the three-argument call.

    ``synthesize_batch(labels, seeds, styles)`` gets equally long lists: label maps of
    shape ``(height, width)`` (``uint8`` when ``label_nc <= 256``, else ``int64``), seeds
    (the server always passes ints, drawing random ones itself so ``X-Seed`` reproduces
    a result; ``None`` is allowed by the type for other callers) and style images
    ``(height, width, 3) uint8`` or ``None``. It returns one ``(H, W, 3) uint8`` image per
    input, in order. It is only ever called from the single worker thread. A
    ``SpadeganError`` it raises is reported to the client as a 400; anything else as a
    503 "model error".
    """

    label_nc: int
    width: int
    height: int
    classes: list[dict]
    use_vae: bool
    name: str

    def synthesize_batch(
        self,
        labels: list[np.ndarray],
        seeds: list[int | None],
        styles: list[np.ndarray | None],
    ) -> list[np.ndarray]: ...


def _normalise_name(name: str) -> str:
    n = name.strip().lower()
    for suffix in ("-other", "-merged", "-stuff", " other"):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    return n


def label_image_channels(backend: SynthesisBackend) -> int:
    """The backend's ``input_nc``: 0 for class-id labels, 1 or 3 for label images."""
    value = getattr(backend, "input_nc", 0)
    if value not in (0, 1, 3) or isinstance(value, bool):
        raise SpadeganError(f"synthesis backend: input_nc must be 0 (class ids), 1 or 3 (label images), got {value!r}")
    return int(value)


def check_backend(backend: SynthesisBackend) -> list[dict]:
    """Validate the backend's static attributes; return a cleaned copy of ``classes``."""
    for attr in ("label_nc", "width", "height", "classes", "use_vae", "name", "synthesize_batch"):
        if not hasattr(backend, attr):
            raise SpadeganError(f"synthesis backend {type(backend).__name__} lacks attribute {attr!r}")
    image = label_image_channels(backend) > 0
    for attr in ("label_nc", "width", "height"):
        value = getattr(backend, attr)
        low = 0 if (image and attr == "label_nc") else 1
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise SpadeganError(f"synthesis backend: {attr} must be a positive int, got {value!r}")
    if image:
        if backend.classes:
            raise SpadeganError("synthesis backend: a backend reading label images (input_nc "
                                f"{backend.input_nc}) has no palette classes, got {len(backend.classes)}")
        return []
    classes: list[dict] = []
    seen: set[int] = set()
    for i, c in enumerate(backend.classes):
        try:
            cid, name, color = int(c["id"]), str(c["name"]), [int(v) for v in c["color"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SpadeganError(f"synthesis backend: classes[{i}] must be {{id, name, color}}: {exc}") from exc
        if not 0 <= cid < backend.label_nc:
            # e.g. COCO-Stuff's 255 "unlabeled": it cannot be painted (the server rejects
            # ids >= label_nc), so leave it out of the palette instead of failing.
            log.warning("palette class %r has id %d outside 0..%d; not offered in the palette",
                        name, cid, backend.label_nc - 1)
            continue
        if cid in seen:
            raise SpadeganError(f"synthesis backend: classes[{i}] repeats id {cid}")
        if len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise SpadeganError(f"synthesis backend: classes[{i}] colour {color} is not [r, g, b] in 0..255")
        seen.add(cid)
        classes.append({"id": cid, "name": name, "color": color})
    return classes


def common_class_ids(classes: Sequence[dict]) -> list[int]:
    by_name: dict[str, int] = {}
    for c in classes:
        by_name.setdefault(_normalise_name(c["name"]), c["id"])
    out: list[int] = []
    for n in COMMON_CLASS_NAMES:
        cid = by_name.get(n)
        if cid is not None and cid not in out:
            out.append(cid)
    return out


def pick_background_id(backend: SynthesisBackend, classes: Sequence[dict], override: int | None) -> int:
    bg = override if override is not None else getattr(backend, "background_id", None)
    if bg is not None:
        if not 0 <= int(bg) < backend.label_nc:
            raise SpadeganError(f"background id {bg} is not in 0..{backend.label_nc - 1}")
        return int(bg)
    for c in classes:
        if _normalise_name(c["name"]) in BACKGROUND_CLASS_NAMES:
            return c["id"]
    return classes[0]["id"] if classes else 0
