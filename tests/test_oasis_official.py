"""The published OASIS generator and discriminator loaded from official run folders, against
the fixture ../shared/fixtures/oasis_official (outputs of boschresearch/OASIS run unmodified).

The released files are rebuilt from each configuration's spec.json by the README's fill rule
(per-file seeds, then 20 spectral-norm power iterations), saved in the official layout
`<tmp>/checkpoints/<name>/models/best_{G,D,EMA}.pth` and loaded through `load_oasis_run` as
a user would: ADE20K with an opt.pkl as the official training writes it, Cityscapes with the
test flags only.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import fixture_dir
from paper_fixtures import fill_tensor
from spadegan.errors import SpadeganError, UnsafeFileError
from spadegan.networks.oasis import OASISGenerator, OASISOptions
from spadegan.oasis_checkpoint import (build_oasis_discriminator, load_oasis_run, oasis_label_channels,
                                       oasis_semantics, official_d_state_dict, open_oasis_run)

pytestmark = pytest.mark.filterwarnings("ignore::spadegan.errors.SpadeganWarning")

ATOL = 1e-4
#: opt.pkl is written before the official dataset class sets these (config.py has no such flags)
DATASET_CLASS_KEYS = ("label_nc", "semantic_nc", "crop_size", "load_size", "aspect_ratio",
                      "contain_dontcare_label", "cache_filelist_read", "cache_filelist_write")


def sn_power_iterate(state: dict[str, torch.Tensor], iterations: int) -> None:
    """The fixture's step after the fill rule: for every `<p>weight_orig`, `iterations` power
    iterations from the filled u, v, storing the final u, v (README, "Fill rule")."""
    for key in [k for k in state if k.endswith("weight_orig")]:
        p = key[:-len("weight_orig")]
        w = state[key].reshape(state[key].shape[0], -1)
        u, v = state[p + "weight_u"], state[p + "weight_v"]
        for _ in range(iterations):
            v = F.normalize(torch.mv(w.t(), u), dim=0, eps=1e-12)
            u = F.normalize(torch.mv(w, v), dim=0, eps=1e-12)
        state[p + "weight_u"], state[p + "weight_v"] = u, v


def released_state_dicts(spec: dict) -> dict[str, dict[str, torch.Tensor]]:
    """{file name: state_dict} of best_G/D/EMA.pth, each with its own seed, in spec order."""
    files = {}
    for name, entries in spec["files"].items():
        seed = int(spec["file_seeds"][name])
        state = {k: fill_tensor(k, shape, dtype, seed, float(spec["gain"])) for k, shape, dtype in entries}
        sn_power_iterate(state, int(spec["sn_power_iterations"]))
        files[name] = state
    return files


class Released:
    """One fixture configuration written as an official run folder."""

    def __init__(self, fx: Path, root: Path, with_opt_pkl: bool):
        self.fx = fx
        self.spec = json.loads((fx / "spec.json").read_text())
        self.options = json.loads((fx / "options.json").read_text())
        self.states = released_state_dicts(self.spec)
        self.run = root / "checkpoints" / f"oasis_{fx.name}"
        (self.run / "models").mkdir(parents=True)
        for name, state in self.states.items():
            torch.save(state, self.run / "models" / name)
        if with_opt_pkl:  # as config.save_options writes it: the parsed argparse.Namespace
            saved = {k: v for k, v in self.options.items() if k not in DATASET_CLASS_KEYS and k != "flags"}
            (self.run / "opt.pkl").write_bytes(pickle.dumps(argparse.Namespace(**saved)))
        self.flags = {} if with_opt_pkl else dict(dataset_mode=self.options["dataset_mode"],
                                                  channels_G=self.options["channels_G"])
        self.input = torch.load(fx / "input.pt")
        self.expected = torch.load(fx / "expected.pt")


@pytest.fixture(scope="module")
def ade20k(shared, tmp_path_factory) -> Released:
    return Released(fixture_dir(shared, "oasis_official", "ade20k"), tmp_path_factory.mktemp("ade"), True)


@pytest.fixture(scope="module")
def cityscapes(shared, tmp_path_factory) -> Released:
    return Released(fixture_dir(shared, "oasis_official", "cityscapes"), tmp_path_factory.mktemp("city"), False)


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    err = (got - want).abs().max().item()
    assert err <= ATOL, f"{what}: max |diff| {err}"


def check_parity(rel: Released) -> None:
    G = load_oasis_run(rel.run, network="G", **rel.flags)
    EMA = load_oasis_run(rel.run, **rel.flags)  # test.py's network: best_EMA.pth
    D = load_oasis_run(rel.run / "models" / "best_D.pth", **rel.flags)
    assert isinstance(EMA, OASISGenerator) and EMA.oasis_run.weights.name == "best_EMA.pth"
    assert not (G.training or EMA.training or D.training)
    semantics = oasis_semantics(rel.input["label"], G.oasis_opt.semantic_nc)
    z, exp = rel.expected["z"], rel.expected
    with torch.no_grad():
        close(G(semantics, z), exp["G_eval"], "G_eval")
        close(EMA(semantics, z), exp["EMA_eval"], "EMA_eval")
        for which, image in (("real", rel.input["image"]), ("fake", exp["G_eval"])):
            logits = D(image)
            close(logits[:, :, ::8, ::8], exp[f"D_{which}_sub8"], f"D_{which}_sub8")
            close(logits[:, :1], exp[f"D_{which}_ch0"], f"D_{which}_ch0")
            close(logits.mean(1, keepdim=True), exp[f"D_{which}_chmean"], f"D_{which}_chmean")
            close(logits.mean((2, 3)), exp[f"D_{which}_hwmean"], f"D_{which}_hwmean")


def test_ade20k_run_with_opt_pkl_reproduces_official_outputs(ade20k):
    run = open_oasis_run(ade20k.run)
    assert run.options_source == "opt.pkl" and run.network == "EMA"
    assert (run.opt.semantic_nc, run.opt.latent_size, run.opt.output_size) == (151, (8, 8), (256, 256))
    check_parity(ade20k)


@pytest.mark.slow
def test_cityscapes_run_from_test_flags_reproduces_official_outputs(cityscapes):
    run = open_oasis_run(cityscapes.run, **cityscapes.flags)
    assert run.options_source == "the flags given"
    assert (run.opt.semantic_nc, run.opt.latent_size, run.opt.output_size) == (35, (8, 16), (256, 512))
    check_parity(cityscapes)


def test_networks_hold_the_released_keys_in_order(ade20k, cityscapes):
    for rel in (ade20k, cityscapes):
        opt = open_oasis_run(rel.run, **rel.flags).opt
        for name, state in (("best_G.pth", OASISGenerator(opt).state_dict()),
                            ("best_D.pth", official_d_state_dict(build_oasis_discriminator(opt)))):
            want = [(k, list(shape)) for k, shape, _ in rel.spec["files"][name]]
            assert [(k, list(v.shape)) for k, v in state.items()] == want, name


def test_official_generator_size_ade20k():
    """The published ADE20K generator (channels_G 64): 74.3 M parameters (SPADE's: 98.4 M)."""
    G = OASISGenerator(OASISOptions(semantic_nc=151, crop_size=256))
    assert round(G.num_parameters() / 1e6, 1) == 74.3


# ---- label ids -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,name,size,modulo", [("ade20k", "ADE_val_00000001", (256, 256), None),
                                                   ("cityscapes", "ADE_val_00000003", (512, 256), 35)])
