"""Label map (+ instance map) -> the semantics tensor the networks read.

One-hot channels for the class ids (label_nc, +1 for dontcare) followed, unless
`no_instance`, by one channel of instance boundaries: a pixel is an edge when any of its
4-neighbours has another instance id (the official `preprocess_input` / `get_edges`).
"""

from __future__ import annotations

import torch

from ..errors import SpadeganError


def get_edges(instance: torch.Tensor) -> torch.Tensor:
    """Float map (B,1,H,W) of instance boundaries."""
    t = instance
    edge = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    dx = t[:, :, :, 1:] != t[:, :, :, :-1]
    dy = t[:, :, 1:, :] != t[:, :, :-1, :]
    edge[:, :, :, 1:] |= dx
    edge[:, :, :, :-1] |= dx
    edge[:, :, 1:, :] |= dy
    edge[:, :, :-1, :] |= dy
    return edge.float()


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
