"""`--label_nc 0`: models conditioned on a label *image* (edges, sketches, depth, colour layouts).

The paired sets are made here from the shared COCO photos: gradient-magnitude edge maps
(1 channel, numpy only, by the README's scripts/make_edges.py) and blurred colour layouts
(3 channels), resized to 48 px.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from spadegan import options
from spadegan.data import create_dataset, resolve_dataset_options
from spadegan.errors import SpadeganError

from conftest import load_script

SIZE = 48


def _edges_script():
    """scripts/make_edges.py, the README's way of making an edges -> photos dataset."""
    return load_script("scripts/make_edges.py")


def make_pairs(shared: Path, root: Path, n: int = 4) -> Path:
    """root/{edges,layouts,photos}: n COCO photos at SIZE px, their edges (L) and colour layouts (RGB)."""
    photos = sorted((shared / "data" / "coco_stuff_sample" / "train_img").glob("*.jpg"))[:n]
    if len(photos) < n:
        pytest.skip(f"need {n} COCO sample photos in {shared}")
    (root / "layouts").mkdir(parents=True, exist_ok=True)
    (root / "src").mkdir()
    for p in photos:
        (root / "src" / p.name).symlink_to(p)
    assert _edges_script().make_pairs(root / "src", root, SIZE) == n  # root/photos, root/edges
    for p in photos:
        im = Image.open(root / "photos" / f"{p.stem}.jpg")
        im.filter(ImageFilter.GaussianBlur(4)).save(root / "layouts" / f"{p.stem}.png")
    return root


@pytest.fixture(scope="module")
def pairs(shared, tmp_path_factory) -> Path:
    return make_pairs(shared, tmp_path_factory.mktemp("pairs"))


def flags(root: Path, labels: str = "edges", *extra: str) -> list[str]:
    return ["--dataset_mode", "custom", "--label_dir", str(root / labels), "--image_dir", str(root / "photos"),
            "--label_nc", "0", "--gpu_ids", "-1", "--crop_size", "32", "--load_size", "36", *extra]


# ---- options and channel counts -------------------------------------------------------------------
def test_options_of_image_labels():
    opt = options.parse(["--dataset_mode", "custom", "--label_dir", "l", "--image_dir", "i", "--label_nc", "0",
                         "--input_nc", "3", "--no_instance"], train=True)
    assert opt.image_label and (opt.semantic_nc, opt.label_channels, opt.generator_input_nc) == (3, 0, 3)
    undetected = opt.replace(input_nc=0)
    with pytest.raises(SpadeganError, match="--input_nc 1 or 3"):
        undetected.semantic_nc
    assert not options.parse([], train=True).image_label


@pytest.mark.parametrize("extra,needle", [
    (["--input_nc", "2"], "--input_nc must be 1 (greyscale), 3 (RGB) or 0"),
    (["--netD", "oasis"], "--netD oasis segments images into class ids"),
    (["--use_3d_noise"], "--use_3d_noise is not supported with --label_nc 0"),
    (["--spade_impl", "sparse"], "--spade_impl sparse computes SPADE from class codes"),
    (["--contain_dontcare_label"], "has no dontcare class: drop --contain_dontcare_label"),
    (["--instance_dir", "inst"], "takes no instance maps: drop --instance_dir inst"),
])
def test_what_does_not_go_with_image_labels(extra, needle):
    with pytest.raises(SpadeganError) as e:
        options.parse(["--dataset_mode", "custom", "--label_dir", "l", "--image_dir", "i", "--label_nc", "0",
                       *extra], train=True)
    assert needle in str(e.value)


def test_label_nc_and_input_nc_errors():
    with pytest.raises(SpadeganError, match="--label_nc must be 0 .image labels. or more, got -1"):
        options.parse(["--label_nc", "-1"], train=True)
    with pytest.raises(SpadeganError, match="--dataset_mode coco .sets --contain_dontcare_label"):
        options.parse(["--label_nc", "0"], train=True)
    with pytest.raises(SpadeganError, match="--input_nc 3 only applies with --label_nc 0"):
        options.parse(["--input_nc", "3"], train=True)