def test_label_ids_map_to_the_official_channels(shared, mode, name, size, modulo):
    """The dataset's ids of the fixture's label map, resized as the official loader does,
    become exactly the channels its input.pt holds."""
    fx = fixture_dir(shared, "oasis_official", mode)
    png = shared / "data" / "ade20k_sample" / "annotations" / f"{name}.png"
    if not png.is_file():
        pytest.skip(f"{png} is absent")
    ids = np.asarray(Image.open(png))
    if modulo:
        ids = (ids % modulo).astype(np.uint8)
    ids = np.asarray(Image.fromarray(ids).resize(size, Image.NEAREST))
    want = torch.load(fx / "input.pt")["label"][0, 0].long()
    assert torch.equal(oasis_label_channels(ids, mode), want)


def test_label_id_rules_and_bad_ids():
    ids = torch.tensor([0, 1, 150, 255])
    assert oasis_label_channels(ids, "ade20k").tolist() == [0, 1, 150, 0]
    assert oasis_label_channels(torch.tensor([0, 181, 255]), "coco").tolist() == [1, 182, 0]
    assert oasis_label_channels(np.array([[0, 33, 34]], np.uint8), "cityscapes").tolist() == [[0, 33, 34]]
    for mode, bad in (("ade20k", 151), ("coco", 182), ("cityscapes", 35)):
        with pytest.raises(SpadeganError, match=f"\\[{bad}\\].*{mode}"):
            oasis_label_channels(torch.tensor([0, bad]), mode)
    with pytest.raises(SpadeganError, match="not an official OASIS dataset"):
        oasis_label_channels(ids, "facades")
    one_hot = oasis_semantics(torch.tensor([[[0, 2]]]), 3)
    assert one_hot.shape == (1, 3, 1, 2) and one_hot[0, :, 0, 1].tolist() == [0, 0, 1]


# ---- what a user can get wrong ---------------------------------------------------------------------
def copy_run(rel: Released, tmp_path: Path, files: dict[str, dict], opt_pkl: bool = True) -> Path:
    run = tmp_path / "checkpoints" / "broken"
    (run / "models").mkdir(parents=True)
    for name, state in files.items():
        torch.save(state, run / "models" / name)
    if opt_pkl:
        shutil.copy(rel.run / "opt.pkl", run / "opt.pkl")
    return run


