"""`Synthesizer` and `spadegan synthesize`: checkpoints -> images, label inputs, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan import networks, options
from spadegan.checkpoint import save_network
from spadegan.cli import main as cli_main
from spadegan.data.palettes import label_to_color
from spadegan.data.semantics import to_semantics
from spadegan.errors import SpadeganError
from spadegan.options import save_options
from spadegan.app.adapter import AppBackend
from spadegan.synthesize import Synthesizer, main as synth_main


def make_checkpoint(folder: Path, *flags: str, with_E: bool = False) -> Path:
    """A tiny random-weight checkpoint folder as `spadegan train` writes it."""
    argv = ["--ngf", "8", "--crop_size", "64", "--load_size", "64", "--gpu_ids", "-1",
            "--name", folder.name, "--checkpoints_dir", str(folder.parent)] + list(flags)
    opt = options.parse(argv, train=True)
    torch.manual_seed(0)
    save_network(networks.define_G(opt, init=True), "G", "latest", folder)
    if with_E:
        save_network(networks.define_E(opt, init=True), "E", "latest", folder)
    save_options(opt, folder)
    return folder


def write_ids(path: Path, ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)
    return path


def blocky_ids(seed: int, n: int, size=(64, 64), cell: int = 16, dontcare: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, (size[0] // cell, size[1] // cell))
    if dontcare:
        a[0, 0] = 255
    return np.kron(a, np.ones((cell, cell), dtype=np.int64))


def faithful_uint8(syn: Synthesizer, G, ids: np.ndarray) -> np.ndarray:
    lab = torch.from_numpy(ids)[None, None]
    with torch.no_grad():
        out = G(to_semantics(lab, None, syn.opt))
    return ((out[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


# ---- the Python API ----------------------------------------------------------------------------
def test_api_on_official_checkpoint_folder_matches_faithful_network(parity_dir):
    from spadegan import load_checkpoint

    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu", precision="fp32")
    assert (syn.label_nc, syn.label_channels, syn.width, syn.height) == (12, 13, 64, 64)
    assert syn.engine is not None and not syn.use_vae and not syn.needs_instance
    ids = blocky_ids(0, 12, dontcare=True)
    img = syn.synthesize(ids)
    assert isinstance(img, Image.Image) and img.size == (64, 64) and img.mode == "RGB"
    G = load_checkpoint(parity_dir)
    ref = faithful_uint8(syn, G, np.where(ids == 255, 12, ids))
    got = np.asarray(img).astype(int)
    assert np.abs(got - ref).max() <= 1  # same image up to rounding at .5
    faithful = Synthesizer.from_checkpoint(parity_dir, device="cpu", use_engine=False)
    assert faithful.engine is None
    assert np.abs(faithful.synthesize(ids, output="numpy").astype(int) - got).max() <= 1


def test_label_inputs_files_colour_pngs_tensors_and_dontcare(parity_dir, tmp_path):
    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu", precision="fp32")
    ids = blocky_ids(1, 12, dontcare=True)
    ref = syn.synthesize(ids, output="numpy")
    write_ids(tmp_path / "ids.png", ids)
    assert np.array_equal(syn.synthesize(tmp_path / "ids.png", output="numpy"), ref)
    assert np.array_equal(syn.synthesize(str(tmp_path / "ids.png"), output="numpy"), ref)
    assert np.array_equal(syn.synthesize(torch.from_numpy(ids), output="numpy"), ref)
    assert np.array_equal(syn.synthesize(Image.fromarray(ids.astype(np.uint8)), output="numpy"), ref)
    # the same map as a colour PNG in the dataset's palette (dontcare drawn black)
    colour = label_to_color(ids, syn.palette)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    assert np.array_equal(syn.synthesize(tmp_path / "colour.png", output="numpy"), ref)
    # an id map saved as a grey RGB image
    Image.fromarray(np.stack([ids.astype(np.uint8)] * 3, -1)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(syn.synthesize(tmp_path / "grey_rgb.png", output="numpy"), ref)
    # 255 and the dontcare index label_nc mean the same
    assert np.array_equal(syn.synthesize(np.where(ids == 255, 12, ids), output="numpy"), ref)
    # a bigger map is resized (nearest) to the model size
    big = np.kron(ids, np.ones((2, 2), dtype=np.int64))
    assert np.array_equal(syn.synthesize(big, output="numpy"), ref)
    # batches give what single calls give
    outs = syn.synthesize_batch([ids, tmp_path / "colour.png"], output="numpy")
    assert all(np.array_equal(o, ref) for o in outs)


def test_bad_label_inputs_name_the_file_and_value(parity_dir, tmp_path):
    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu", precision="fp32")
    ids = blocky_ids(2, 12)
    ids[:5, :5] = 40
    p = write_ids(tmp_path / "too_big.png", ids)
    with pytest.raises(SpadeganError, match=r"too_big\.png: label id\(s\) 40 \(25 px\)"):
        syn.synthesize(p)
    colour = label_to_color(blocky_ids(3, 12), syn.palette)
    colour[10, 20] = (1, 2, 3)
    Image.fromarray(colour).save(tmp_path / "off_palette.png")
    with pytest.raises(SpadeganError, match=r"off_palette\.png.*\(1, 2, 3\)"):
        syn.synthesize(tmp_path / "off_palette.png")
    with pytest.raises(SpadeganError, match=r"missing\.png does not exist"):
        syn.synthesize(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(SpadeganError, match=r"junk\.png cannot be read"):
        syn.synthesize(tmp_path / "junk.png")
    with pytest.raises(SpadeganError, match="style image"):
        syn.synthesize(blocky_ids(0, 12), style=np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SpadeganError, match="multiple of 32"):
        syn.synthesize(blocky_ids(0, 12), width=100)


def test_no_dontcare_model_rejects_255(tmp_path):
    ck = make_checkpoint(tmp_path / "nodc", "--label_nc", "5", "--no_instance", "--dataset_mode", "custom",
                         "--label_dir", "x", "--image_dir", "y")
    syn = Synthesizer.from_checkpoint(ck, device="cpu")
    ids = blocky_ids(0, 5)
    ids[0, 0] = 255
    with pytest.raises(SpadeganError, match="255 .* no dontcare"):
        syn.synthesize(ids)


def test_generators_built_for_a_device_record_the_implementation_and_are_fed_its_form(tmp_path):
    """--spade_impl auto is resolved once, when G is built for its device, not per call:
    load_checkpoint(impl='auto', device='cpu'), Synthesizer.from_checkpoint and eval's
    load_networks build the sparse SPADE on the CPU; load_checkpoint's default (as define_G's) is
    the dense reference. The Synthesizer (no engine) and synthesize_split feed the form G
    records, and both implementations give the same images."""
    from spadegan import load_checkpoint
    from spadegan.evaluation.split import EvalSplit, load_networks, synthesize_split
    ck = make_checkpoint(tmp_path / "impl", "--label_nc", "5", "--no_instance", "--dataset_mode", "custom",
                         "--label_dir", "x", "--image_dir", "y")
    dense = load_checkpoint(ck)
    assert dense.spade_impl == "dense" and load_checkpoint(ck, impl="auto", device="cpu").spade_impl == "sparse"
    assert load_checkpoint(ck, impl="dense", device="cpu").spade_impl == "dense"
    # a run trained with --spade_impl sparse still loads as the reference G(semantics) by default
    sparse_run = make_checkpoint(tmp_path / "sparse_run", "--label_nc", "5", "--no_instance", "--dataset_mode",
                                 "custom", "--label_dir", "x", "--image_dir", "y", "--spade_impl", "sparse")
    assert load_checkpoint(sparse_run).spade_impl == "dense"
    assert load_checkpoint(sparse_run, impl="auto", device="cpu").spade_impl == "sparse"
    with pytest.raises(SpadeganError, match="impl='sparse' is a generator's SPADE implementation; D has none"):
        load_checkpoint(ck, "D", impl="sparse")
    sparse_syn = Synthesizer.from_checkpoint(ck, device="cpu", use_engine=False)
    dense_syn = Synthesizer(dense, device="cpu", use_engine=False)
    assert (sparse_syn.sparse, sparse_syn.G.spade_impl, dense_syn.sparse) == (True, "sparse", False)
    assert "(sparse SPADE, fp32)" in sparse_syn.network and "(dense SPADE, fp32)" in dense_syn.network
    lab = torch.from_numpy(np.stack([blocky_ids(0, 5), blocky_ids(1, 5)]))
    a, b = sparse_syn.generate(lab), dense_syn.generate(lab)
    assert a.shape == (2, 3, 64, 64) and float((a - b).abs().max()) < 1e-4
    G_eval, _ = load_networks(ck / "latest_net_G.pth", dense.opt, torch.device("cpu"), "random")
    assert G_eval.spade_impl == "sparse"
    split = EvalSplit(lab, torch.zeros(2, 3, 64, 64, dtype=torch.uint8), None, ["a", "b"])
    x, y = (synthesize_split(G, split, dense.opt, torch.device("cpu")) for G in (G_eval, dense))
    assert x.dtype == torch.uint8 and int((x.int() - y.int()).abs().max()) <= 1


def test_size_keeps_the_label_aspect_ratio(parity_dir):
    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu")
    ids = blocky_ids(0, 12, size=(96, 192))
    assert syn.synthesize(ids, width=128).size == (128, 64)
    assert syn.synthesize(ids).size == (64, 64)  # default: the training size


def test_builtin_model_missing_gives_a_clear_error(monkeypatch, tmp_path):
    import spadegan.synthesize.synthesizer as S  # where builtin_checkpoint reads it

    monkeypatch.setattr(S, "BUILTIN_DIR", tmp_path / "nothing")
    with pytest.raises(SpadeganError, match="no built-in model.*--checkpoint"):
        Synthesizer.from_checkpoint(None)


def test_vae_seeds_styles_and_encoder(tmp_path):
    ck = make_checkpoint(tmp_path / "vae", "--label_nc", "10", "--no_instance", "--use_vae",
                         "--dataset_mode", "landscapes", "--dataroot", "x", with_E=True)
    syn = Synthesizer.from_checkpoint(ck, device="cpu")
    ids = blocky_ids(0, 10)
    a = syn.synthesize(ids, seed=1, output="numpy")
    assert np.array_equal(a, syn.synthesize(ids, seed=1, output="numpy"))
    assert not np.array_equal(a, syn.synthesize(ids, seed=2, output="numpy"))
    photo = np.random.default_rng(0).integers(0, 255, (80, 100, 3)).astype(np.uint8)
    s1 = syn.synthesize(ids, style=photo, seed=3, output="numpy")
    assert s1.shape == (64, 64, 3)
    assert np.array_equal(s1, syn.synthesize(ids, style=Image.fromarray(photo), seed=3, output="numpy"))
    with pytest.raises(SpadeganError, match="fixed"):
        syn.synthesize(ids, width=128)


def test_instance_model_uses_instance_maps(tmp_path):
    ck = make_checkpoint(tmp_path / "inst", "--label_nc", "6", "--dataset_mode", "coco", "--dataroot", "x")
    syn = Synthesizer.from_checkpoint(ck, device="cpu")
    assert syn.needs_instance
    ids = blocky_ids(0, 6)
    inst = blocky_ids(5, 3, cell=8)
    a = syn.synthesize(ids, instance=inst, output="numpy")
    b = syn.synthesize(ids, output="numpy")  # class boundaries as instance boundaries
    assert a.shape == b.shape == (64, 64, 3) and not np.array_equal(a, b)
    write_ids(tmp_path / "inst.png", inst)
    assert np.array_equal(a, syn.synthesize(ids, instance=tmp_path / "inst.png", output="numpy"))


def test_app_backend_follows_the_paint_app_protocol(parity_dir):
    from spadegan.app.backend import SynthesisBackend, check_backend

    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu")
    be = AppBackend(syn)
    assert isinstance(be, SynthesisBackend)
    assert (be.label_nc, be.width, be.height, be.use_vae) == (13, 64, 64, False)
    assert check_backend(be)  # the server's own validation of the static attributes
    assert all(set(c) == {"id", "name", "color"} and c["id"] < 13 for c in be.classes)
    ids = [blocky_ids(0, 13).astype(np.uint8), blocky_ids(1, 13).astype(np.uint8)]
    out = be.synthesize_batch(ids, [1, None], [None, None])
    assert len(out) == 2 and all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in out)
    assert np.array_equal(out[0], syn.synthesize(ids[0], output="numpy"))


def png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_the_paint_app_reads_labels_with_the_synthesizers_decoder(parity_dir):
    from spadegan.app.inputs import HTTPError, decode_label

    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu", precision="fp32")
    be = AppBackend(syn)
    kw = dict(label_nc=be.label_nc, classes=be.classes, width=64, height=64, max_pixels=1 << 20)
    ids = blocky_ids(4, 12)  # no 255: the app sends model ids, where 255 is not dontcare
    grey_rgb = np.stack([ids.astype(np.uint8)] * 3, -1)
    for arr in (ids.astype(np.uint8), label_to_color(ids, syn.palette), grey_rgb):  # ids, palette, grey RGB
        assert np.array_equal(decode_label(png_bytes(arr), **kw), syn.label_ids(arr))
    bad = ids.copy()
    bad[0, :3] = 40
    with pytest.raises(HTTPError) as app_err:
        decode_label(png_bytes(bad.astype(np.uint8)), **kw)
    with pytest.raises(SpadeganError) as api_err:
        syn.label_ids(bad)
    # one wording, each with its own label space
    assert app_err.value.status == 400 and app_err.value.message == (
        "label: label id(s) 40 (3 px) not known to this model, which accepts ids 0..12 (label_nc=13); "
        "use the ids of the dataset it was trained on")
    assert str(api_err.value).startswith(
        "label map: label id(s) 40 (3 px) not known to this model, which accepts 0..11 and 255 (dontcare)")
    colour = label_to_color(ids, syn.palette)
    colour[5, 7] = (255, 0, 255)
    with pytest.raises(HTTPError, match=r"#ff00ff \(255, 0, 255\) x1 px e\.g\. at \(x=7, y=5\)"):
        decode_label(png_bytes(colour), **kw)
    # what the app decoded reaches the network as it is: the app's image is the API's
    out = be.synthesize_batch([decode_label(png_bytes(label_to_color(ids, syn.palette)), **kw)], [None], [None])
    assert np.array_equal(out[0], syn.synthesize(ids, output="numpy"))


# ---- the command line -----------------------------------------------------------------------
def test_cli_on_official_folder_with_its_flags_and_a_bad_file(parity_dir, tmp_path, capsys):
    labels = tmp_path / "labels"
    for i in range(3):
        write_ids(labels / f"map{i}.png", blocky_ids(i, 12, dontcare=True))
    bad = blocky_ids(9, 12)
    bad[0, 0] = 77
    write_ids(labels / "bad.png", bad)
    flags = (parity_dir / "flags.txt").read_text().split()
    out = tmp_path / "out"
    rc = cli_main(["synthesize", "--checkpoint", str(parity_dir / "latest_net_G.pth"), "--label", str(labels),
                   "--out", str(out), "--batch_size", "2", "--palette_labels"] + flags)
    err = capsys.readouterr().err
    assert rc == 1
    assert "bad.png: label id(s) 77 (1 px)" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"map{i}.png" for i in range(3)] + [f"map{i}_label.png" for i in range(3)])
    syn = Synthesizer.from_checkpoint(parity_dir, device="cpu")
    assert np.array_equal(np.asarray(Image.open(out / "map1.png")),
                          syn.synthesize(labels / "map1.png", output="numpy"))
    # without the flags: the options come from opt.txt / opt.pkl in the folder
    capsys.readouterr()
    rc = synth_main(["--checkpoint", str(parity_dir), "--label", str(labels / "map0.png"),
                     "--out", str(tmp_path / "out2"), "--no_engine", "--size", "128"])
    assert rc == 0 and Image.open(tmp_path / "out2" / "map0.png").size == (128, 128)
    # --no_engine names the network that ran and its SPADE implementation
    assert re.search(r"wrote 1 image\(s\) to .* with the training network \((sparse|dense) SPADE, (fp32|bf16|fp16)\)",
                     capsys.readouterr().out)


def test_cli_on_coco_sample_labels_with_instances(shared, tmp_path):
    coco = shared / "data" / "coco_stuff_sample"
    if not coco.is_dir():
        pytest.skip(f"{coco} not found")
    ck = make_checkpoint(tmp_path / "coco_tiny", "--dataset_mode", "coco", "--dataroot", str(coco))
    out = tmp_path / "out"
    rc = synth_main(["--checkpoint", str(ck), "--label", str(coco / "val_label"), "--instance",
                     str(coco / "val_inst"), "--out", str(out), "--batch_size", "4"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.stem + ".png" for p in (coco / "val_label").glob("*.png"))
    assert all(Image.open(out / n).size == (64, 64) for n in names)


def test_cli_vae_samples_style_and_demo(tmp_path):
    ck = make_checkpoint(tmp_path / "land", "--label_nc", "10", "--no_instance", "--use_vae",
                         "--dataset_mode", "landscapes", "--dataroot", "x", with_E=True)
    write_ids(tmp_path / "l.png", blocky_ids(0, 10))
    Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).save(tmp_path / "style.jpg")
    rc = synth_main(["--checkpoint", str(ck), "--label", str(tmp_path / "l.png"), "--out", str(tmp_path / "o"),
                     "--num_samples", "3", "--seed", "5"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"l_sample{k}.png" for k in range(3)]
    rc = synth_main(["--checkpoint", str(ck), "--label", str(tmp_path / "l.png"), "--out", str(tmp_path / "s"),
                     "--style_image", str(tmp_path / "style.jpg")])
    assert rc == 0 and (tmp_path / "s" / "l.png").is_file()
    rc = synth_main(["--checkpoint", str(ck), "--demo", "--demo_count", "2", "--out", str(tmp_path / "demo")])
    assert rc == 0
    page = (tmp_path / "demo" / "index.html").read_text()
    for i in range(2):
        for kind in ("label", "procedural", "style0", "style1", "style2", "stylesource", "styled"):
            assert (tmp_path / "demo" / f"scene{i}_{kind}.png").is_file()
            assert f"scene{i}_{kind}.png" in page


def test_corrupt_options_file_with_override_flags_is_an_error_naming_it(tmp_path):
    flags = ["--label_nc", "5", "--no_instance", "--dataset_mode", "custom", "--label_dir", "x", "--image_dir", "y"]
    ck = make_checkpoint(tmp_path / "ck", *flags)
    write_ids(tmp_path / "l.png", blocky_ids(0, 5))
    args = ["--checkpoint", str(ck), "--label", str(tmp_path / "l.png"), "--out", str(tmp_path / "o")]
    (ck / "opt.json").write_text("{not json")
    # the flags override the saved options; they are never applied over defaults instead
    with pytest.raises(SpadeganError, match=re.escape(f"cannot read options file {ck / 'opt.json'}") +
                       r".*flags given \(--ngf 8\) override the options saved in .*opt\.json"):
        synth_main(args + ["--ngf", "8"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(SpadeganError, match=re.escape(str(ck / "opt.json"))):  # without flags, as before
        synth_main(args)
    # no options file at all: the flags say it all
    for name in ("opt.json", "opt.txt", "opt.pkl"):
        (ck / name).unlink()
    assert synth_main(args + flags + ["--ngf", "8", "--crop_size", "64", "--load_size", "64"]) == 0
    assert Image.open(tmp_path / "o" / "l.png").size == (64, 64)


def test_cli_errors_are_one_line_spadegan_errors(parity_dir, tmp_path, capsys):
    with pytest.raises(SpadeganError, match="--out"):
        synth_main(["--checkpoint", str(parity_dir), "--label", "x.png"])
    with pytest.raises(SpadeganError, match="--num_samples needs"):
        synth_main(["--checkpoint", str(parity_dir), "--label", "x.png", "--out", str(tmp_path),
                    "--num_samples", "2"])
    with pytest.raises(SpadeganError, match="unknown flag --bogus"):
        synth_main(["--checkpoint", str(parity_dir), "--label", "x.png", "--out", str(tmp_path), "--bogus", "1"])
    rc = cli_main(["synthesize", "--checkpoint", str(tmp_path / "nope"), "--label", "x.png", "--out", str(tmp_path)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = synth_main(["--checkpoint", str(parity_dir), "--label", str(tmp_path / "missing.png"),
                     "--out", str(tmp_path / "o")])
    assert rc == 1 and "missing.png does not exist" in capsys.readouterr().err
