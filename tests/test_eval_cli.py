"""Tests for `spadegan eval` (evaluation/cli.py and the modules it runs) and the shipped landscapes segmenter.

A handful of 64 px procedural scenes and a tiny random VAE generator (ngf 8) exercise the
whole command: synthesis, segmenter scores, the baseline, FID's "unavailable" path (and its
plumbing with a stub feature network), seg_fd/seg_kid (distances in the segmenter's feature
space), metrics.json, the plots and --all_epochs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spadegan.cli import main as spadegan_main
from spadegan.errors import SpadeganError
from spadegan.evaluation import cli as ecli
from spadegan.evaluation import evaluate, scorer_training, scoring, split
from spadegan.evaluation.segmenter import SmallSegmenter, load_segmenter, save_segmenter

SIZE = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from spadegan.data.landscapes import make_landscapes

    root = tmp_path_factory.mktemp("land")
    make_landscapes(str(root), count=9, size=SIZE, seed=100, val_count=5)
    return root


def _make_checkpoint(folder: Path, data: Path, use_vae: bool = True, epochs: tuple[int, ...] = (1, 2)) -> Path:
    """A random ngf-8 generator saved as an experiment folder (opt + weights + logs)."""
    from spadegan import networks
    from spadegan.checkpoint import save_network
    from spadegan.options import parse, save_options

    flags = ["--name", folder.name, "--checkpoints_dir", str(folder.parent), "--dataset_mode", "landscapes",
             "--dataroot", str(data), "--crop_size", str(SIZE), "--load_size", str(SIZE), "--ngf", "8",
             "--nef", "8", "--z_dim", "16", "--norm_G", "spectralspadeinstance3x3", "--gpu_ids", "-1"]
    if use_vae:
        flags.append("--use_vae")
    opt = parse(flags, train=True)
    save_options(opt, folder)
    torch.manual_seed(0)
    G = networks.define_G(opt)
    E = networks.define_E(opt) if use_vae else None
    for which in [*map(str, epochs), "latest"]:
        with torch.no_grad():  # make the epochs differ a little
            for p in G.parameters():
                p.add_(0.01 * torch.randn_like(p))
        save_network(G, "G", which, folder)
        if E is not None:
            save_network(E, "E", which, folder)
    (folder / "iter.txt").write_text(f"{max(epochs) + 1}\n0\n")
    lines = ["================ Training Loss (Mon Jan  1 00:00:00 2024) ================"]
    for e in range(1, max(epochs) + 1):
        for it in (2, 4):
            lines.append(f"(epoch: {e}, iters: {it}, time: 0.100) GAN: {1.0 / e:.3f} GAN_Feat: 2.000 "
                         f"KLD: 0.100 D_Fake: 0.500 D_real: 0.400")
    (folder / "loss_log.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_data, tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("ckpts") / "tiny", tiny_data)


@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "seg.pt"
    save_segmenter(SmallSegmenter(10, width=4), path)
    return path


def _run(argv: list[str]) -> int:
    return ecli.main(argv + ["--num_threads", "1"])


def test_eval_end_to_end(tiny_data, tiny_ckpt, tiny_seg, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(tiny_seg), "--baseline",
               "--all_epochs", "--out", str(out), "--batch_size", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "synthesized" in text and "real (mIoU bound, segFD floor)" in text and "baseline" in text
    assert "FID/KID unavailable" in text
    m = json.loads((out / "metrics.json").read_text())
    for key in ("model", "weights", "dataset", "num_classes", "class_names", "segmenter", "fid_status",
                "fid_reason", "synthesized", "real", "baseline", "epochs", "plots", "style"):
        assert key in m, key
    assert m["dataset"]["num_images"] == 5 and m["dataset"]["size"] == [SIZE, SIZE]
    assert m["style"] == "random"
    for row in ("synthesized", "real", "baseline"):
        r = m[row]
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["pixel_accuracy"] <= 1.0, row
        assert set(r["per_class_iou"]) == set(m["class_names"])
    # FID without weights: unavailable with the reason, no number under the FID name
    assert m["fid_status"] == "unavailable"
    assert "FID Inception weights" in m["fid_reason"]
    assert m["synthesized"]["fid"] is None and m["synthesized"]["kid_mean"] is None
    # seg_fd: every row against the 4 train photos (fewer than the 5 eval images: a note says so)
    sfd = m["seg_fd"]
    assert sfd["status"] == "ok" and sfd["reason"] is None and "segmenter" in sfd["description"]
    assert sfd["reference"]["phase"] == "train" and sfd["reference"]["num_images"] == 4
    assert sfd["feature_dim"] == 30 * 4 and sfd["layers"][0] == "enc0"  # width-4 test segmenter
    assert any("only 4 photos for the reference" in n for n in m["notes"])
    for row in ("synthesized", "real", "baseline"):
        r = m[row]
        assert r["seg_fd"] >= 0 and math.isfinite(r["seg_kid_mean"]) and r["seg_kid_std"] >= 0, row
    assert "segFD" in text and "segKID" in text
    assert all(math.isfinite(e["seg_fd"]) for e in m["epochs"])
    # baseline: computed from the 4 train images, a colour per class
    assert m["baseline"]["status"] == "ok" and m["baseline"]["train_images"] == 4
    assert len(m["baseline"]["class_colours"]) == 10
    # epochs 1, 2 and latest (at epoch 2 from iter.txt "3 0")
    assert [e["which_epoch"] for e in m["epochs"]] == ["1", "2", "latest"]
    assert [e["epoch"] for e in m["epochs"]] == [1.0, 2.0, 2.0]
    for name in ("loss_curves", "metrics_vs_epoch", "samples"):
        p = Path(m["plots"][name])
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_eval_writes_into_checkpoint_folder_by_default(tiny_data, tiny_seg, tmp_path, capsys):
    ckpt = _make_checkpoint(tmp_path / "nonvae", tiny_data, use_vae=False, epochs=(1,))
    rc = spadegan_main(["eval", "--name", "nonvae", "--checkpoints_dir", str(tmp_path), "--seg_weights",
                        str(tiny_seg), "--how_many", "3", "--no_plots", "--num_visuals", "0",
                        "--num_threads", "1"])
    assert rc == 0
    m = json.loads((ckpt / "metrics.json").read_text())
    assert m["dataset"]["num_images"] == 3 and m["style"] is None and m["baseline"] is None
    assert m["plots"] == {}


def test_eval_same_numbers_twice_and_encode_style(tiny_ckpt, tiny_seg, tmp_path):
    def run(out: Path, *extra: str) -> dict:
        assert _run(["--checkpoint", str(tiny_ckpt / "latest_net_G.pth"), "--seg_weights", str(tiny_seg),
                     "--out", str(out), "--no_plots", "--num_visuals", "0", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a["synthesized"]["miou"] == b["synthesized"]["miou"]
    c = run(tmp_path / "c", "--style", "encode")
    assert c["style"] == "encode"


def test_eval_fid_plumbing_with_stub_network(tiny_ckpt, tiny_seg, tmp_path, monkeypatch):
    """With weights 'available' the FID/KID numbers are filled in for the model and baseline."""
    import spadegan.evaluation.fid as fid_mod

    class Stub(torch.nn.Module):  # mean colour + a few pooled statistics as "features"
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    seen = {}

    def fake_load(path, device="cpu"):
        seen["path"] = path
        return Stub()

    monkeypatch.setattr(fid_mod, "load_fid_inception", fake_load)
    out = tmp_path / "out"
    assert _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(tiny_seg), "--fid_weights", "stub.pth",
                 "--baseline", "--out", str(out), "--no_plots", "--num_visuals", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert seen["path"] == "stub.pth"
    assert m["fid_status"] == "ok" and m["fid_reason"] is None
    for row in ("synthesized", "baseline"):
        assert m[row]["fid"] is not None and m[row]["fid"] >= 0 and math.isfinite(m[row]["kid_mean"])


def test_eval_fid_missing_file_is_unavailable_with_reason(tiny_ckpt, tiny_seg, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nope" / "pt_inception.pth"
    assert _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(tiny_seg), "--fid_weights", str(missing),
                 "--out", str(out), "--no_plots", "--num_visuals", "0", "--how_many", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["fid_status"] == "unavailable" and str(missing) in m["fid_reason"]


def test_eval_without_segmenter_reports_miou_unavailable(tiny_data, tmp_path, capsys):
    # a custom-mode model has no shipped segmenter: mIoU is unavailable, the run still succeeds
    ckpt = _make_checkpoint(tmp_path / "custom", tiny_data, use_vae=False, epochs=(1,))
    opt = json.loads((ckpt / "opt.json").read_text())
    opt["dataset_mode"] = "custom"
    (ckpt / "opt.json").write_text(json.dumps(opt))
    out = tmp_path / "out"
    assert _run(["--checkpoint", str(ckpt), "--label_dir", str(tiny_data / "val_label"), "--image_dir",
                 str(tiny_data / "val_img"), "--baseline", "--out", str(out), "--no_plots"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["segmenter"]["status"] == "unavailable" and "--seg_weights" in m["segmenter"]["reason"]
    assert m["synthesized"]["miou"] is None
    assert m["baseline"]["status"] == "unavailable" and "--baseline_label_dir" in m["baseline"]["reason"]
    assert "mIoU unavailable" in capsys.readouterr().out


def test_eval_errors(tiny_ckpt, tmp_path, capsys):
    with pytest.raises(SpadeganError, match="--name NAME, --checkpoint"):
        ecli.main([])
    with pytest.raises(SpadeganError, match="only one of"):
        ecli.main(["--name", "x", "--checkpoint", str(tiny_ckpt)])
    with pytest.raises(SpadeganError, match="no checkpoint folder"):
        ecli.main(["--name", "missing", "--checkpoints_dir", str(tmp_path)])
    wrong = tmp_path / "seg5.pt"
    save_segmenter(SmallSegmenter(5, width=4), wrong)
    with pytest.raises(SpadeganError, match="segments 5 classes"):
        ecli.main(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(wrong), "--out", str(tmp_path / "o")])
    with pytest.raises(SpadeganError, match="does not exist"):
        ecli.main(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(tmp_path / "none.pt")])
    # through the dispatcher: one line on stderr, exit code 2
    assert spadegan_main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script, deprecated in torch 2.x
def test_torchscript_segmenter_is_accepted(tiny_ckpt, tmp_path):
    class Const(torch.nn.Module):  # predicts "sky" everywhere, at half resolution
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 10, x.shape[2] // 2, x.shape[3] // 2)
            logits[:, 0] = 1.0
            return logits

    path = tmp_path / "const.pt"
    torch.jit.script(Const()).save(str(path))
    out = tmp_path / "out"
    assert _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(path), "--out", str(out),
                 "--no_plots", "--num_visuals", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # a scripted segmenter has no layers to read: seg_fd is unavailable, the rest still runs
    assert m["seg_fd"]["status"] == "unavailable" and "TorchScript" in m["seg_fd"]["reason"]
    assert m["synthesized"]["seg_fd"] is None
    # the same constant prediction on real and synthesized images gives the same scores
    assert m["real"]["miou"] == pytest.approx(m["synthesized"]["miou"])
    assert m["real"]["per_class_iou"]["cloud"] in (0.0, None)


def test_baseline_helpers():
    labels = torch.tensor([[[0, 0], [1, 2]]])
    images = torch.tensor([[[[10, 30], [200, 7]], [[0, 0], [100, 7]], [[4, 8], [50, 7]]]], dtype=torch.uint8)
    data = split.EvalSplit(labels, images, None, ["a"])
    means, counts = split.class_mean_colours(data, 4)
    assert counts.tolist() == [2, 1, 1, 0]
    np.testing.assert_allclose(means[0], [20, 0, 6])
    np.testing.assert_allclose(means[1], [200, 100, 50])
    np.testing.assert_allclose(means[3], [127.5] * 3)  # absent class: grey
    painted = split.paint_baseline(labels, means)
    assert painted.dtype == torch.uint8 and painted.shape == (1, 3, 2, 2)
    assert painted[0, :, 0, 0].tolist() == [20, 0, 6] and painted[0, :, 1, 1].tolist() == [7, 7, 7]


def test_train_segmenter_cli_tiny(tiny_data, tmp_path, capsys):
    out = tmp_path / "seg.pt"
    assert _run(["--train_segmenter", "--dataroot", str(tiny_data), "--out", str(out), "--steps", "2",
                 "--seg_crop", "32", "--seg_width", "4", "--seg_batch", "2", "--half"]) == 0
    sd = torch.load(out, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    model = load_segmenter(out)
    assert next(model.parameters()).dtype == torch.float32 and model.num_classes == 10
    assert model.image_size == (SIZE, SIZE)  # the scale it learned, for eval-time resizing
    text = capsys.readouterr().out
    assert "val (5 real images): mIoU" in text
    with pytest.raises(SpadeganError, match="--out FILE"):
        ecli.main(["--train_segmenter", "--dataroot", str(tiny_data)])
    with pytest.raises(SpadeganError, match="larger than the training images"):
        ecli.main(["--train_segmenter", "--dataroot", str(tiny_data), "--out", str(out), "--steps", "1",
                   "--seg_crop", "96"])


# ---- the shipped segmenter ---------------------------------------------------------------------


def test_shipped_segmenter_segments_real_landscapes():
    from spadegan.data.landscapes import generate_scene
    from spadegan.evaluation.miou import confusion_matrix, scores
    from spadegan.evaluation.segmenter import segment

    if not evaluate.BUILTIN_SEGMENTER.is_file():
        pytest.fail(f"the shipped segmenter {evaluate.BUILTIN_SEGMENTER} is missing")
    assert evaluate.BUILTIN_SEGMENTER.stat().st_size < 3_000_000
    model = load_segmenter(evaluate.BUILTIN_SEGMENTER)
    assert model.num_classes == 10
    # seeds far from the train/val seeds of the dataset it was trained on (0..3199)
    scenes = [generate_scene(50_000 + i, 128) for i in range(8)]
    labels = torch.from_numpy(np.stack([s[0] for s in scenes])).long()
    images = torch.from_numpy(np.stack([s[1] for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    pred = segment(model, images, batch_size=8)
    s = scores(confusion_matrix(pred, labels, 10))
    assert s["pixel_accuracy"] > 0.85, s
    assert s["miou"] > 0.55, s  # 0.675 when written (val mIoU of the shipped file: 0.656)


def test_default_segmenter_only_for_landscapes(tiny_ckpt):
    from spadegan.checkpoint import checkpoint_options

    opt = checkpoint_options(tiny_ckpt)
    assert evaluate.default_segmenter(opt, opt) == (evaluate.BUILTIN_SEGMENTER if evaluate.BUILTIN_SEGMENTER.is_file()
                                                 else None)
    other = opt.replace(dataset_mode="custom", label_nc=13)
    assert evaluate.default_segmenter(other, other) is None


def test_balance_weights():
    freq = np.array([0.5, 0.25, 0.25, 0.0])
    w = scorer_training.balance_weights(freq, 0.5)
    assert w[3] == 0 and w[1] == pytest.approx(w[2]) and w[1] > w[0]
    assert float((freq * w).sum()) == pytest.approx(1.0)  # the average pixel weighs 1
    np.testing.assert_allclose(scorer_training.balance_weights(freq, 0.0)[:3], 1.0)


@pytest.mark.slow
def test_builtin_model_eval_smoke(tiny_data, tmp_path):
    if not (evaluate.builtin_model_dir() / "latest_net_G.pth").is_file():
        pytest.skip(f"the built-in model is not in {evaluate.builtin_model_dir()} yet")
    out = tmp_path / "out"
    assert _run(["--builtin", "--dataroot", str(tiny_data), "--how_many", "2", "--out", str(out),
                 "--no_plots", "--num_visuals", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["segmenter"]["status"] == "ok" and 0.0 <= m["synthesized"]["miou"] <= 1.0


def test_images_are_resized_to_the_segmenters_training_size(tiny_ckpt, tmp_path):
    torch.manual_seed(0)
    seg = SmallSegmenter(10, width=4)
    seg.image_size = (32, 32)
    path = tmp_path / "seg32.pt"
    save_segmenter(seg, path)
    assert load_segmenter(path).image_size == (32, 32)

    def run(out: Path, *extra: str) -> dict:
        assert _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(path), "--out", str(out),
                     "--no_plots", "--num_visuals", "0", "--how_many", "2", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    assert run(tmp_path / "a")["segmenter"]["input_size"] == [32, 32]  # 64 px model, 32 px segmenter
    assert run(tmp_path / "b", "--seg_size", "-1")["segmenter"]["input_size"] == [SIZE, SIZE]
    assert run(tmp_path / "c", "--seg_size", "48")["segmenter"]["input_size"] == [48, 48]


# ---- seg_fd / seg_kid: realism in the segmenter's feature space ------------------------------


def test_no_seg_fd_and_train_split_guard(tiny_data, tiny_ckpt, tiny_seg, tmp_path, capsys):
    def run(out: Path, *extra: str) -> dict:
        assert _run(["--checkpoint", str(tiny_ckpt), "--seg_weights", str(tiny_seg), "--out", str(out),
                     "--no_plots", "--num_visuals", "0", "--how_many", "3", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    off = run(tmp_path / "off", "--no_seg_fd")
    assert off["seg_fd"]["status"] == "off" and off["real"]["seg_fd"] is None
    assert off["synthesized"]["miou"] is not None  # mIoU unaffected
    # evaluating the train split itself: the reference would be the same photos
    same = run(tmp_path / "same", "--phase", "train")
    assert same["seg_fd"]["status"] == "unavailable" and "train split" in same["seg_fd"]["reason"]
    # the reference is as large as the eval set (3 of the 4 train photos)
    on = run(tmp_path / "on")
    assert on["seg_fd"]["reference"]["num_images"] == 3 and on["seg_fd"]["kid_subset_size"] == 3
    capsys.readouterr()


def test_pooled_features_shape_hooks_and_same_as_separate_pass(tiny_seg):
    from spadegan.evaluation.segfd import FEATURE_LAYERS, pooled_features, segmenter_features

    model = load_segmenter(tiny_seg)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    feats = segmenter_features(model, images, batch_size=2)
    assert feats.shape == (5, 30 * model.width) and np.isfinite(feats).all()
    # the std half of each layer is non-negative
    assert (feats[:, model.width:2 * model.width] >= 0).all()
    # features collected during the mIoU forward passes are the same numbers
    with pooled_features(model) as collected:
        scoring.segmentation_scores(model, images, torch.zeros(5, 32, 32, dtype=torch.long), 10, None,
                                 torch.device("cpu"), batch_size=3)
    np.testing.assert_allclose(torch.cat(collected).double().numpy(), feats, rtol=1e-5, atol=1e-6)
    # hooks are gone afterwards
    assert all(not getattr(model, n)._forward_hooks for n in FEATURE_LAYERS)
    # resizing to the segmenter's input size
    assert segmenter_features(model, images, input_size=(48, 48)).shape == feats.shape


def test_seg_distances_zero_for_identical_positive_for_different():
    from spadegan.evaluation.segfd import seg_distances

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6))
    same = seg_distances(a, a.copy())
    assert same["seg_fd"] == pytest.approx(0.0, abs=1e-9)
    # unbiased MMD^2 of a set against itself: self-pairs are left out only within a set, so a
    # little below 0, never above
    assert same["seg_kid_mean"] <= 1e-12
    shifted = seg_distances(a, rng.normal(size=(40, 6)) + 1.0)
    assert shifted["seg_fd"] > 3.0 and shifted["seg_kid_mean"] > 0.01
    assert seg_distances(a[:1], a)["seg_fd"] is None  # one image: no covariance


def _scenes(first_seed: int, n: int, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    from spadegan.data.landscapes import generate_scene

    scenes = [generate_scene(first_seed + i, size) for i in range(n)]
    labels = torch.from_numpy(np.stack([s[0] for s in scenes])).long()
    images = torch.from_numpy(np.stack([s[1] for s in scenes])).permute(0, 3, 1, 2).contiguous()
    return labels, images


def test_shipped_segmenter_seg_fd_ranks_baseline_below_real_photos():
    """Two independent sets of real scenes are closer than real scenes and flat class colours."""
    from spadegan.evaluation.segfd import seg_distances, segmenter_features

    if not evaluate.BUILTIN_SEGMENTER.is_file():
        pytest.fail(f"the shipped segmenter {evaluate.BUILTIN_SEGMENTER} is missing")
    model = load_segmenter(evaluate.BUILTIN_SEGMENTER)
    n = 16  # seeds far from the dataset's 0..3199
    ref_labels, ref_images = _scenes(60_000, n)
    labels, images = _scenes(61_000, n)
    colours, _ = split.class_mean_colours(split.EvalSplit(ref_labels, ref_images, None, []), 10)
    baseline = split.paint_baseline(labels, colours)
    ref, real, flat = (segmenter_features(model, x, batch_size=n) for x in (ref_images, images, baseline))
    assert ref.shape == (n, 480)
    floor, base = seg_distances(ref, real), seg_distances(ref, flat)
    assert base["seg_fd"] > 1.3 * floor["seg_fd"], (floor, base)
    assert base["seg_kid_mean"] > floor["seg_kid_mean"] + 0.005, (floor, base)


@pytest.mark.slow
def test_builtin_model_quality_on_unseen_scenes(tmp_path_factory, tmp_path):
    # a guard against shipping a broken or untrained built-in model: on scenes it never saw
    # it must be read back almost as well as real photos, and look far more like real photos
    # than the flat class-colour baseline (the numbers of benchmarks/README.md, small sample)
    from spadegan.data.landscapes import make_landscapes

    if not (evaluate.builtin_model_dir() / "latest_net_G.pth").is_file():
        pytest.skip(f"the built-in model is not in {evaluate.builtin_model_dir()} yet")
    root = tmp_path_factory.mktemp("unseen")
    make_landscapes(str(root), count=72, size=128, seed=90_000, val_count=32)
    out = tmp_path / "out"
    assert _run(["--builtin", "--dataroot", str(root), "--baseline", "--out", str(out), "--no_plots",
                 "--num_visuals", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    syn, real, base = m["synthesized"], m["real"], m["baseline"]
    # the model draws at 128 px or more (the 64 px v1 fails here); on these 32 scenes v3 (run 2)
    # scores 64.2 mIoU against the real photos' 65.9, 97.4 % (600 scenes: 97.4 %; v3 run 1: 60.4,
    # v2: 64.6: 32 scenes with random styles move the ratio by several points); after one epoch ~13
    assert min(m["dataset"]["size"]) >= 128, m["dataset"]["size"]
    assert syn["miou"] >= 0.55 and syn["miou"] >= 0.92 * real["miou"], (syn["miou"], real["miou"])
    assert syn["pixel_accuracy"] >= 0.85, syn["pixel_accuracy"]
    assert syn["seg_fd"] < 0.6 * base["seg_fd"], (syn["seg_fd"], base["seg_fd"])
