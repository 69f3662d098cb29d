"""The fast inference engine derived from a trained SPADE generator, and its export.

`SynthesisEngine.from_generator(G, precision)` gives a module computing what the faithful
`networks.SPADEGenerator` computes in eval mode (max abs error <= 1e-4 in fp32), from class
ids instead of one-hot maps, several times faster on CPU; `spadegan export` writes it as
ONNX or TorchScript (or the generator's weights as safetensors). See `engine.py` for how.
`OASISEngine.from_generator(G)` does the same for the published OASIS generator (3D noise;
`oasis_engine.py`), `IncrementalEngine` gives stroke previews (`incremental.py`).
"""

from .engine import SynthesisEngine, count_flops
from .oasis_engine import OASISEngine

__all__ = ["OASISEngine", "SynthesisEngine", "count_flops"]
