"""``spadegan paint``: the GauGAN-style painting web app (FastAPI server + static page).

Import :func:`create_app` / :func:`serve` and implement :class:`SynthesisBackend` to plug a
model in; see :mod:`spadegan.app.server` for the HTTP API.
"""

from spadegan.app.server import SynthesisBackend, create_app, serve

__all__ = ["SynthesisBackend", "create_app", "serve"]
