"""Training and testing: the official GauGAN/SPADE schedule, resumable, AMP and DDP aware.

- `trainer.py`: `Trainer` (the step, optimizers, lr schedule, checkpoints, exact resume,
  Ctrl-C handling).
- `model.py`: `Pix2PixModel` (G, D, E and the losses of one step).
- `sampling.py`: the data order (per-epoch permutations, per-sample seeds).
- `state.py`: seeds, RNG states and iter.txt for exact resume.
- `visualizer.py`: loss_log.txt, web/index.html samples, TensorBoard.
- `distributed.py`: torchrun / DistributedDataParallel setup (gloo on CPU, nccl on CUDA).
- `launch.py`: `spadegan train --gpu_ids 0,1,...` without torchrun: one process per GPU.
- `cli.py`: `spadegan train` and `spadegan test`.
"""

from __future__ import annotations

__all__ = ["Trainer", "Pix2PixModel"]


def __getattr__(name: str):
    # lazy: `spadegan train --help` should not pay for importing torch twice over
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    if name == "Pix2PixModel":
        from .model import Pix2PixModel
        return Pix2PixModel
    raise AttributeError(name)
