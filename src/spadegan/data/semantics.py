"""Label map (+ instance map) -> the semantics tensor the networks read.

One-hot channels for the class ids (label_nc, +1 for dontcare) followed, unless
`no_instance`, by one channel of instance boundaries: a pixel is an edge when any of its
4-neighbours has another instance id (the official `preprocess_input` / `get_edges`).
`instance_map` picks a dataset batch's instance map (None for the no-instance placeholder):
the one preprocessing of label and instance maps, used by training, test, eval and synthesis.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..errors import SpadeganError


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """(..., H, W) instance ids -> (..., H, W) uint8, 1 where a 4-neighbour has another id.

    Written with pads instead of in-place slice updates, so that it also traces to ONNX
    (the synthesis engine computes its codes with it).
    """
    dx = (instance[..., :, 1:] != instance[..., :, :-1]).to(torch.uint8)
    dy = (instance[..., 1:, :] != instance[..., :-1, :]).to(torch.uint8)
    e = torch.maximum(F.pad(dx, (1, 0)), F.pad(dx, (0, 1)))
    return torch.maximum(e, torch.maximum(F.pad(dy, (0, 0, 1, 0)), F.pad(dy, (0, 0, 0, 1))))


def get_edges(instance: torch.Tensor) -> torch.Tensor:
    """Float map (B,1,H,W) of instance boundaries."""
    return instance_edges(instance).float()


def instance_map(data: Mapping[str, Any], opt) -> torch.Tensor | None:
    """The instance map of a dataset item or batch, or None where there is none to read.

    None when the model reads no instance map (`opt.no_instance`) or the dataset has none
    (its `instance` is the official 0 placeholder).
    """
    inst = data.get("instance")
    if opt.no_instance or not torch.is_tensor(inst) or inst.dim() < 3:
        return None
    return inst


def to_semantics(label: torch.Tensor, instance: torch.Tensor | None, opt) -> torch.Tensor:
    """(B,1,H,W) class ids (dontcare already mapped to label_nc) -> (B, semantic_nc, H, W).

    `opt` needs label_nc, contain_dontcare_label and no_instance (Options or any object).
    """
    if label.dim() == 3:
        label = label.unsqueeze(1)
    label = label.long()
    nc = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
    if label.numel() and (int(label.max()) >= nc or int(label.min()) < 0):
        raise SpadeganError(
            f"label map holds id {int(label.max()) if int(label.max()) >= nc else int(label.min())}, "
            f"outside 0..{nc - 1} (label_nc={opt.label_nc}"
            f"{', with dontcare' if opt.contain_dontcare_label else ''})")
    b, _, h, w = label.shape
    sem = torch.zeros(b, nc, h, w, device=label.device).scatter_(1, label, 1.0)
    if not opt.no_instance:
        if instance is None:
            raise SpadeganError("this model needs an instance map (trained without --no_instance)")
        if instance.dim() == 3:
            instance = instance.unsqueeze(1)
        sem = torch.cat((sem, get_edges(instance)), dim=1)
    return sem
