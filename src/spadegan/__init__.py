"""spadegan: GauGAN / SPADE semantic image synthesis (Park et al., CVPR 2019).

Layers -> networks -> model (losses, trainer) -> synthesizer -> CLI / paint app. The public
entry points mirror the official code: `spadegan.options.parse`, `spadegan.networks.define_G`
/`define_D`/`define_E`, `spadegan.data.to_semantics`, and `spadegan.load_checkpoint`.
"""

__version__ = "0.1.0"

from .checkpoint import load_checkpoint  # noqa: E402
from .errors import SpadeganError  # noqa: E402

__all__ = ["load_checkpoint", "SpadeganError", "__version__"]
