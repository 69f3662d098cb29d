"""scripts/ship_builtin_model.py: what goes into the package as the built-in model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import load_script



def _ship_module():
    return load_script("scripts/ship_builtin_model.py")


def _run_folder(folder: Path) -> None:
    folder.mkdir()
    big, small = torch.full((80, 64), 0.1), torch.full((8,), 0.2)
    for net, scale in (("G", 1.0), ("EMA", 2.0), ("E", 3.0)):
        torch.save({"conv.weight": big * scale, "conv.bias": small * scale,
                    "conv.weight_u": small * scale}, folder / f"latest_net_{net}.pth")
    (folder / "opt.json").write_text(json.dumps({"use_vae": True, "checkpoints_dir": "/work/runs/checkpoints",
                                                 "dataroot": "/work/data/landscapes128", "continue_train": True}))


def test_ships_the_moving_average_halved_with_generic_options(tmp_path):
    ship = _ship_module()
    _run_folder(tmp_path / "run")
    out = tmp_path / "pkg"
    assert ship.main([str(tmp_path / "run"), str(out)]) == 0
    g = torch.load(out / "latest_net_G.pth", weights_only=True)
    assert g["conv.weight"].dtype == torch.float16 and g["conv.bias"].dtype == torch.float32
    assert g["conv.weight_u"].dtype == torch.float32
    assert float(g["conv.weight"][0, 0]) == torch.tensor(0.2).half().item()  # the EMA, not G
    e = torch.load(out / "latest_net_E.pth", weights_only=True)
    assert abs(float(e["conv.bias"][0]) - 0.6) < 1e-6
    opt = json.loads((out / "opt.json").read_text())
    assert opt["checkpoints_dir"] == "./checkpoints" and opt["dataroot"] == "./datasets/landscapes128"
    assert opt["continue_train"] is False


def test_no_ema_ships_the_last_generator_weights(tmp_path):
    ship = _ship_module()
    _run_folder(tmp_path / "run")
    out = tmp_path / "pkg"
    assert ship.main([str(tmp_path / "run"), str(out), "--no_ema"]) == 0
    g = torch.load(out / "latest_net_G.pth", weights_only=True)
    assert float(g["conv.weight"][0, 0]) == torch.tensor(0.1).half().item()


def test_a_folder_without_options_is_refused(tmp_path, capsys):
    assert _ship_module().main([str(tmp_path), str(tmp_path / "pkg")]) == 2
    assert "opt.json" in capsys.readouterr().err
