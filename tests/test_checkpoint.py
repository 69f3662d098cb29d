"""Checkpoints: official folders load by path alone, our files round-trip, mismatches explained."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import spadegan
from spadegan import networks, options
from spadegan.checkpoint import save_network
from spadegan.fileio import atomic_torch_save
from spadegan.data import to_semantics
from spadegan.errors import SpadeganError


def test_load_official_folder_without_flags(parity_dir):
    """A checkpoint folder is enough: its opt.txt/opt.pkl give label_nc, ngf, norm_G..."""
    G = spadegan.load_checkpoint(parity_dir, which="G")
    assert G.opt.label_nc == 12 and G.opt.ngf == 16 and not G.training
    inp = torch.load(parity_dir / "input.pt", weights_only=True)
    exp = torch.load(parity_dir / "expected.pt", weights_only=True)
    with torch.no_grad():
        out = G(to_semantics(inp["label"], inp["instance"], G.opt))
    assert (out - exp["G_eval"]).abs().max() <= 1e-4
    D = spadegan.load_checkpoint(parity_dir / "latest_net_G.pth", which="D")
    assert len(D(torch.cat([to_semantics(inp["label"], None, G.opt), out], 1))) == 2


def test_official_opt_txt_alone_is_enough(parity_dir, tmp_path):
    for f in ("latest_net_G.pth", "opt.txt"):
        shutil.copy(parity_dir / f, tmp_path / f)
    G = spadegan.load_checkpoint(tmp_path / "latest_net_G.pth")
    assert G.opt.semantic_nc == 13


def tiny_opt(tmp_path, *extra):
    return options.parse(["--name", "t", "--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1",
                          "--label_nc", "5", "--ngf", "8", "--ndf", "8", "--crop_size", "64",
                          "--load_size", "64", "--z_dim", "8", *extra], train=True)


def test_own_checkpoints_reload_bit_exactly(tmp_path):
    opt = tiny_opt(tmp_path, "--use_vae")
    options.save_options(opt)
    nets = {"G": networks.define_G(opt), "D": networks.define_D(opt), "E": networks.define_E(opt)}
    for which, net in nets.items():
        save_network(net, which, "latest", opt.expr_dir)
    for which, net in nets.items():
        back = spadegan.load_checkpoint(opt.expr_dir, which=which)
        assert back.opt.use_vae and back.opt.label_nc == 5
        for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
            assert k == k2 and torch.equal(a, b), k
    # the file is a plain state_dict, as the official code saves and loads it
    sd = torch.load(opt.expr_dir / "latest_net_G.pth", weights_only=True)
    assert isinstance(sd, dict) and "fc.weight" in sd


@pytest.mark.parametrize("flags,needle", [
    (["--label_nc", "7"], "checkpoint was trained with semantic_nc=7, options give 9"),
    (["--ngf", "16"], "checkpoint has ngf=8, options give --ngf 16"),
    (["--use_vae"], "trained without --use_vae"),
    (["--norm_G", "spectralspadeinstance3x3"], "SPADE uses batch norm"),
    (["--norm_G", "spectralspadesyncbatch5x5"], "3x3 SPADE kernels"),
    (["--netG", "pix2pixhd"], "--netG spade generator"),
])
def test_mismatch_names_the_option(tmp_path, flags, needle):
    opt = tiny_opt(tmp_path)
    save_network(networks.define_G(opt), "G", "latest", tmp_path / "ck")
    wrong = options.parse(["--gpu_ids", "-1", "--label_nc", "5", "--ngf", "8", "--crop_size", "64",
                           "--z_dim", "8", "--load_size", "64", *flags], train=False)
    with pytest.raises(SpadeganError) as e:
        spadegan.load_checkpoint(tmp_path / "ck", opt=wrong)
    assert needle in str(e.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SpadeganError, match="does not exist"):
        spadegan.load_checkpoint(tmp_path / "nope")
    (tmp_path / "latest_net_G.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SpadeganError, match="cannot read checkpoint"):
        spadegan.load_checkpoint(tmp_path, opt=tiny_opt(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpadeganError, match="no latest_net_G.pth"):
        spadegan.load_checkpoint(empty)


def test_atomic_save_keeps_old_file_on_crash(tmp_path):
    path = tmp_path / "x.pth"
    atomic_torch_save({"a": torch.ones(2)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("crash mid-save")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": torch.zeros(2), "b": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]  # no temp files left behind


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_atomic_writes_get_the_permissions_of_an_ordinary_new_file(tmp_path):
    from spadegan.fileio import atomic_write_bytes, save_file_set
    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "b.pth")
        save_file_set([(tmp_path / "c.pth", {"x": torch.zeros(1)})])
    finally:
        os.umask(mask)
    for name in ("a.json", "b.pth", "c.pth"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # mkstemp alone gives 0o600


def test_key_differences_names_each_kind_of_difference_in_the_networks_order():
    from spadegan.fileio import key_differences

    own = {"a": torch.zeros(2), "b": torch.zeros(3, 3), "c": torch.zeros(1), "d": torch.zeros(4)}
    given = {"d": torch.zeros(5), "b": torch.zeros(3, 1), "a": torch.zeros(2), "x": torch.zeros(1), "c": "text"}
    diff = key_differences(own, given)
    assert diff.missing == [] and diff.unexpected == ["x"] and diff.not_tensors == ["c"]
    assert diff.shapes == [("b", (3, 1), (3, 3)), ("d", (5,), (4,))]
    assert diff and not key_differences(own, dict(own))
    assert key_differences(own, {k: v for k, v in own.items() if k != "c"}).missing == ["c"]


def test_a_value_that_is_not_a_tensor_is_named_not_a_stack_trace(tmp_path):
    from spadegan.checkpoint import load_network_weights

    opt = tiny_opt(tmp_path)
    sd = networks.define_G(opt).state_dict()
    sd[next(iter(sd))] = 3  # a plain number where a tensor belongs
    path = tmp_path / "latest_net_G.pth"
    torch.save(sd, path)
    with pytest.raises(SpadeganError, match="values that are not tensors"):
        load_network_weights(networks.define_G(opt), path, opt, "G")
