"""`spadegan export`: ONNX / TorchScript files that reproduce the network (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spadegan.cli import main as cli_main
from spadegan.engine.export import example_inputs, export
from spadegan.engine.export import main as export_main
from spadegan.errors import SpadeganError
from test_synthesize import make_checkpoint


def test_onnx_export_of_official_checkpoint_matches(parity_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "g.onnx"
    rc = cli_main(["export", "--checkpoint", str(parity_dir), "--format", "onnx", "--out", str(out)])
    assert rc == 0 and out.is_file()
    msg = capsys.readouterr().out
    assert "onnxruntime output vs the faithful network: max abs error" in msg
    # run the file ourselves on the fixture's own input
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["label"]
    inp = torch.load(parity_dir / "input.pt")
    expected = torch.load(parity_dir / "expected.pt")["G_eval"]
    got = sess.run(None, {"label": inp["label"][:1, 0].numpy()})[0]
    assert np.abs(got - expected[:1].numpy()).max() <= 1e-4


def test_torchscript_export_matches(parity_dir, tmp_path):
    res = export(parity_dir, "torchscript", tmp_path / "g.pt", batch=2)
    assert res["max_abs_err"] <= 1e-4
    m = torch.jit.load(str(tmp_path / "g.pt"))
    inp = torch.load(parity_dir / "input.pt")
    expected = torch.load(parity_dir / "expected.pt")["G_eval"]
    with torch.no_grad():
        assert float((m(inp["label"][:, 0]) - expected).abs().max()) <= 1e-4


def test_onnx_export_with_instance_and_vae_inputs(tmp_path):
    pytest.importorskip("onnxruntime")
    ck = make_checkpoint(tmp_path / "ck", "--label_nc", "6", "--use_vae", "--dataset_mode", "coco",
                         "--dataroot", "x")
    res = export(ck, "onnx", tmp_path / "vae.onnx")
    assert res["inputs"] == ["label", "instance", "z"] and res["max_abs_err"] <= 1e-4


def test_onnx_export_with_winograd_and_gemm_convolutions(tmp_path):
    pytest.importorskip("onnxruntime")
    from spadegan.engine import SynthesisEngine
    from spadegan import load_checkpoint
    ck = make_checkpoint(tmp_path / "ck", "--label_nc", "5", "--no_instance", "--ngf", "16", "--crop_size", "128",
                         "--norm_G", "spectralspadeinstance3x3",  # normalised: a meaningful comparison
                         "--dataset_mode", "coco", "--dataroot", "x")
    convs = [b.conv_0 for b in SynthesisEngine.from_generator(load_checkpoint(ck)).blocks]
    assert any(c.winograd for c in convs) and any(c.gemm for c in convs)
    res = export(ck, "onnx", tmp_path / "w.onnx")
    assert res["max_abs_err"] <= 1e-4


def test_export_size_and_errors(parity_dir, tmp_path):
    res = export(parity_dir, "torchscript", tmp_path / "wide.pt", size=128)
    assert res["size"] == [128, 128] and res["max_abs_err"] <= 1e-4
    with pytest.raises(SpadeganError, match="multiple of 32"):
        export(parity_dir, "torchscript", tmp_path / "x.pt", size=100)
    with pytest.raises(SpadeganError, match="onnx, torchscript or safetensors"):
        export(parity_dir, "tflite", tmp_path / "x")


def test_example_inputs_are_blocky_and_in_range(parity_dir):
    from spadegan import load_checkpoint
    from spadegan.engine import SynthesisEngine

    e = SynthesisEngine.from_generator(load_checkpoint(parity_dir))
    names, inputs = example_inputs(e, (64, 64), 3)
    assert names == ["label"] and inputs[0].shape == (3, 64, 64)
    assert inputs[0].min() >= 0 and inputs[0].max() < e.label_channels


# ---- --format safetensors ------------------------------------------------------------------------
def test_safetensors_export_round_trip_gives_identical_outputs(tmp_path, capsys):
    from spadegan import Synthesizer, load_checkpoint
    from spadegan.data import to_semantics
    ck = make_checkpoint(tmp_path / "ck", "--label_nc", "6", "--use_vae", "--dataset_mode", "coco",
                         "--dataroot", "x", with_E=True)
    out = tmp_path / "st"
    assert cli_main(["export", "--checkpoint", str(ck), "--format", "safetensors", "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "the G and E weights, the options as metadata; read back identical" in msg
    assert sorted(p.name for p in out.iterdir()) == ["latest_net_E.safetensors", "latest_net_G.safetensors"]
    G0, E0 = load_checkpoint(ck), load_checkpoint(ck, "E")
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 7, (2, 1, 64, 64), generator=g)
    inst = torch.randint(0, 3, (2, 1, 64, 64), generator=g).float()
    photo = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    z = torch.randn(2, G0.opt.z_dim, generator=g)
    sem = to_semantics(label, inst, G0.opt)
    with torch.no_grad():
        want_img, want_style = G0(sem, z), E0(photo)
        # the folder (no opt.txt / opt.json there: the options come from the metadata) and the file
        for G in (load_checkpoint(out), load_checkpoint(out / "latest_net_G.safetensors")):
            assert G.opt.to_dict() == G0.opt.to_dict()
            assert torch.equal(G(sem, z), want_img)
        E = load_checkpoint(out / "latest_net_G.safetensors", "E")
        assert all(torch.equal(a, b) for a, b in zip(E(photo), want_style))
    syn = Synthesizer.from_checkpoint(out, device="cpu", precision="fp32", use_engine=False)
    assert syn.use_vae and syn.label_nc == 6 and syn.encoder() is not None


def test_safetensors_options_come_from_the_metadata_only_without_an_options_file(parity_dir, tmp_path):
    from spadegan import load_checkpoint
    from spadegan.checkpoint import OPTIONS_METADATA_KEY, checkpoint_options
    from spadegan.fileio import read_safetensors_metadata
    f = tmp_path / "g" / "official_net_G.safetensors"
    res = export(parity_dir, "safetensors", f, which_epoch="latest")
    assert res["files"] == [str(f)] and res["nets"] == ["G"]
    meta = read_safetensors_metadata(f)
    assert meta["spadegan_network"] == "G" and '"label_nc": 12' in meta[OPTIONS_METADATA_KEY]
    assert load_checkpoint(f).opt.label_nc == 12 == checkpoint_options(f).label_nc
    assert checkpoint_options(f.parent, which_epoch="official").label_nc == 12
    # an options file beside the weights still comes first, as for .pth files
    (f.parent / "opt.txt").write_text((parity_dir / "opt.txt").read_text().replace("label_nc: 12", "label_nc: 5"))
    assert checkpoint_options(f).label_nc == 5


def test_safetensors_export_errors_and_bad_metadata(tmp_path):
    from safetensors.torch import save_file

    from spadegan import load_checkpoint
    ck = make_checkpoint(tmp_path / "ck", "--label_nc", "4", "--use_vae", "--no_instance", "--dataset_mode", "coco",
                         "--dataroot", "x", with_E=True)
    with pytest.raises(SpadeganError, match=r"--out .*model.safetensors: this run has a style encoder"):
        export(ck, "safetensors", tmp_path / "model.safetensors")
    res = export(ck, "safetensors", tmp_path / "named" / "7_net_G.safetensors")
    assert res["files"][1].endswith("7_net_E.safetensors")
    with pytest.raises(SpadeganError, match="--size applies to onnx and torchscript"):
        export_main(["--checkpoint", str(ck), "--format", "safetensors", "--out", str(tmp_path / "s"),
                          "--size", "128"])
    # metadata that is not an options object, a header over the bound, no options at all
    bad = tmp_path / "bad"
    bad.mkdir()
    t = {"w": torch.zeros(1)}
    save_file(t, str(bad / "latest_net_G.safetensors"), metadata={"spadegan_options": "[1, 2]"})
    with pytest.raises(SpadeganError, match=r"cannot read the options in .*latest_net_G.safetensors.*JSON list"):
        load_checkpoint(bad)
    huge = bad / "huge_net_G.safetensors"
    huge.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(SpadeganError, match=r"cannot read checkpoint .*huge_net_G.safetensors: a header of"):
        load_checkpoint(huge)
    save_file(t, str(bad / "latest_net_G.safetensors"))
    with pytest.raises(SpadeganError, match="no options file .* pass the training flags"):
        load_checkpoint(bad)
