"""Label maps -> images with a trained generator: the `Synthesizer` API and `spadegan synthesize`.

    from spadegan.synthesize import Synthesizer
    syn = Synthesizer.from_checkpoint("checkpoints/coco_pretrained")   # or None: built-in model
    image = syn.synthesize("label.png", instance="inst.png", seed=1)    # PIL image

Modules: `inputs` (the one decoder of label maps, label images, instance maps and style
photos, shared with the paint app), `synthesizer` (`Synthesizer`, `builtin_checkpoint`),
`oasis` (`OASISSynthesizer`: the same API over an official OASIS run),
`cli` (`spadegan synthesize` and its `--demo` page). The paint app's adapter over a
Synthesizer is `spadegan.app.adapter.AppBackend`.
"""

from .cli import main
from .inputs import LabelSpace
from .oasis import OASISSynthesizer
from .synthesizer import BUILTIN_DIR, Synthesizer, builtin_checkpoint

__all__ = ["Synthesizer", "OASISSynthesizer", "LabelSpace", "builtin_checkpoint", "main", "BUILTIN_DIR"]
