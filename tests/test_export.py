"""`spadegan export`: ONNX / TorchScript files that reproduce the network (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spadegan.cli import main as cli_main
from spadegan.engine.export import example_inputs, export
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
    with pytest.raises(SpadeganError, match="onnx or torchscript"):
        export(parity_dir, "tflite", tmp_path / "x")


def test_example_inputs_are_blocky_and_in_range(parity_dir):
    from spadegan import load_checkpoint
    from spadegan.engine import SynthesisEngine

    e = SynthesisEngine.from_generator(load_checkpoint(parity_dir))
    names, inputs = example_inputs(e, (64, 64), 3)
    assert names == ["label"] and inputs[0].shape == (3, 64, 64)
    assert inputs[0].min() >= 0 and inputs[0].max() < e.label_channels
