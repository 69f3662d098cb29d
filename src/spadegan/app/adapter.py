"""`AppBackend`: the paint app's model adapter (`SynthesisBackend`) over a `Synthesizer`.

The server decodes and range-checks every label with the synthesizer's own decoder
(`spadegan.synthesize.inputs`, through `app.inputs.decode_label`) before a job reaches the
worker, so the adapter hands the decoded maps to `Synthesizer.synthesize_decoded` as they
are: they become tensors there, once, and are not checked again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from ..synthesize.session import DEFAULT_POOL_BYTES, SessionPool

if TYPE_CHECKING:
    from ..synthesize import Synthesizer


class AppBackend:
    """The paint app's model adapter (`spadegan.app.backend.SynthesisBackend`) over a Synthesizer.

    `label_nc` is the synthesizer's `label_channels`: the app sends model ids 0..label_nc-1,
    where 255 is an id like any other, not dontcare. For a --label_nc 0 model `label_nc` is
    0, `classes` empty and `input_nc` the channels of the label images the app sends
    ((H, W, input_nc) float32 in [0, 1] at the model size).

    `supports_region_seeds`: the model draws 3D noise (OASIS), so `synthesize_batch` takes
    `region_seeds` ({class id: seed} per image) re-rolling those classes' appearance alone.
    For an official OASIS run the ids are the dataset's own (`OASISSynthesizer`).
    """

    def __init__(self, synthesizer: "Synthesizer", name: str | None = None,
                 cache_bytes: int = DEFAULT_POOL_BYTES):
        self.synthesizer = synthesizer
        #: one stroke-preview session per painter, within `cache_bytes` (least recently used out)
        self.sessions = SessionPool(synthesizer, cache_bytes)
        #: painter requests get previews (the engine serves the model; else each is a full pass)
        self.supports_previews = synthesizer.engine is not None
        self.label_nc = synthesizer.label_channels  # ids the app may send: 0..label_nc-1
        self.input_nc = synthesizer.input_nc
        self.width, self.height = synthesizer.width, synthesizer.height
        self.use_vae = synthesizer.use_vae
        self.supports_region_seeds = bool(synthesizer.use_3d_noise)
        self.name = name or synthesizer.name
        self.classes = [{"id": c.id, "name": c.name, "color": [int(v) for v in c.color]}
                        for c in synthesizer.classes if c.id < self.label_nc]

    def synthesize_batch(self, labels: list[np.ndarray], seeds: list[int | None],
                         styles: list[np.ndarray | None],
                         region_seeds: list[dict[int, int] | None] | None = None) -> list[np.ndarray]:
        """Decoded (H, W) id maps (or label images) + seeds + optional (H, W, 3) style photos, all at
        the model size (+ per-class seeds, 3D-noise models) -> (H, W, 3) uint8 images."""
        return self.synthesizer.synthesize_decoded(labels, None, styles, seeds, (self.height, self.width),
                                                   output="numpy", region_seeds=region_seeds)

    def paint(self, painter: str, label: np.ndarray, seed: int, style: np.ndarray | None,
              final: bool = False) -> tuple[np.ndarray, bool, str]:
        """One painter's request: (image, whether it is a preview, why a full pass ran).
        `final`: the exact image (`PaintSession.refine`), else a preview where the painter's
        cache allows (`PaintSession.update`). Only called from the worker thread."""
        key = None if style is None else hashlib.sha256(np.ascontiguousarray(style).tobytes()).hexdigest()
        session = self.sessions.session(painter, seed, style, key)
        if final:
            image = session.refine(label, decoded=True)
        else:
            image = session.update(label, decoded=True)
        info = session.last
        self.sessions.account(painter)
        return image, info.preview, info.reason
