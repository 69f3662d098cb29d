"""`spadegan export` of official OASIS runs: ONNX / TorchScript graphs reading (semantics, z), and
the generator's weights as .safetensors loading back through `load_checkpoint` / `Synthesizer`.

The run is a tiny random ADE20K generator (channels_G 8, crop 64, random BN statistics) written
in the official layout (`<run>/models/best_{G,EMA}.pth` + opt.pkl); --crop_size 64 is passed as
the official test flag, since the ADE20K dataset class would set 256.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spadegan import Synthesizer, load_checkpoint
from spadegan.engine.export import export
from spadegan.engine.export import main as export_main
from spadegan.errors import SpadeganError
from spadegan.fileio import write_safetensors
from spadegan.networks.oasis import OASISGenerator, OASISOptions
from spadegan.oasis_checkpoint import (OASIS_OPTIONS_KEY, is_oasis_run, load_oasis_run, oasis_label_channels,
                                       oasis_options_metadata, oasis_semantics)

pytestmark = [pytest.mark.filterwarnings("ignore::spadegan.errors.SpadeganWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")]

TOL = 1e-4
FLAGS = {"crop_size": 64}
OPT = OASISOptions(semantic_nc=151, crop_size=64, channels_G=8, dataset_mode="ade20k")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A random OASIS generator saved as the official training saves it (G and EMA differ)."""
    root = tmp_path_factory.mktemp("oasis_export") / "oasis_tiny"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(3)
    for name in ("G", "EMA"):
        G = OASISGenerator(OPT)
        for key, value in G.state_dict().items():
            if key.endswith("running_mean"):
                value.normal_(0, 0.3)
            elif key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
        torch.save(G.state_dict(), root / "models" / f"best_{name}.pth")
    namespace = argparse.Namespace(dataset_mode=OPT.dataset_mode, channels_G=OPT.channels_G)
    (root / "opt.pkl").write_bytes(pickle.dumps(namespace))
    return root


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """ADE20K ids (dontcare 255 included) -> OASIS one-hot semantics, and a z per image."""
    ids = np.full((batch, 64, 64), 3, np.int64)
    ids[:, :, 32:] = 150
    ids[:, :16, :16] = 255
    ids[1, 40:, :20] = 7
    sem = oasis_semantics(oasis_label_channels(ids, "ade20k"), 151)
    return sem, torch.randn(batch, 64, generator=torch.Generator().manual_seed(5))


