"""Official OASIS runs used as users use them: `Synthesizer.from_checkpoint`, `load_checkpoint`,
`spadegan synthesize` / `eval` / `paint` (HTTP API), against ../shared/fixtures/oasis_official.

The ADE20K configuration is written in the official layout (`checkpoints/<name>/models/
best_{G,D,EMA}.pth` + opt.pkl, rebuilt by the fixture's fill rule: `Released` of
test_oasis_official.py). Forwards at the trained 256 x 256 are few (seconds each on CPU);
the noise and app tests run a 64 x 64 view of the same weights.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fixture_dir
from test_oasis_official import Released
from spadegan import Synthesizer, load_checkpoint
from spadegan.errors import SpadeganError
from spadegan.networks.oasis import OASISGenerator
from spadegan.synthesize import OASISSynthesizer
from spadegan.synthesize import main as synth_main

pytestmark = pytest.mark.filterwarnings("ignore::spadegan.errors.SpadeganWarning")

ATOL = 1e-4
SAMPLE = "ADE_val_00000001"


@pytest.fixture(scope="module")
def ade20k(shared, tmp_path_factory) -> Released:
    return Released(fixture_dir(shared, "oasis_official", "ade20k"), tmp_path_factory.mktemp("oasis_runs"), True)


@pytest.fixture(scope="module")
def syn(ade20k) -> OASISSynthesizer:
    return Synthesizer.from_checkpoint(ade20k.run, which_epoch="best", precision="fp32")


def sample_label(shared: Path) -> np.ndarray:
    png = shared / "data" / "ade20k_sample" / "annotations" / f"{SAMPLE}.png"
    if not png.is_file():
        pytest.skip(f"{png} is absent")
    return np.asarray(Image.open(png))


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    err = (got - want).abs().max().item()
    assert err <= ATOL, f"{what}: max |diff| {err}"


# ---- the Python API -----------------------------------------------------------------------------
def test_synthesizer_reproduces_the_official_ema_image(syn, ade20k, shared):
    """The label PNG in ADE20K's own ids (512 x 683) -> label_ids -> generate with the fixture's
    z: the official test.py image (the loader's PIL NEAREST resize included)."""
    assert isinstance(syn, OASISSynthesizer) and syn.G.oasis_run.weights.name == "best_EMA.pth"
    assert (syn.height, syn.width, syn.label_channels) == (256, 256, 151) and syn.engine is None
    ids = syn.label_ids(sample_label(shared))
    assert ids.shape == (512, 683)
    image = syn.generate(torch.from_numpy(ids)[None], None, ade20k.expected["z"], size=(256, 256))
    close(image, ade20k.expected["EMA_eval"], "EMA_eval")
    # seed s draws torch.randn(z_dim, generator=manual_seed(s)): the fixture's z_seed 100
    assert torch.equal(syn.noise([100]), ade20k.expected["z"])


def test_label_ids_keep_the_datasets_ids(syn):
    """ADE20K's 150 is a class (channel 150) and 255 stays 255 (dontcare, channel 0)."""
    assert syn.label_ids(np.array([[0, 150, 255]])).tolist() == [[0, 150, 255]]
    with pytest.raises(SpadeganError, match=r"151 \(1 px\).*0\.\.150 and 255"):
        syn.label_ids(np.array([[0, 151]]))


def test_load_checkpoint_d_reproduces_the_official_logits(ade20k):
    D = load_checkpoint(ade20k.run, "D", which_epoch="best")
    with torch.no_grad():
        logits = D(ade20k.input["image"])
    assert logits.shape == (1, 152, 256, 256)
    exp = ade20k.expected
    close(logits[:, :, ::8, ::8], exp["D_real_sub8"], "D_real_sub8")
    close(logits[:, :1], exp["D_real_ch0"], "D_real_ch0")
    close(logits.mean(1, keepdim=True), exp["D_real_chmean"], "D_real_chmean")
    close(logits.mean((2, 3)), exp["D_real_hwmean"], "D_real_hwmean")
    G = load_checkpoint(ade20k.run, "G", which_epoch="best", ema=False)
    assert isinstance(G, OASISGenerator) and G.oasis_run.weights.name == "best_G.pth"
    assert load_checkpoint(ade20k.run / "models" / "best_EMA.pth").oasis_run.network == "EMA"


def two_class_map(size: int = 64) -> np.ndarray:
    ids = np.full((size, size), 3, np.int64)
    ids[:, size // 2:] = 7
    ids[: size // 4, : size // 4] = 255  # dontcare: channel 0
    return ids


def test_per_class_noise_rerolls_one_class(syn):
    """region_seeds give class 7 a vector of its own: the noise map changes on its pixels only;
    another size (64 x 64) runs a view sharing the trained weights."""
    ids = two_class_map()
    table = syn.noise([1], [{7: 5}])
    assert table.shape == (1, 151, 64)
    base = syn.noise([1])[0]
    changed = [c for c in range(151) if not torch.equal(table[0, c], base)]
    assert changed == [7]
    channels = torch.from_numpy(ids)[None].clone()
    channels[channels == 255] = 0
    zmap = syn.noise_map(table, channels)
    assert zmap.shape == (1, 64, 64, 64)
    differs = (zmap[0] != base[:, None, None]).any(0)
    assert torch.equal(differs, torch.from_numpy(ids == 7))
    view = syn.generator_at((64, 64))
    assert view is not syn.G and view.fc.weight is syn.G.fc.weight and syn.G.oasis_opt.output_size == (256, 256)
    lab = torch.from_numpy(ids)[None]
    with_table = syn.generate(lab, None, table, size=(64, 64))
    assert torch.equal(with_table, syn.generate(lab, None, zmap, size=(64, 64)))
    plain = syn.generate(lab, None, base[None], size=(64, 64))
    assert not torch.equal(with_table, plain)
    with pytest.raises(SpadeganError, match=r"region seed for class 151"):
        syn.noise([1], [{151: 2}])
    with pytest.raises(SpadeganError, match="multiple of 32"):
        syn.generator_at((48, 64))


# ---- the paint app's HTTP API ---------------------------------------------------------------------
def test_paint_api_rerolls_one_class(syn):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from spadegan.app.adapter import AppBackend
    from spadegan.app.server import create_app

    backend = AppBackend(syn)
    backend.width = backend.height = 64  # a 64 x 64 view of the model: fast enough for a test
    ids = two_class_map()
    ids[ids == 255] = 0
    buf = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8), mode="L").save(buf, format="PNG")
    label = ("label.png", buf.getvalue(), "image/png")
    with TestClient(create_app(backend, batch_wait_ms=0)) as client:
        info = client.get("/api/info").json()
        assert info["region_seeds"] is True and info["label_nc"] == 151
        plain = client.post("/api/synthesize", files={"label": label}, data={"seed": "1"})
        rerolled = client.post("/api/synthesize", files={"label": label},
                               data={"seed": "1", "region_seeds": json.dumps({"7": 5})})
        bad = client.post("/api/synthesize", files={"label": label}, data={"region_seeds": '{"151": 1}'})
    assert plain.status_code == rerolled.status_code == 200, (plain.text, rerolled.text)
    assert rerolled.headers["X-Region-Seeds"] == '{"7":5}' and "X-Region-Seeds" not in plain.headers
    got = np.asarray(Image.open(io.BytesIO(rerolled.content)))
    want = syn.synthesize_decoded([ids], seeds=[1], size=(64, 64), output="numpy", region_seeds=[{7: 5}])[0]
    assert np.array_equal(got, want)
    assert not np.array_equal(got, np.asarray(Image.open(io.BytesIO(plain.content))))
    assert bad.status_code == 400 and "0..150" in bad.json()["error"]


def test_paint_api_refuses_region_seeds_without_3d_noise():
    """A backend without supports_region_seeds keeps its 3-argument call and refuses the field."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from spadegan.app.server import create_app
    from test_app import FakeBackend, png_bytes

    backend = FakeBackend()
    label = ("l.png", png_bytes(np.zeros((48, 64), np.uint8)), "image/png")
    with TestClient(create_app(backend, batch_wait_ms=0)) as client:
        assert client.get("/api/info").json()["region_seeds"] is False
        ok = client.post("/api/synthesize", files={"label": label}, data={"seed": "3"})
        refused = client.post("/api/synthesize", files={"label": label}, data={"region_seeds": '{"1": 2}'})
        malformed = client.post("/api/synthesize", files={"label": label}, data={"region_seeds": "[1]"})
    assert ok.status_code == 200 and backend.seeds == [3]
    assert refused.status_code == 400 and "region_seeds" in refused.json()["error"]
    assert malformed.status_code == 400 and "JSON object" in malformed.json()["error"]


# ---- command lines ------------------------------------------------------------------------------
def test_cli_synthesize_writes_the_official_image(ade20k, shared, tmp_path):
    """`spadegan synthesize --checkpoint <run> --which_epoch best --seed 100`: the official EMA
    image (uint8); an official test flag is accepted, a SPADE flag is named as unknown."""
    png = shared / "data" / "ade20k_sample" / "annotations" / f"{SAMPLE}.png"
    sample_label(shared)
    rc = synth_main(["--checkpoint", str(ade20k.run), "--which_epoch", "best", "--label", str(png),
                     "--out", str(tmp_path / "out"), "--seed", "100", "--precision", "fp32", "--channels_G", "16",
                     "--gpu_ids", "-1"])
    assert rc == 0
    got = np.asarray(Image.open(tmp_path / "out" / f"{SAMPLE}.png")).astype(int)
    want = ((ade20k.expected["EMA_eval"][0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert got.shape == (256, 256, 3) and np.abs(got - want).max() <= 1.0
    with pytest.raises(SpadeganError, match=r"official OASIS run.*--ngf"):
        synth_main(["--checkpoint", str(ade20k.run), "--which_epoch", "best", "--label", str(png),
                    "--out", str(tmp_path / "o2"), "--ngf", "16"])


def test_cli_eval_runs_on_the_ade20k_sample(ade20k, shared, tmp_path):
    from spadegan.evaluation import cli as ecli

    root = shared / "data" / "ade20k_sample"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    rc = ecli.main(["--checkpoint", str(ade20k.run), "--which_epoch", "best", "--dataset_mode", "ade20k",
                    "--dataroot", str(root), "--phase", "val", "--how_many", "1", "--out", str(tmp_path / "eval"),
                    "--no_cache", "--no_plots", "--batch_size", "1"])
    assert rc == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert Path(metrics["weights"]).name == "best_EMA.pth" and metrics["dataset"]["size"] == [256, 256]
    assert (tmp_path / "eval" / "samples.png").is_file()


def test_missing_files_and_unsupported_commands_are_named(ade20k, tmp_path):
    run = tmp_path / "checkpoints" / "partial"
    (run / "models").mkdir(parents=True)
    shutil.copy(ade20k.run / "opt.pkl", run / "opt.pkl")
    with pytest.raises(SpadeganError, match=r"no best_EMA\.pth in .*models; it holds no \.pth files"):
        Synthesizer.from_checkpoint(run, which_epoch="best")
    shutil.copy(ade20k.run / "models" / "best_G.pth", run / "models" / "best_G.pth")
    with pytest.raises(SpadeganError, match=r"no best_D\.pth in .*found: best_G\.pth"):
        load_checkpoint(run, "D", which_epoch="best")
    with pytest.raises(SpadeganError, match="OASIS has no encoder"):
        load_checkpoint(run, "E", which_epoch="best")
    with pytest.raises(SpadeganError, match=r"no latest_EMA\.pth"):  # the default which_epoch
        Synthesizer.from_checkpoint(run)
    from spadegan.engine.export import export
    with pytest.raises(SpadeganError, match=r"no best_EMA\.pth in .*found: best_G\.pth"):  # export's default: best
        export(run, "onnx", tmp_path / "g.onnx")


def test_cli_test_runs_the_official_test_split(ade20k, syn, shared, tmp_path):
    """`spadegan test --name <OASIS run> --which_epoch best`: the split read as the official
    loader reads it (the photo as input.pt holds it) and the EMA image of the official label
    with the noise --seed 0 draws."""
    from spadegan.train.cli import test_main
    from spadegan.train.state import mix_seed

    root = shared / "data" / "ade20k_sample"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    rc = test_main(["--name", ade20k.run.name, "--checkpoints_dir", str(ade20k.run.parent), "--which_epoch", "best",
                    "--dataset_mode", "ade20k", "--dataroot", str(root), "--how_many", "1", "--gpu_ids", "-1",
                    "--results_dir", str(tmp_path / "results"), "--nThreads", "0", "--channels_G", "16"])
    assert rc == 0
    images = tmp_path / "results" / ade20k.run.name / "test_best" / "images"
    real = np.asarray(Image.open(images / "real_image" / f"{SAMPLE}.png")).astype(int)
    want = ((ade20k.input["image"][0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert np.abs(real - want).max() <= 1.0
    fake = np.asarray(Image.open(images / "synthesized_image" / f"{SAMPLE}.png")).astype(int)
    z = torch.randn(1, 64, generator=torch.Generator().manual_seed(mix_seed(0, 7)))
    want = ((syn.generate(ade20k.input["label"][:, 0].long(), None, z)[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert fake.shape == (256, 256, 3) and np.abs(fake - want).max() <= 1.0


def test_flags_reach_every_entry_point(ade20k, tmp_path):
    """Without opt.pkl the official test flags are taken by `spadegan paint` and `spadegan eval`
    (their parsers), `Synthesizer(G)` wraps a loaded OASIS generator, --no_ema picks <tag>_G.pth."""
    from spadegan.app.cli import _parser as paint_parser
    from spadegan.app.cli import build_backend
    from spadegan.evaluation.cli import build_parser
    from spadegan.evaluation.evaluate import model_options, resolve_model
    from spadegan.oasis_checkpoint import oasis_flags

    run = tmp_path / "checkpoints" / "flags_only"
    shutil.copytree(ade20k.run / "models", run / "models")
    args = paint_parser().parse_args(["--checkpoint", str(run), "--which_epoch", "best", "--dataset_mode", "ade20k",
                                      "--channels_G", "16"])
    backend = build_backend(args.checkpoint, None, "fp32", args.which_epoch, **oasis_flags(args))
    assert backend.supports_region_seeds and backend.label_nc == 151 and backend.synthesizer.oasis_opt.channels_G == 16
    assert Synthesizer(backend.synthesizer.G, precision="fp32").__class__ is OASISSynthesizer
    with pytest.raises(SpadeganError, match=r"no opt\.pkl or opt\.txt: pass dataset_mode"):
        build_backend(str(run), None, "fp32", "best")
    ns = build_parser().parse_args(["--checkpoint", str(run), "--which_epoch", "best", "--dataset_mode", "ade20k",
                                    "--channels_G", "16", "--no_ema"])
    weights, folder, _ = resolve_model(ns)
    assert weights.name == "best_G.pth" and folder == run
    opt = model_options(weights, ns)
    assert (opt.dataset_mode, opt.label_nc, opt.ngf, opt.crop_size, opt.no_instance) == ("ade20k", 150, 16, 256, True)
