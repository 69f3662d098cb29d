"""VGG19 feature extractor for the perceptual loss, with torchvision's weight layout.

Only the convolutional `features` part is built; its indices match torchvision's
`vgg19().features`, so `vgg19-dcbb9e9d.pth` (ImageNet) loads directly. Weights come from
a user-given file or the torch hub cache; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import SpadeganError
from ..fileio import read_state_dict

VGG19_FILE = "vgg19-dcbb9e9d.pth"
# torchvision's configuration "E": channels, "M" = max-pool
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
        512, 512, 512, 512, "M"]
# slice ends in `features`: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
_SLICES = (2, 7, 12, 21, 30)


class VGG19(nn.Module):
    """Returns the relu1_1 .. relu5_1 activations; frozen (requires_grad False)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers[:_SLICES[-1]])
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for end in _SLICES:
            for i in range(start, end):
                x = self.features[i](x)
            out.append(x)
            start = end
        return out


def find_vgg_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The VGG19 weights file: `path`, else $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise SpadeganError(f"--vgg_weights {p}: no such file")
        return p
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME",
                                                                        Path.home() / ".cache")) / "torch"))
    cached = torch_home / "hub" / "checkpoints" / VGG19_FILE
    return cached if cached.is_file() else None


def load_vgg19(path: str | os.PathLike | None = None, required: bool = True) -> VGG19:
    """A VGG19 with ImageNet weights from `path` or the torch hub cache.

    With required=False and no file, returns random weights (benchmarks and tests only).
    """
    net = VGG19()
    found = find_vgg_weights(path)
    if found is None:
        if required:
            raise SpadeganError(
                "the VGG loss needs ImageNet VGG19 weights: pass --vgg_weights PATH to torchvision's "
                f"{VGG19_FILE} (or place it in $TORCH_HOME/hub/checkpoints/), or train with --no_vgg_loss")
        return net
    sd = read_state_dict(found, "VGG19 weights")
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    feats = {k: v for k, v in feats.items() if int(k.split(".")[0]) < _SLICES[-1]}
    missing = net.features.load_state_dict(feats, strict=False)
    if missing.missing_keys:
        raise SpadeganError(f"{found} is not a torchvision VGG19 state_dict "
                            f"(missing {missing.missing_keys[:3]})")
    return net
