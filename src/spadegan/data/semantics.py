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

from ..layers.label_codes import LabelCodes, instance_edges


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
    The one-hot tensor of the label map's `LabelCodes` (which also validate the ids).
    """
    return LabelCodes.from_label(label, instance, opt).semantics()
