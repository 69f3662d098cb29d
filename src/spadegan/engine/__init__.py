"""The fast inference engine derived from a trained SPADE generator, and its export.

`SynthesisEngine.from_generator(G, precision)` gives a module computing what the faithful
`networks.SPADEGenerator` computes in eval mode (max abs error <= 1e-4 in fp32), from class
ids instead of one-hot maps, several times faster on CPU; `spadegan export` writes it as
ONNX or TorchScript (or the generator's weights as safetensors). See `engine.py` for how.
"""

from .engine import SynthesisEngine, count_flops

__all__ = ["SynthesisEngine", "count_flops"]
