"""Paint sessions: fast stroke previews, then the exact image (`Synthesizer.session`).

    session = syn.session(seed=1)
    preview = session.update(label)      # (H, W, 3) uint8; a preview after the first call
    final = session.refine()             # == syn.synthesize(label, seed=1, output="numpy")

A session keeps the last full pass's activations (`engine.incremental.EngineState`) and
answers `update` with a preview computed from them around the changed pixels
(`engine.incremental.IncrementalEngine`). A preview is an approximation; `refine` runs a
full pass on the last map, returns the exact image (what `Synthesizer.synthesize` gives) and
refreshes the cache. Previews are always computed from the last full pass, never from the
previous preview, so their error does not accumulate. `update` runs a full pass itself (and
says why in `last`) on the first call, after `drop` (a painter evicted from a `SessionPool`),
when the label's size changes, when the edit is too large for a preview to pay, and for
models the engine does not serve. Style, seed and model are fixed per session: a new one is
a new session.

`SessionPool` keeps one session per painter (the paint app) within a byte budget, least
recently used first out; an evicted painter's next update is a full pass.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine.incremental import EngineState, IncrementalEngine, PreviewInfo
from ..errors import SpadeganError
from ..visuals import image_to_numpy
from .inputs import ImageLike, LabelLike

#: the paint app's default cache budget: a few ADE20K/COCO 256 px painters (about 34 MB each)
#: on a 2-core / 8 GB laptop
DEFAULT_POOL_BYTES = 512 * 2**20


@dataclass
class UpdateInfo:
    """What the last `update`/`refine` returned: `preview` (an approximation) or not, why a
    full pass ran when one did (`reason`, "" for a preview), the preview's plan (`plan`)."""

    preview: bool
    reason: str
    plan: PreviewInfo | None = None


