"""Training and testing: the official GauGAN/SPADE schedule, resumable, AMP and DDP aware.

- `trainer.py`: `Pix2PixModel` (networks + losses), `Trainer` (the step, optimizers, lr
  schedule, checkpoints, exact resume, Ctrl-C handling).
- `visualizer.py`: loss_log.txt, web/index.html samples, TensorBoard.
- `distributed.py`: torchrun / DistributedDataParallel setup (gloo on CPU, nccl on CUDA).
- `cli.py`: `spadegan train` and `spadegan test`.
"""

from __future__ import annotations

__all__ = ["Trainer", "Pix2PixModel"]


def __getattr__(name: str):
    # lazy: `spadegan train --help` should not pay for importing torch twice over
    if name in __all__:
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(name)
