"""Style banks: random styles drawn from the encoder's codes of training photos (`spadegan style-bank`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spadegan.checkpoint import load_checkpoint
from spadegan.cli import main as cli_main
from spadegan.errors import SpadeganError, SpadeganWarning
from spadegan.evaluation.split import EvalSplit, load_networks, random_style_bank, synthesize_split
from spadegan.fileio import write_safetensors
from spadegan.synthesize import Synthesizer
from spadegan.synthesize.style_bank import (StyleBank, bank_path, load_style_bank, save_style_bank,
                                            style_bank_for)
from test_eval_cli import SIZE, _make_checkpoint, tiny_data  # noqa: F401 (fixture)

Z = 16  # the z_dim of test_eval_cli's checkpoints


@pytest.fixture(scope="module")
def vae_run(tiny_data, tmp_path_factory):  # noqa: F811 (fixture)
    """A tiny VAE run (z_dim 16) with its bank built by the command, as a user would."""
    run = _make_checkpoint(tmp_path_factory.mktemp("bank") / "vae", tiny_data, epochs=(1,))
    assert cli_main(["style-bank", "--checkpoint", str(run), "--dataroot", str(tiny_data)]) == 0
    return run


def one_entry_bank(mu: torch.Tensor, sha: str = "") -> StyleBank:
    """A bank of one code with no spread (sigma underflows to 0): every draw is `mu` exactly."""
    return StyleBank(mu[None], torch.full((1, mu.numel()), -300.0), sha, "test")


def test_the_command_encodes_the_train_photos_with_the_models_encoder(vae_run, tiny_data):  # noqa: F811
    bank = load_style_bank(vae_run / "latest_style_bank.safetensors", Z)
    assert len(bank) == 4 and bank.z_dim == Z  # make_landscapes(count=9, val_count=5): 4 train photos
    E = load_checkpoint(vae_run, "E")
    from spadegan.data.datasets import create_dataset, reading_options
    opt = reading_options(E.opt.replace(dataroot=str(tiny_data)), "train", SIZE)
    photos = torch.stack([create_dataset(opt)[(i, 0)]["image"] for i in range(4)])
    with torch.no_grad():
        mu, logvar = E(photos)
    # float16 storage: the codes as the encoder gives them, to its precision
    assert torch.allclose(bank.mu, mu, atol=2e-3, rtol=1e-3) and torch.allclose(bank.logvar, logvar, atol=2e-3)
    assert "land_" in bank.source


def test_draws_are_seeded_and_centred_on_the_entries():
    bank = StyleBank(torch.randn(5, Z), torch.full((5, Z), -300.0))
    a = bank.draw(64, torch.Generator().manual_seed(3))
    assert torch.equal(a, bank.draw(64, torch.Generator().manual_seed(3)))
    # with no spread every draw is one of the five means, and all five come up
    hits = (a[:, None, :] - bank.mu[None]).abs().amax(-1) < 1e-6
    assert hits.sum(1).eq(1).all() and hits.any(0).all()
    wide = StyleBank(torch.zeros(1, Z), torch.zeros(1, Z)).draw(4000, torch.Generator().manual_seed(0))
    assert abs(wide.std().item() - 1) < 0.03  # logvar 0: z ~ N(mu, 1)


def test_synthesizer_random_styles_come_from_the_bank_unless_told_otherwise(vae_run, tiny_data):  # noqa: F811
    bank_file = vae_run / "latest_style_bank.safetensors"
    with pytest.warns(SpadeganWarning, match="random styles draw from the style bank"):
        syn = Synthesizer.from_checkpoint(vae_run, device="cpu")
    z = syn.latent([7], [None], (SIZE, SIZE))
    assert torch.equal(z, syn.style_bank.draw(1, torch.Generator().manual_seed(7)))
    normal = Synthesizer.from_checkpoint(vae_run, device="cpu", style_prior="normal")
    assert normal.style_bank is None
    assert torch.equal(normal.latent([7], [None], (SIZE, SIZE)), torch.randn(1, Z, generator=torch.Generator().manual_seed(7)))
    # a bank whose every entry is one code: all seeds give that code's image
    mu = torch.randn(Z)
    save_style_bank(one_entry_bank(mu, load_style_bank(bank_file, Z).encoder_sha256), bank_file)
    try:
        syn = Synthesizer.from_checkpoint(vae_run, device="cpu", style_prior="bank")
        ids = np.kron(np.random.default_rng(0).integers(0, 3, (4, 4)), np.ones((SIZE // 4, SIZE // 4), np.int64))
        a, b = (syn.synthesize(ids, seed=s, output="numpy") for s in (1, 2))
        assert np.array_equal(a, b)
        c, d = (normal.synthesize(ids, seed=s, output="numpy") for s in (1, 2))
        assert not np.array_equal(c, d)
    finally:
        bank_file.unlink()
    assert Synthesizer.from_checkpoint(vae_run, device="cpu").style_bank is None  # auto: no bank, N(0, I)
    with pytest.raises(SpadeganError, match="no style bank .*spadegan style-bank"):
        Synthesizer.from_checkpoint(vae_run, device="cpu", style_prior="bank")
    assert cli_main(["style-bank", "--checkpoint", str(vae_run), "--dataroot", str(tiny_data)]) == 0  # for the rest


def test_a_bank_built_with_another_encoder_is_not_used(vae_run, tmp_path):
    opt = load_checkpoint(vae_run, "G").opt
    other = tmp_path / "1_net_G.pth"
    other.write_bytes((vae_run / "latest_net_G.pth").read_bytes())
    (tmp_path / "1_net_E.pth").write_bytes((vae_run / "latest_net_E.pth").read_bytes())
    save_style_bank(one_entry_bank(torch.zeros(Z), "0" * 64), bank_path(other))
    with pytest.warns(SpadeganWarning, match="another encoder"):
        assert style_bank_for(other, opt, "auto") is None
    with pytest.raises(SpadeganError, match="another encoder"):
        style_bank_for(other, opt, "bank")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert style_bank_for(other, opt, "normal") is None


@pytest.mark.parametrize("tensors, meta, match", [
    ({"mu": torch.zeros(3, Z), "logvar": torch.zeros(3, Z)}, {"format": "other"}, "not a spadegan style bank"),
    ({"mu": torch.zeros(3, Z)}, {"format": "spadegan-style-bank"}, "no tensor 'logvar'"),
    ({"mu": torch.zeros(3, 8), "logvar": torch.zeros(3, 8)}, {"format": "spadegan-style-bank"}, r"\(3, 8\)"),
    ({"mu": torch.full((3, Z), float("nan")), "logvar": torch.zeros(3, Z)}, {"format": "spadegan-style-bank"},
     "non-finite"),
    ({"mu": torch.zeros(3, Z), "logvar": torch.zeros(2, Z)}, {"format": "spadegan-style-bank"}, "differ"),
])
def test_bad_bank_files_are_clear_errors_naming_the_file(tmp_path, tensors, meta, match):
    path = tmp_path / "latest_style_bank.safetensors"
    write_safetensors(path, tensors, meta)
    with pytest.raises(SpadeganError, match=match) as e:
        load_style_bank(path, Z)
    assert str(path) in str(e.value)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(SpadeganError, match=str(path)):
        load_style_bank(path, Z)


def test_eval_draws_random_styles_from_the_bank_and_says_so(vae_run, tiny_data, tmp_path):  # noqa: F811
    weights = vae_run / "latest_net_G.pth"
    G_opt = load_checkpoint(vae_run, "G").opt
    G, _ = load_networks(weights, G_opt, torch.device("cpu"), "random")
    bank = random_style_bank(weights, G_opt, "random", "auto")
    assert bank is not None and random_style_bank(weights, G_opt, "encode", "auto") is None
    labels = torch.from_numpy(np.kron(np.random.default_rng(1).integers(0, 3, (3, 4, 4)),
                                      np.ones((SIZE // 4, SIZE // 4), np.int64)))
    split = EvalSplit(labels, torch.zeros(3, 3, SIZE, SIZE, dtype=torch.uint8), None, ["a", "b", "c"])
    one = one_entry_bank(bank.mu[0])
    a = synthesize_split(G, split, G_opt, torch.device("cpu"), 2, 0, bank=one)
    b = synthesize_split(G, split, G_opt, torch.device("cpu"), 2, 5, bank=one)
    assert torch.equal(a, b)  # one code: the seed no longer matters
    assert not torch.equal(synthesize_split(G, split, G_opt, torch.device("cpu"), 2, 0),
                           synthesize_split(G, split, G_opt, torch.device("cpu"), 2, 5))
    out = tmp_path / "eval"
    assert cli_main(["eval", "--checkpoint", str(vae_run), "--dataroot", str(tiny_data), "--out", str(out),
                     "--no_plots", "--num_visuals", "0", "--no_cache"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["random_styles"].startswith("the style bank (4 encoded photos")
    assert any("random styles drawn from the style bank" in n for n in m["notes"])
    assert cli_main(["eval", "--checkpoint", str(vae_run), "--dataroot", str(tiny_data), "--out", str(out),
                     "--no_plots", "--num_visuals", "0", "--no_cache", "--style_prior", "normal"]) == 0
    assert json.loads((out / "metrics.json").read_text())["random_styles"] == "z ~ N(0, I)"


def test_command_refuses_models_without_a_vae_and_bad_counts(tiny_data, tmp_path, capsys):  # noqa: F811
    plain = _make_checkpoint(tmp_path / "plain", tiny_data, use_vae=False, epochs=(1,))
    assert cli_main(["style-bank", "--checkpoint", str(plain)]) == 2
    assert "without --use_vae" in capsys.readouterr().err
    assert cli_main(["style-bank", "--checkpoint", str(plain), "--max_photos", "0"]) == 2
    assert "--max_photos 0" in capsys.readouterr().err
    assert not list(Path(plain).glob("*style_bank*"))