class PaintSession:
    """One painter's label map, seed and style, and the cache previews are computed from."""

    def __init__(self, synthesizer: Any, seed: int | None = None, style: ImageLike | None = None,
                 margins: dict[int, int] | None = None, max_cost: float | None = None):
        self.syn = synthesizer
        #: fixed for the session: drawn once when not given, so refine() is reproducible
        self.seed = int(seed) if seed is not None else secrets.randbits(31)
        self.style = style
        self.size = (synthesizer.height, synthesizer.width)
        kwargs: dict[str, Any] = {} if max_cost is None else {"max_cost": max_cost}
        self.incremental = (IncrementalEngine(synthesizer.engine, margins, **kwargs)
                            if synthesizer.engine is not None else None)
        self._z: torch.Tensor | None = None
        self._state: EngineState | None = None
        self._evicted = False
        self._label: np.ndarray | None = None  # the current map (as read), its instance map
        self._instance: np.ndarray | None = None
        self._exact: np.ndarray | None = None  # the full pass's image of the current map, if made
        self.last: UpdateInfo | None = None

    # ---- inputs ---------------------------------------------------------------------------
    def _tensors(self, label: np.ndarray, instance: np.ndarray | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `Synthesizer.synthesize_decoded` makes them: (1, H, W) ids and instance ids
        (for class-id models `label_tensor` is its `ids_to_tensor`, nearest resizing)."""
        lab = self.syn.label_tensor(label, self.size)[None]
        inst = None
        if self.syn.needs_instance and not self.syn.image_label:
            inst = (self.syn.label_tensor(instance, self.size) if instance is not None else lab[0])[None]
        return lab, inst

    def _latent(self) -> torch.Tensor | None:
        if self._z is None:
            self._z = self.syn.latent([self.seed], [self.style], self.size)
        return self._z

    # ---- the two passes -------------------------------------------------------------------
    def _full(self, reason: str) -> np.ndarray:
        if self.incremental is None:  # the synthesizer's own path (the training network, OASIS)
            self._exact = self.syn.synthesize_decoded([self._label], [self._instance], [self.style], [self.seed],
                                                      self.size, output="numpy")[0]
        else:
            lab, inst = self._tensors(self._label, self._instance)
            self._state = self.incremental.full(lab, inst, self._latent(), self.size)
            self._exact = image_to_numpy(self._state.image)[0]
        self._evicted = False
        self.last = UpdateInfo(False, reason)
        return self._exact

    def _read(self, label: LabelLike, instance: LabelLike | None, decoded: bool
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """`decoded`: already what `Synthesizer.read_label` gives (as `synthesize_decoded` takes it).
        Copies: a caller painting into the same array in place must not change the cached map."""
        if decoded:
            lab, inst = np.asarray(label), None if instance is None else np.asarray(instance)
        else:
            lab, inst = self.syn.read_label(label), None if instance is None else self.syn.instance_ids(instance)
        return np.array(lab, copy=True), None if inst is None else np.array(inst, copy=True)

    def update(self, label: LabelLike, instance: LabelLike | None = None, decoded: bool = False) -> np.ndarray:
        """The image of a new label map (+ instance map): a preview when the cache allows,
        else a full pass (`last` says which and why). (H, W, 3) uint8. `decoded`: the maps
        are already decoded (`Synthesizer.read_label`, the paint app's decoder)."""
        read, inst = self._read(label, instance, decoded)
        resized = self._label is not None and read.shape != self._label.shape
        self._label, self._instance, self._exact = read, inst, None
        if self.incremental is None:
            return self._full(f"no stroke previews for this model: it runs {self.syn.network}")
        if self._state is None:
            return self._full("evicted from the painters' cache" if self._evicted else "first update")
        if resized:
            return self._full("the label map's size changed")
        lab, inst_t = self._tensors(read, inst)
        image, plan = self.incremental.preview(self._state, lab, inst_t)
        if image is None:
            self._full(f"the edit would cost {plan.cost:.0%} of a full pass as a preview (more than "
                       f"{self.incremental.max_cost:.0%})")
            self.last.plan = plan
            return self._exact
        if plan.changed is None:  # the map the cache was made from: that pass's image
            self._exact = image_to_numpy(image)[0]
            self.last = UpdateInfo(False, "unchanged since the last full pass", plan)
            return self._exact
        self.last = UpdateInfo(True, "", plan)
        return image_to_numpy(image)[0]

    def refine(self, label: LabelLike | None = None, instance: LabelLike | None = None,
               decoded: bool = False) -> np.ndarray:
        """The exact image of the last map (or of `label`, which becomes the current map):
        `Synthesizer.synthesize(label, instance, style=style, seed=self.seed, output="numpy")`.
        Refreshes the cache previews are made from."""
        if label is not None:
            read, inst = self._read(label, instance, decoded)
            same = (self._label is not None and read.shape == self._label.shape
                    and np.array_equal(read, self._label)
                    and (inst is None) == (self._instance is None)
                    and (inst is None or np.array_equal(inst, self._instance)))
            if not same:
                self._label, self._instance, self._exact = read, inst, None
        if self._label is None:
            raise SpadeganError("refine() before any update(): give the session a label map first")
        if self._exact is not None and (self._state is not None or self.incremental is None):
            self.last = UpdateInfo(False, "the last pass was already exact")
            return self._exact
        return self._full("refine")

    # ---- memory -----------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes the session's cache holds (activations, images, label maps)."""
        n = 0 if self._state is None else self._state.nbytes
        for a in (self._label, self._instance, self._exact):
            n += 0 if a is None else a.nbytes
        return n

    def drop(self) -> None:
        """Forget the cache (the next update is a full pass, saying so)."""
        self._state = None
        self._exact = None
        self._evicted = True


class SessionPool:
    """One `PaintSession` per painter id within `max_bytes`, least recently used out first.

    `session(painter, seed, style_key)` gives the painter's session, a new one when there is
    none or its seed or style differ (`style_key`: anything comparable identifying the style,
    e.g. its bytes' hash); `account(painter)` after a call evicts other painters until the
    pool fits. A painter whose session alone exceeds the budget keeps none (each of its updates
    is a full pass). At most `max_painters` sessions exist at once whatever their size.
    """

    def __init__(self, synthesizer: Any, max_bytes: int = DEFAULT_POOL_BYTES, max_painters: int = 1024,
                 **session_kwargs: Any):
        if max_bytes < 0 or max_painters < 1:
            raise SpadeganError(f"painters' cache: max_bytes must be >= 0 and max_painters >= 1, got "
                                f"{max_bytes} and {max_painters}")
        self.syn = synthesizer
        self.max_bytes = int(max_bytes)
        self.max_painters = int(max_painters)
        self.session_kwargs = session_kwargs
        self._sessions: OrderedDict[str, tuple[PaintSession, Any]] = OrderedDict()
        self._evicted: set[str] = set()  # painters evicted before (their next session says so)
        self.evictions = 0
        self._lock = threading.Lock()  # `stats` may be read from another thread (the app's /api/stats)

    def session(self, painter: str, seed: int | None, style: ImageLike | None = None,
                style_key: Any = None) -> PaintSession:
        with self._lock:
            return self._session(painter, seed, style, style_key)

    def _session(self, painter: str, seed: int | None, style: ImageLike | None, style_key: Any) -> PaintSession:
        entry = self._sessions.pop(painter, None)
        if entry is not None and seed in (None, entry[0].seed) and entry[1] == style_key:
            self._sessions[painter] = entry
            return entry[0]
        s = PaintSession(self.syn, seed, style, **self.session_kwargs)
        if painter in self._evicted:
            s._evicted = True
            self._evicted.discard(painter)
        self._sessions[painter] = (s, style_key)
        while len(self._sessions) > self.max_painters:
            self._evict(next(iter(self._sessions)))
        return s

    def account(self, painter: str) -> None:
        """Evict least recently used painters (then `painter` itself) until the pool fits."""
        with self._lock:
            self._account(painter)

    def _account(self, painter: str) -> None:
        for other in list(self._sessions):
            if self.nbytes <= self.max_bytes:
                return
            if other != painter:
                self._evict(other)
        if self.nbytes > self.max_bytes and painter in self._sessions:
            self._evict(painter)

    def _evict(self, painter: str) -> None:
        session, _ = self._sessions.pop(painter)
        session.drop()
        self._evicted.add(painter)
        if len(self._evicted) > 4 * self.max_painters:  # only a message depends on it: keep it bounded
            self._evicted.clear()
        self.evictions += 1

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s, _ in self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, painter: str) -> bool:
        return painter in self._sessions

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"painters": len(self), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                    "evictions": self.evictions}


__all__ = ["PaintSession", "SessionPool", "UpdateInfo", "DEFAULT_POOL_BYTES"]