@pytest.mark.parametrize("labels,channels", [("edges", 1), ("layouts", 3)])
def test_channels_detected_once_and_saved(pairs, labels, channels, capsys, tmp_path):
    opt = resolve_dataset_options(options.parse(flags(pairs, labels), train=True))
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and f"input_nc={channels} detected from {pairs / labels}" in said[0]
    assert "no_instance=True" in said[0]
    assert opt.input_nc == channels and opt.no_instance and opt.semantic_nc == channels
    assert resolve_dataset_options(opt) is opt  # resolved once: nothing more to say
    assert capsys.readouterr().out == ""
    options.save_options(opt, tmp_path)
    assert re.search(rf"^\s*input_nc: {channels}\s+\[default: 0\]$", (tmp_path / "opt.txt").read_text(), re.M)
    item = create_dataset(opt)[0]
    assert item["label"].shape == (channels, 32, 32) and item["label"].dtype == torch.float32
    assert -1 <= float(item["label"].min()) and float(item["label"].max()) <= 1


def test_label_image_is_resized_bilinearly_with_the_photos_crop_and_flip(pairs, tmp_path):
    # a "layout" that is the photo itself: after the shared transform it must still match the photo
    (tmp_path / "same").mkdir()
    for p in (pairs / "photos").glob("*.jpg"):
        Image.open(p).save(tmp_path / "same" / f"{p.stem}.png")
    argv = ["--dataset_mode", "custom", "--label_dir", str(tmp_path / "same"), "--image_dir",
            str(pairs / "photos"), "--label_nc", "0", "--crop_size", "32", "--load_size", "40", "--seed", "5"]
    from spadegan.data.transforms import get_params

    ds = create_dataset(resolve_dataset_options(options.parse(argv, train=True)))
    flips = set()
    for i in range(len(ds)):
        for epoch in range(3):
            item = ds[(i, epoch)]
            diff = (item["label"] - item["image"]).abs()
            assert float(diff.mean()) < 0.03, (i, epoch)  # bilinear vs bicubic, same crop and flip
            flips.add(get_params(ds.opt, (SIZE, SIZE), ds.rng(i, epoch)).flip)
    assert flips == {True, False}
    levels = torch.unique(ds[0]["label"]).numel()
    assert levels > 200  # bilinear interpolation, not a nearest-neighbour copy of 8-bit levels


def test_explicit_input_nc_that_does_not_fit_the_files(pairs):
    from spadegan.data.validate import validate_dataset

    opt = resolve_dataset_options(options.parse(flags(pairs, "edges", "--input_nc", "3"), train=True))
    with pytest.raises(SpadeganError) as e:
        create_dataset(opt)[0]
    first = sorted((pairs / "edges").glob("*.png"))[0]
    assert f"{first} has 1 channel(s) (greyscale) but --input_nc is 3 (RGB)" in str(e.value)
    with pytest.raises(SpadeganError, match=re.escape(f"{first} has 1 channel(s)")):
        validate_dataset(opt, create_dataset(opt), progress=False)


def test_check_dataset_checks_sizes_channels_and_pairing(pairs, tmp_path, capsys):
    from spadegan.data.check import check_main

    assert check_main(flags(pairs, "layouts")) == 0
    out = capsys.readouterr().out
    assert "label image sizes: all 48x48" in out
    assert "label images (--label_nc 0, read as float channels in [-1, 1]): 4 with 3 channel(s) (4 RGB); " \
           "the model reads --input_nc 3" in out
    assert "classes present" not in out and "--label_nc that fits" not in out and "OK: the dataset is ready" in out

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    files = sorted((pairs / "layouts").glob("*.png"))
    for f in files:
        Image.open(f).save(mixed / f.name)
    Image.open(files[-1]).convert("L").save(mixed / files[-1].name)  # one greyscale file among RGB ones
    Image.open(files[1]).resize((40, 40)).save(mixed / files[1].name)  # one of another size
    with pytest.raises(SpadeganError):
        check_main(flags(pairs, "layouts", "--label_dir", str(mixed)))
    out = capsys.readouterr().out
    assert f"problem: {mixed / files[-1].name} has 1 channel(s) (greyscale) but --input_nc is 3 (RGB)" in out
    assert f"problem: {mixed / files[1].name} is 40x40 but its photo" in out

    Image.open(files[0]).save(mixed / "lonely.png")
    with pytest.raises(SpadeganError, match="label map.s. without a photo of the same name .*lonely.png"):
        check_main(flags(pairs, "layouts", "--label_dir", str(mixed)))