def test_missing_key_is_named(ade20k, tmp_path):
    state = dict(ade20k.states["best_EMA.pth"])
    del state["body.3.norm_s.mlp_beta.bias"]
    run = copy_run(ade20k, tmp_path, {"best_EMA.pth": state})
    with pytest.raises(SpadeganError, match=r"best_EMA\.pth.*missing keys \(1\): body\.3\.norm_s\.mlp_beta\.bias"):
        load_oasis_run(run)


def test_wrong_shape_and_wrong_options_are_explained(ade20k, tmp_path):
    state = dict(ade20k.states["best_G.pth"])
    state["body.0.norm_0.mlp_shared.0.weight"] = torch.zeros(128, 215, 5, 5)
    run = copy_run(ade20k, tmp_path, {"best_G.pth": state})
    with pytest.raises(SpadeganError, match=r"spade_ks=5.*shape mismatches \(1\): body\.0\.norm_0\.mlp_shared"):
        load_oasis_run(run, network="G")
    with pytest.raises(SpadeganError, match=r"channels_G=16, the options give 64"):
        load_oasis_run(ade20k.run, network="G", channels_G=64)
    with pytest.raises(SpadeganError, match=r"fc reads 215 channels.*151 \+ 3D noise 0"):
        load_oasis_run(ade20k.run, network="G", no_3dnoise=True)


def test_discriminator_keys_are_checked(ade20k, tmp_path):
    state = dict(ade20k.states["best_D.pth"])
    state["body_down.6.conv1.1.bias"] = torch.zeros(3)
    run = copy_run(ade20k, tmp_path, {"best_D.pth": state})
    with pytest.raises(SpadeganError, match=r"unexpected keys \(1\): body_down\.6\.conv1\.1\.bias"):
        load_oasis_run(run, network="D")
    wrong = copy_run(ade20k, tmp_path / "wrong", {"best_D.pth": ade20k.states["best_EMA.pth"]})
    with pytest.raises(SpadeganError, match="it is a generator file"):
        load_oasis_run(wrong, network="D")
    wrong = copy_run(ade20k, tmp_path / "wrong2", {"best_G.pth": ade20k.states["best_D.pth"]})
    with pytest.raises(SpadeganError, match="it is a discriminator file"):
        load_oasis_run(wrong, network="G")


def test_missing_files_and_options_are_named(ade20k, tmp_path):
    run = copy_run(ade20k, tmp_path, {"best_G.pth": ade20k.states["best_G.pth"]}, opt_pkl=False)
    with pytest.raises(SpadeganError, match=r"no opt\.pkl or opt\.txt: pass dataset_mode"):
        load_oasis_run(run)
    with pytest.raises(SpadeganError, match=r"no best_EMA\.pth in .*found: best_G\.pth"):
        load_oasis_run(run, dataset_mode="ade20k", channels_G=16)
    with pytest.raises(SpadeganError, match=r"no latest_G\.pth"):
        load_oasis_run(run, "latest", "G", dataset_mode="ade20k", channels_G=16)
    with pytest.raises(SpadeganError, match="not an official OASIS run folder"):
        load_oasis_run(tmp_path / "checkpoints", dataset_mode="ade20k")
    with pytest.raises(SpadeganError, match="network='D'.*'G'"):
        load_oasis_run(run / "models" / "best_G.pth", network="D", dataset_mode="ade20k")


def test_opt_pkl_that_runs_code_is_refused(ade20k, tmp_path):
    run = copy_run(ade20k, tmp_path, {"best_EMA.pth": ade20k.states["best_EMA.pth"]}, opt_pkl=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (run / "opt.pkl").write_bytes(pickle.dumps(argparse.Namespace(dataset_mode="ade20k", x=Evil())))
    with pytest.raises(UnsafeFileError, match="builtins.print"):
        load_oasis_run(run)


def test_opt_txt_and_flags_given(ade20k, tmp_path):
    """Without opt.pkl the official opt.txt is read; flags given override saved values."""
    run = copy_run(ade20k, tmp_path, {"best_EMA.pth": ade20k.states["best_EMA.pth"]}, opt_pkl=False)
    lines = ["{:>25}: {:<30}{}".format(k, str(v), "\t[default: 64]" if k == "channels_G" else "")
             for k, v in sorted(ade20k.options.items()) if k not in DATASET_CLASS_KEYS and k != "flags"]
    (run / "opt.txt").write_text("\n".join(lines) + "\n")
    opened = open_oasis_run(run)
    assert opened.options_source == "opt.txt"
    assert (opened.opt.channels_G, opened.opt.dataset_mode, opened.opt.no_3dnoise) == (16, "ade20k", False)
    assert open_oasis_run(run, param_free_norm="batch").opt.param_free_norm == "batch"
    with pytest.raises(SpadeganError, match=r"num_res_blocks=5"):
        open_oasis_run(run, num_res_blocks=5)
