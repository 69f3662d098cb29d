"""``spadegan paint``: the GauGAN-style painting web app (FastAPI server + static page).

Import :func:`create_app` / :func:`serve` and implement :class:`SynthesisBackend` to plug a
model in; see :mod:`spadegan.app.server` for the HTTP API. Modules: `server` (the app and
its routes), `inputs` (decoding requests), `worker` (the inference thread), `backend` (the
model protocol), `cli` (`spadegan paint`).
"""

from .backend import SynthesisBackend
from .server import create_app, serve

__all__ = ["SynthesisBackend", "create_app", "serve"]