# ---- training -------------------------------------------------------------------------------------
def train_opt(root: Path, ck: Path, name: str, *extra: str):
    argv = flags(root, "edges", "--name", name, "--checkpoints_dir", str(ck), "--ngf", "8", "--ndf", "8",
                 "--batchSize", "2", "--nThreads", "0", "--seed", "3", "--niter", "1", "--niter_decay", "1",
                 "--no_vgg_loss", "--print_freq", "1000", "--display_freq", "1000", "--save_latest_freq", "1000",
                 *extra)
    return resolve_dataset_options(options.parse(argv, train=True))


@pytest.mark.parametrize("vae", [False, True])
def test_training_steps_and_resume_equal_an_uninterrupted_run(pairs, tmp_path, vae):
    from spadegan.train.model import ImageLabel
    from spadegan.train.trainer import Trainer

    extra = ("--use_vae",) if vae else ()
    N, k = 3, 1  # 2 batches per epoch: stop in epoch 1, resume through epoch 2's lr decay
    opt = train_opt(pairs, tmp_path, "ref", *extra)
    ref = Trainer(opt, dataset=create_dataset(opt), progress=False)
    assert ref.model.netG.head_0.norm_0.mlp_shared[0].in_channels == 1 and ref.model.netD.discriminator_0.model0[0].in_channels == 1 + 3
    codes, real = ref.model.preprocess_input(next(iter(ref.loader)), ref.device)
    assert isinstance(codes, ImageLabel) and codes.image.shape == (2, 1, 32, 32) and not ref.model.sparse
    assert torch.equal(ref.model.g_input(codes), codes.image)
    assert ref.run(max_steps=N)["iteration"] == N
    losses = ref.latest_losses()
    assert {"GAN", "GAN_Feat", "D_Fake", "D_real"} <= set(losses) and all(np.isfinite(v) for v in losses.values())
    assert ("KLD" in losses) == vae

    opt = train_opt(pairs, tmp_path, "cut", *extra)
    assert Trainer(opt, dataset=create_dataset(opt), progress=False).run(max_steps=k)["iteration"] == k
    opt = train_opt(pairs, tmp_path, "cut", *extra, "--continue_train")
    resumed = Trainer(opt, dataset=create_dataset(opt), progress=False)
    assert (resumed.epoch, resumed.iteration) == (1, k)
    assert resumed.run(max_steps=N)["iteration"] == N
    for net in ("G", "D", "E") if vae else ("G", "D"):
        a = torch.load(tmp_path / "ref" / f"latest_net_{net}.pth", weights_only=True)
        b = torch.load(tmp_path / "cut" / f"latest_net_{net}.pth", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), net


def test_train_and_test_commands(pairs, tmp_path, monkeypatch, capsys):
    from spadegan.train.cli import test_main, train_main

    monkeypatch.chdir(tmp_path)
    small = ["--name", "edges2photo", "--ngf", "8", "--batchSize", "2"]
    assert train_main(flags(pairs, "edges", *small, "--ndf", "8", "--niter", "1", "--no_vgg_loss",
                            "--display_freq", "1")) == 0
    out = capsys.readouterr().out
    assert out.count("input_nc=1 detected from") == 1
    folder = tmp_path / "checkpoints" / "edges2photo"
    saved = options.load_options_file(folder)
    assert (saved["label_nc"], saved["input_nc"], saved["no_instance"]) == (0, 1, True)
    web = sorted((folder / "web" / "images").glob("*_input_label.png"))
    assert web and np.asarray(Image.open(web[0])).shape[-1] == 3  # the edges drawn as a picture

    assert test_main(flags(pairs, "edges", *small, "--phase", "test")) == 0
    res = tmp_path / "results" / "edges2photo" / "test_latest" / "images"
    stems = sorted(p.stem for p in (pairs / "edges").glob("*.png"))
    for sub in ("input_label", "synthesized_image", "real_image"):
        assert sorted(p.stem for p in (res / sub).glob("*.png")) == stems, sub
    shown = np.asarray(Image.open(res / "input_label" / f"{stems[0]}.png"))
    assert shown.shape == (32, 32, 3) and (shown[..., 0] == shown[..., 1]).all()  # greyscale edges


