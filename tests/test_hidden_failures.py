"""Failures and substitutions that must not pass unnoticed (issue 21, items 4-6): fallback
palette colours, a TensorBoard that is installed but broken, the glibc malloc settings of
CPU training, a paint worker stuck in a model, and the precision `--amp` trains in."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import spadegan.device as dev
from spadegan.errors import SpadeganError, SpadeganWarning
from spadegan.options import parse


@pytest.fixture(autouse=True)
def _fresh_notices(monkeypatch):
    monkeypatch.setattr(dev, "_SAID", set())  # "once" per test, not once per session


# ---- palettes ---------------------------------------------------------------------------------
def test_a_mode_without_a_palette_says_its_colours_are_generated():
    from spadegan.visuals import label_palette, label_to_numpy
    facades = parse(["--dataset_mode", "facades"], train=True)
    with pytest.warns(SpadeganWarning, match="--dataset_mode facades has no palette"):
        pal = label_palette(facades)
    custom = parse(["--dataset_mode", "custom", "--label_dir", "x", "--image_dir", "y", "--label_nc", "13"],
                   train=True)
    assert np.array_equal(pal, label_palette(custom))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only; custom and ade20k have their colours: no notice
        label_to_numpy(torch.zeros(1, 1, 4, 4), facades)
        label_palette(custom)
        label_palette(parse(["--dataset_mode", "ade20k"], train=True))


def test_palette_errors_are_not_turned_into_fallback_colours(monkeypatch):
    import spadegan.data.palettes as palettes
    from spadegan.visuals import label_palette

    def broken(mode):
        raise OSError(f"the {mode} class table cannot be read")
    monkeypatch.setattr(palettes, "load_classes", broken)
    with pytest.raises(OSError, match="ade20k class table"):
        label_palette(parse(["--dataset_mode", "ade20k"], train=True))