def reference(run: Path, sem: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    G = load_oasis_run(run, "best", **FLAGS)
    assert G.oasis_run.network == "EMA" and G.oasis_opt.output_size == (64, 64)
    with torch.no_grad():
        return G(sem, z)


def test_onnx_graph_reads_semantics_and_z(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "oasis.onnx"
    rc = export_main(["--checkpoint", str(run), "--which_epoch", "best", "--format", "onnx", "--out", str(out),
                      "--batch_size", "2", "--crop_size", "64"])
    assert rc == 0
    msg = capsys.readouterr().out
    assert "official OASIS generator" in msg and "best_EMA.pth" in msg and "max abs error" in msg
    assert "semantics: float32 (2, 151, 64, 64) one-hot" in msg and "255 (dontcare) -> channel 0" in msg
    assert "z: float32 (2, 64)" in msg and "draws no noise" in msg
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["semantics", "z"]
    assert [tuple(i.shape) for i in sess.get_inputs()] == [(2, 151, 64, 64), (2, 64)]
    meta = sess.get_modelmeta().custom_metadata_map
    assert set(json.loads(meta["spadegan_inputs"])) == {"semantics", "z", "image"}
    assert json.loads(meta[OASIS_OPTIONS_KEY])["channels_G"] == 8 and meta["oasis_network"] == "EMA"
    sem, z = inputs()
    got = torch.from_numpy(sess.run(None, {"semantics": sem.numpy(), "z": z.numpy()})[0])
    want = reference(run, sem, z)
    assert float((got - want).abs().max()) <= TOL
    # z is an input, not a draw inside the graph: the same z gives the same image, another z another one
    again = torch.from_numpy(sess.run(None, {"semantics": sem.numpy(), "z": z.numpy()})[0])
    other = torch.from_numpy(sess.run(None, {"semantics": sem.numpy(), "z": (z + 1).numpy()})[0])
    assert torch.equal(got, again) and float((other - got).abs().max()) > 1e-2


def test_torchscript_graph_matches_and_documents_inputs(run, tmp_path):
    out = tmp_path / "oasis.pt"
    res = export(run / "models" / "best_EMA.pth", "torchscript", out, batch=2, oasis_flags=FLAGS)
    assert res["inputs"] == ["semantics", "z"] and res["max_abs_err"] <= TOL and res["size"] == [64, 64]
    extra = {"spadegan_export.json": ""}
    m = torch.jit.load(str(out), _extra_files=extra)
    doc = json.loads(extra["spadegan_export.json"])
    assert "channel 0" in json.loads(doc["spadegan_inputs"])["semantics"]
    sem, z = inputs()
    with torch.no_grad():
        got = m(sem, z)
    assert float((got - reference(run, sem, z)).abs().max()) <= TOL


def test_safetensors_round_trip_is_identical(run, tmp_path, capsys):
    assert export_main(["--checkpoint", str(run), "--format", "safetensors", "--out", str(tmp_path),
                        "--crop_size", "64"]) == 0
    assert "read back identical" in capsys.readouterr().out
    path = tmp_path / "best_EMA.safetensors"
    assert is_oasis_run(path)
    original = load_oasis_run(run, **FLAGS)
    back = load_checkpoint(path)
    assert isinstance(back, OASISGenerator) and back.oasis_opt == original.oasis_opt
    assert back.oasis_run.network == "EMA" and back.oasis_run.which_epoch == "best"
    assert list(back.state_dict()) == list(original.state_dict())  # the official names, in order
    sem, z = inputs()
    with torch.no_grad():
        assert torch.equal(back(sem, z), original(sem, z))
    syn = Synthesizer.from_checkpoint(path, precision="fp32")
    assert (syn.height, syn.width, syn.netG) == (64, 64, "oasis")
    with torch.no_grad():
        assert torch.equal(syn.G(sem, z), original(sem, z))
    assert load_oasis_run(path, crop_size=128).oasis_opt.output_size == (128, 128)  # a flag given wins
    with pytest.raises(SpadeganError, match=r"which_epoch='latest'.*best_EMA\.safetensors.*'best'"):
        load_oasis_run(path, "latest")


def test_bad_input_is_a_clear_error(run, tmp_path):
    with pytest.raises(SpadeganError, match=r"official OASIS run: --size does not apply.*--crop_size"):
        export_main(["--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "a.onnx"),
                     "--size", "128"])
    with pytest.raises(SpadeganError, match=r"best_EMA\.pth does not fit.*channels_G=8, the options give 16"):
        export(run, "torchscript", tmp_path / "b.pt", oasis_flags={**FLAGS, "channels_G": 16})
    with pytest.raises(SpadeganError, match=r"--format must be onnx, torchscript or safetensors, not 'tflite'"):
        export(run, "tflite", tmp_path / "c")
    bad = tmp_path / "bad_EMA.safetensors"
    meta = oasis_options_metadata(OPT, "EMA", "best")
    write_safetensors(bad, {"x": torch.zeros(1)}, {**meta, OASIS_OPTIONS_KEY: "{not json"})
    with pytest.raises(SpadeganError, match=r"cannot read the OASIS options in .*bad_EMA"):
        load_checkpoint(bad)
    fields = json.loads(meta[OASIS_OPTIONS_KEY])
    fields.pop("z_dim")
    write_safetensors(bad, {"x": torch.zeros(1)}, {**meta, OASIS_OPTIONS_KEY: json.dumps(fields)})
    with pytest.raises(SpadeganError, match=r"bad_EMA\.safetensors do not match OASISOptions' fields.*z_dim"):
        load_checkpoint(bad)


def test_oasis_flags_are_refused_for_spadegan_checkpoints(parity_dir, tmp_path):
    with pytest.raises(SpadeganError, match=r"not an official OASIS run, so the OASIS flag\(s\) --crop_size"):
        export_main(["--checkpoint", str(parity_dir), "--format", "onnx", "--out", str(tmp_path / "g.onnx"),
                     "--crop_size", "64"])
