"""User images -> the uint8 RGB (B, 3, H, W) batches the papers' segmenters start from."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import SpadeganError

__all__ = ["as_uint8_batch"]


def as_uint8_batch(image: Any) -> torch.Tensor:
    """A uint8 RGB image as a (B, 3, H, W) uint8 tensor on the CPU.

    Accepts a (3, H, W) or (B, 3, H, W) uint8 tensor, or an (H, W, 3) / (B, H, W, 3) uint8
    array (NumPy or PIL-converted). Anything else raises a SpadeganError naming what was given:
    the references read 8-bit photos, so floats would hide a scaling mistake.
    """
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        channels_first = True
    else:
        array = np.asarray(image)
        tensor = torch.from_numpy(np.array(array, copy=True))  # a writable copy: PIL arrays are read-only
        channels_first = False
    if tensor.dtype != torch.uint8:
        raise SpadeganError(f"segmenter input must be uint8 RGB (0..255), got dtype {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise SpadeganError(f"segmenter input must be one image or a batch, got shape {tuple(image.shape)}")
    if not channels_first:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[1] != 3:
        layout = "(3, H, W) tensor" if channels_first else "(H, W, 3) array"
        raise SpadeganError(f"segmenter input must be an RGB {layout}, got shape {tuple(image.shape)}")
    return tensor.contiguous()
