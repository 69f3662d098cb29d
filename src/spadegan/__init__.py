"""spadegan: GauGAN / SPADE semantic image synthesis (Park et al., CVPR 2019).

The public API, mirroring the official code:

- `spadegan.Synthesizer`: label maps -> images with a trained generator (or the built-in
  model); `Synthesizer.from_checkpoint(folder)`;
- `spadegan.load_checkpoint(folder, which="G")`: an official or spadegan network with the
  options saved beside it (`net.opt`);
- `spadegan.options.parse(argv, train=True)`: the official command-line flags as Options;
- `spadegan.networks.define_G` / `define_D` / `define_E(opt)`: the networks;
- `spadegan.data.to_semantics(label, instance, opt)`: label map -> the generator's input.

Heavier parts (the synthesizer and its engine, the trainer, the paint app) are imported only
when used, so `import spadegan` stays light. `docs/architecture.md` maps the package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .checkpoint import load_checkpoint  # noqa: E402
from .errors import SpadeganError  # noqa: E402

__all__ = ["Synthesizer", "load_checkpoint", "SpadeganError", "options", "networks", "data", "__version__"]

_SUBMODULES = {"options", "networks", "data", "device", "engine", "fileio", "evaluation", "train", "app"}


def __getattr__(name: str) -> Any:
    # lazy: `spadegan.Synthesizer` imports the synthesis engine, submodules load on first use
    if name == "Synthesizer":
        from .synthesize import Synthesizer
        return Synthesizer
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'spadegan' has no attribute {name!r}")
