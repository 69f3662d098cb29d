"""``spadegan paint``: the GauGAN-style painting web app (FastAPI server + static page).

Import :func:`create_app` / :func:`serve` and implement :class:`SynthesisBackend` to plug a
model in; see :mod:`spadegan.app.server` for the HTTP API. Modules: `server` (the app and
its routes), `inputs` (decoding requests, with `spadegan.synthesize.inputs`' label decoder),
`worker` (the inference thread), `backend` (the model protocol), `adapter` (`AppBackend`: the
protocol over a `Synthesizer`), `cli` (`spadegan paint`).
"""

from .adapter import AppBackend
from .backend import SynthesisBackend
from .server import create_app, serve

__all__ = ["AppBackend", "SynthesisBackend", "create_app", "serve"]