# ---- synthesis, engine, export ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    from test_synthesize import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("models") / "layout2photo", "--dataset_mode", "custom",
                           "--label_dir", "l", "--image_dir", "i", "--label_nc", "0", "--input_nc", "3",
                           "--no_instance")


def test_synthesizer_api_takes_label_images(rgb_model, pairs):
    from spadegan import load_checkpoint
    from spadegan.data.transforms import resize_label_image
    from spadegan.errors import SpadeganWarning
    from spadegan.synthesize import Synthesizer

    # the network that runs instead is named with its SPADE implementation (label images: dense)
    with pytest.warns(SpadeganWarning, match=r"the fast engine needs class-id label maps .*"
                                             r"running the training network \(dense SPADE, fp32\)"):
        syn = Synthesizer.from_checkpoint(rgb_model, device="cpu", precision="fp32")
    assert syn.engine is None and syn.image_label and syn.input_nc == 3 and syn.classes == []
    path = sorted((pairs / "layouts").glob("*.png"))[0]
    pil = Image.open(path)
    ref = syn.synthesize(path, output="numpy")
    u8 = np.array(pil)
    for same in (pil, u8, u8.astype(np.float32) / 255, torch.from_numpy(u8).permute(2, 0, 1)):
        assert np.array_equal(syn.synthesize(same, output="numpy"), ref)
    # what the faithful network makes of the bilinearly resized label image
    G = load_checkpoint(rgb_model)
    with torch.no_grad():
        out = G(resize_label_image(u8.astype(np.float32) / 255, (64, 64))[None])
    assert np.abs(((out[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy() - ref).max() <= 1
    assert syn.synthesize(path, width=128).size == (128, 128)

    edges = sorted((pairs / "edges").glob("*.png"))[0]
    with pytest.raises(SpadeganError, match=re.escape(f"{edges} has 1 channel(s) (greyscale) but this model's "
                                                      "input_nc is 3 (RGB)")):
        syn.synthesize(edges)
    with pytest.raises(SpadeganError, match=r"label image has 1 channel\(s\) .* input_nc is 3"):
        syn.synthesize(np.zeros((8, 8), np.uint8))
    with pytest.raises(SpadeganError, match=r"float label image must hold values in \[0, 1\]"):
        syn.synthesize(np.full((8, 8, 3), -1.0, np.float32))
    with pytest.raises(SpadeganError, match="reads label images"):
        syn.label_ids(path)


def test_synthesize_command_with_label_images(rgb_model, pairs, tmp_path, capsys):
    from spadegan.synthesize import main as synth_main

    (tmp_path / "in").mkdir()
    layouts = sorted((pairs / "layouts").glob("*.png"))[:2]
    for f in layouts:
        Image.open(f).save(tmp_path / "in" / f.name)
    grey = tmp_path / "in" / "grey.png"
    Image.open(layouts[0]).convert("L").save(grey)
    rc = synth_main(["--checkpoint", str(rgb_model), "--label", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                     "--palette_labels", "--no_engine"])
    captured = capsys.readouterr()
    assert rc == 1 and f"{grey} has 1 channel(s) (greyscale) but this model's input_nc is 3" in captured.err
    for f in layouts:
        assert Image.open(tmp_path / "out" / f.name).size == (64, 64)
        shown = np.asarray(Image.open(tmp_path / "out" / f"{f.stem}_label.png")).astype(int)
        expect = np.asarray(Image.open(f).resize((64, 64), Image.BILINEAR)).astype(int)
        assert np.abs(shown - expect).max() <= 2  # the label image itself, resized as the model read it
    assert "wrote 2 image(s)" in captured.out and "1 label map(s) failed" in captured.out


def test_engine_refuses_and_export_writes_the_faithful_network(rgb_model, tmp_path, capsys):
    from spadegan import load_checkpoint
    from spadegan.cli import main as cli_main
    from spadegan.engine import SynthesisEngine
    from spadegan.engine.export import export
    from spadegan.synthesize import Synthesizer

    G = load_checkpoint(rgb_model)
    with pytest.raises(SpadeganError, match="the fast engine needs class-id label maps"):
        SynthesisEngine.from_generator(G)
    assert cli_main(["export", "--checkpoint", str(rgb_model), "--format", "torchscript",
                     "--out", str(tmp_path / "g.pt"), "--batch_size", "2"]) == 0
    assert "of the faithful network" in capsys.readouterr().out
    label = torch.rand(2, 3, 64, 64) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still works
        loaded = torch.jit.load(str(tmp_path / "g.pt"))
    with torch.no_grad():
        expected = G(label)
        assert float((loaded(label) - expected).abs().max()) <= 1e-4
    syn = Synthesizer.from_checkpoint(rgb_model, device="cpu", precision="fp32", use_engine=False)
    assert float((syn.generate(label) - expected).abs().max()) <= 1e-5
    pytest.importorskip("onnxruntime")
    res = export(rgb_model, "onnx", tmp_path / "g.onnx", size=32)
    assert res["inputs"] == ["label"] and res["network"] == "faithful" and res["max_abs_err"] <= 1e-4
    assert res["size"] == [32, 32]


# ---- eval -------------------------------------------------------------------------------------------
def test_eval_says_miou_does_not_apply(rgb_model, pairs, tmp_path, capsys):
    import json
    import shutil

    from spadegan.evaluation.cli import main as eval_main
    from spadegan.evaluation.evaluate import BUILTIN_SEGMENTER

    train = tmp_path / "train"
    for sub in ("layouts", "photos"):
        shutil.copytree(pairs / sub, train / sub)
    common = ["--checkpoint", str(rgb_model), "--label_dir", str(pairs / "layouts"), "--image_dir",
              str(pairs / "photos"), "--batch_size", "4", "--num_visuals", "2", "--no_plots"]
    assert eval_main(common + ["--out", str(tmp_path / "plain"), "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "note: mIoU n/a: the model is conditioned on label images (--label_nc 0)" in out
    assert "baseline unavailable: the class-mean-colour baseline needs class ids" in out
    m = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert m["miou_status"] == "n/a" and "label images" in m["miou_reason"]
    assert m["synthesized"]["miou"] is None and m["num_classes"] == 0 and m["class_names"] == []
    assert m["baseline"]["status"] == "unavailable" and m["fid_status"] == "unavailable"
    assert Image.open(tmp_path / "plain" / "samples.png").size == (3 * 64 + 4, 2 * 64 + 2)

    if not BUILTIN_SEGMENTER.is_file():
        pytest.skip("no shipped segmenter for the seg_fd part")
    assert eval_main(common + ["--out", str(tmp_path / "segfd"), "--seg_weights", str(BUILTIN_SEGMENTER),
                               "--baseline_label_dir", str(train / "layouts"),
                               "--baseline_image_dir", str(train / "photos")]) == 0
    m = json.loads((tmp_path / "segfd" / "metrics.json").read_text())
    assert m["miou_status"] == "n/a" and m["seg_fd"]["status"] == "ok"
    assert m["synthesized"]["seg_fd"] is not None and m["real"]["seg_fd"] is not None
    assert m["synthesized"]["miou"] is None


# ---- paint --------------------------------------------------------------------------------------------
def test_paint_backend_takes_a_colour_label(rgb_model, pairs):
    import io

    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from spadegan.app.server import create_app
    from spadegan.app.adapter import AppBackend
    from spadegan.synthesize import Synthesizer

    syn = Synthesizer.from_checkpoint(rgb_model, device="cpu", precision="fp32", use_engine=False)
    backend = AppBackend(syn)
    with pytest.raises(SpadeganError, match="background_id is a class id; this backend reads label images"):
        create_app(backend, background_id=1)
    path = sorted((pairs / "layouts").glob("*.png"))[0]

    def post(client, im: Image.Image):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return client.post("/api/synthesize", files={"label": ("label.png", buf.getvalue(), "image/png")},
                           data={"seed": "3"})

    with TestClient(create_app(backend)) as client:
        info = client.get("/api/info").json()
        assert (info["label_kind"], info["input_nc"], info["label_nc"], info["classes"], info["background"]) == \
            ("image", 3, 0, [], None)
        r = post(client, Image.open(path))  # 48 px: resized bilinearly to the model's 64
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
        assert got.shape == (64, 64, 3)
        assert np.abs(got - syn.synthesize(path, output="numpy").astype(int)).max() <= 1
        r = post(client, Image.open(path).convert("L"))
        assert r.status_code == 400
        assert "label has 1 channel(s) (greyscale) but this model's input_nc is 3 (RGB)" in r.json()["error"]
