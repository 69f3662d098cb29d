"""The papers' evaluation protocol around the segmenters: accounting, label conventions, the
real-statistics cache, and `spadegan eval --segmenter` end to end on the shared samples.

The networks themselves are pinned by tests/test_paper_{upernet,deeplab,drn}.py; here the
end-to-end runs use fill-rule weights written in the released format (numbers meaningless,
pipeline real).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fixture_dir
from paper_fixtures import write_released
from spadegan.errors import SpadeganError
from spadegan.evaluation import cli as ecli
from spadegan.evaluation.cache import StatsCache, split_digest
from spadegan.evaluation.miou import confusion_matrix
from spadegan.evaluation.paper_scoring import file_ids, paper_scores
from spadegan.evaluation.paper_segmenter import IGNORE, dataset_targets
from spadegan.options import parse


# ---- accounting ------------------------------------------------------------------------------


def _conf(pred: list[int], target: list[int], n: int) -> np.ndarray:
    return confusion_matrix(np.array(pred), np.array(target), n, ignore_index=IGNORE)


def test_ade20k_accounting_counts_absent_classes_as_zero():
    # 4 classes; class 3 never occurs in labels or predictions
    conf = _conf([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], 4)
    all_classes = paper_scores(conf, ignored_pixels=0, miou_over="all_classes")
    present = paper_scores(conf, ignored_pixels=0, miou_over="labelled_classes")
    ious = [1 / 2, 1 / 2, 1.0]  # class 0: I 1, U 2; class 1: I 1, U 2; class 2: I 2, U 2
    assert all_classes["miou"] == pytest.approx(sum(ious) / 4, abs=1e-9)  # CSAIL: mean over all 150
    assert present["miou"] == pytest.approx(sum(ious) / 3, abs=1e-12)  # deeplab / drn: nanmean


def test_labelled_classes_leave_out_classes_only_predicted_union_classes_keep_them():
    # class 2 is predicted but never labelled: deeplab-pytorch's mean IoU leaves it out,
    # fyu/drn's nanmean keeps it (IoU 0); class 3 is neither: out of both
    conf = _conf([0, 2, 1], [0, 0, 1], 4)
    s = paper_scores(conf, 0, "labelled_classes")
    assert s["per_class_iou"][2] == 0.0
    assert s["miou"] == pytest.approx((1 / 2 + 1) / 2)
    assert paper_scores(conf, 0, "union_classes")["miou"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_pixel_accuracy_with_and_without_ignored_pixels():
    conf = _conf([0, 1, 1, 0], [0, 1, 0, IGNORE], 2)  # the ignored pixel is dropped by the matrix
    s = paper_scores(conf, ignored_pixels=1, miou_over="labelled_classes")
    assert s["pixel_accuracy"] == pytest.approx(2 / 3)
    assert s["pixel_accuracy_all_pixels"] == pytest.approx(2 / 4)  # SPADE's Cityscapes convention
    assert s["scored_pixels"] == 3 and s["ignored_pixels"] == 1
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_unknown_accounting_is_an_error():
    with pytest.raises(SpadeganError, match="accounting"):
        paper_scores(np.eye(2), 0, "per_image")


def test_dataset_targets():
    ade = dataset_targets("ade20k", np.array([0, 1, 150]))
    assert ade.tolist() == [IGNORE, 0, 149]
    coco = dataset_targets("cocostuff", np.array([0, 181, 255, 182]))
    assert coco.tolist() == [0, 181, IGNORE, IGNORE]
    city = dataset_targets("cityscapes", np.array([0, 7, 26, 33, 34, -1]))
    assert city.tolist() == [IGNORE, 0, 13, 18, IGNORE, IGNORE]


def test_split_ids_back_to_file_ids():
    coco = parse(["--dataset_mode", "coco", "--label_nc", "182", "--contain_dontcare_label"], train=False)
    assert file_ids(torch.tensor([[0, 181, 182]]), coco).tolist() == [[0, 181, 255]]
    ade = parse(["--dataset_mode", "ade20k", "--label_nc", "150", "--contain_dontcare_label"], train=False)
    assert file_ids(torch.tensor([[0, 1, 150]]), ade).tolist() == [[0, 1, 150]]  # ade20k keeps its ids


# ---- the real-statistics cache --------------------------------------------------------------


def test_stats_cache_round_trip_and_corrupt_entry(tmp_path):
    cache = StatsCache(tmp_path / "c")
    key = cache.key("fid-real", weights_sha256="ab", split=split_digest(torch.zeros(2, 3)))
    assert key != cache.key("fid-real", weights_sha256="ac", split=split_digest(torch.zeros(2, 3)))
    assert key != cache.key("fid-real", weights_sha256="ab", split=split_digest(torch.ones(2, 3)))
    assert cache.array(key) is None
    cache.put_array(key, np.arange(6.0).reshape(2, 3))
    assert np.array_equal(cache.array(key), np.arange(6.0).reshape(2, 3))
    cache.put_record("r", {"miou": 0.5})
    assert cache.record("r") == {"miou": 0.5}
    (tmp_path / "c" / f"{key}.npy").write_bytes(b"not numpy")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.array(key) is None  # recomputed, and said
    assert StatsCache(None).array(key) is None


# ---- spadegan eval --segmenter end to end ---------------------------------------------------

SIZE = 64


def _checkpoint(folder: Path, flags: list[str]) -> Path:
    """A random ngf-8 generator saved as an experiment folder for `flags`' dataset."""
    from spadegan import networks
    from spadegan.checkpoint import save_network
    from spadegan.options import save_options

    opt = parse(["--name", folder.name, "--checkpoints_dir", str(folder.parent), "--crop_size", str(SIZE),
                 "--load_size", str(SIZE), "--ngf", "8", "--gpu_ids", "-1", "--no_instance", *flags], train=True)
    save_options(opt, folder)
    torch.manual_seed(0)
    save_network(networks.define_G(opt), "G", "latest", folder)
    return folder


@pytest.fixture(scope="module")
def seg_files(shared, tmp_path_factory):
    """Fill-rule weights of the three paper segmenters, written as their released files."""
    root = tmp_path_factory.mktemp("paper_weights")
    out = {}
    for name in ("deeplabv2_cocostuff", "upernet101_ade20k"):
        out[name] = write_released(fixture_dir(shared, "segmenters", name), root / name)
    return out


def _eval(argv: list[str]) -> dict:
    assert ecli.main(argv + ["--num_threads", "1", "--no_plots", "--num_visuals", "0"]) == 0
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "metrics.json").read_text())


def test_eval_deeplab_on_the_coco_sample(shared, seg_files, tmp_path):
    coco = shared / "data" / "coco_stuff_sample"
    ckpt = _checkpoint(tmp_path / "ckpt" / "coco", ["--dataset_mode", "coco", "--dataroot", str(coco)])
    files = [str(p) for p in seg_files["deeplabv2_cocostuff"]]
    cache = tmp_path / "cache"
    argv = ["--checkpoint", str(ckpt), "--segmenter", "deeplabv2_cocostuff", "--segmenter_weights", *files,
            "--how_many", "2", "--batch_size", "2", "--cache_dir", str(cache)]
    m = _eval(argv + ["--out", str(tmp_path / "a")])
    protocol = m["segmenter"]["protocol"]
    assert protocol["segmenter"] == "deeplabv2_cocostuff" and protocol["resolution"] == "model"
    assert protocol["accounting"]["miou_over"] == "labelled_classes"
    assert len(protocol["files_sha256"]) == 64
    for row in ("synthesized", "real"):
        r = m[row]
        assert 0 <= r["miou"] <= 1 and 0 <= r["pixel_accuracy_all_pixels"] <= r["pixel_accuracy"] <= 1
        assert r["scored_pixels"] + r["ignored_pixels"] == 2 * SIZE * SIZE
        assert len(r["per_class_iou"]) == 182 and "person" in r["per_class_iou"]
    assert m["seg_fd"]["status"] == "off"
    assert m["cache"]["reused"] == []
    again = _eval(argv + ["--out", str(tmp_path / "b")])  # the real photos' scores come from the cache
    assert len(again["cache"]["reused"]) == 1
    assert again["real"]["miou"] == m["real"]["miou"]
    assert again["synthesized"]["miou"] == m["synthesized"]["miou"]


def test_eval_at_the_label_maps_size(shared, seg_files, tmp_path):
    """--seg_resolution label: images upsampled to each label file's own size (a custom-mode copy
    of two COCO pairs at 128x96, so the model's 64x64 images are upsampled)."""
    from PIL import Image

    coco = shared / "data" / "coco_stuff_sample"
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir(), images.mkdir()
    for path in sorted((coco / "val_label").glob("*.png"))[:2]:
        Image.open(path).resize((128, 96), Image.NEAREST).save(labels / path.name)
        Image.open(coco / "val_img" / f"{path.stem}.jpg").convert("RGB").resize((128, 96)).save(
            images / f"{path.stem}.png")
    data = ["--dataset_mode", "custom", "--label_dir", str(labels), "--image_dir", str(images),
            "--label_nc", "182", "--contain_dontcare_label"]
    ckpt = _checkpoint(tmp_path / "ckpt" / "custom", data)
    files = [str(p) for p in seg_files["deeplabv2_cocostuff"]]
    argv = ["--checkpoint", str(ckpt), "--segmenter", "deeplabv2_cocostuff", "--segmenter_weights", *files,
            "--label_dir", str(labels), "--image_dir", str(images), "--no_cache"]
    model = _eval(argv + ["--out", str(tmp_path / "m")])
    full = _eval(argv + ["--seg_resolution", "label", "--out", str(tmp_path / "l")])
    assert full["segmenter"]["protocol"]["resolution"] == "label"
    assert full["real"]["scored_pixels"] + full["real"]["ignored_pixels"] == 2 * 128 * 96
    assert model["real"]["scored_pixels"] + model["real"]["ignored_pixels"] == 2 * SIZE * SIZE
    unlabelled = sum((np.asarray(Image.open(p)) == 255).sum() for p in labels.glob("*.png"))
    assert full["real"]["ignored_pixels"] == unlabelled  # 255 read from the files, ignored


def test_eval_upernet_on_the_ade20k_sample(shared, seg_files, tmp_path):
    ade = shared / "data" / "ade20k_sample"
    ckpt = _checkpoint(tmp_path / "ckpt" / "ade", ["--dataset_mode", "ade20k", "--dataroot", str(ade),
                                                   "--label_nc", "150", "--contain_dontcare_label"])
    files = [str(p) for p in seg_files["upernet101_ade20k"]]
    m = _eval(["--checkpoint", str(ckpt), "--segmenter", "upernet101_ade20k", "--segmenter_weights", *files,
               "--segmenter_multiscale", "off", "--segmenter_preprocessing", "bgr_legacy", "--no_cache",
               "--out", str(tmp_path / "a")])
    protocol = m["segmenter"]["protocol"]
    assert protocol["preprocessing"] == "bgr_legacy" and protocol["multiscale"] is False
    assert protocol["accounting"]["miou_over"] == "all_classes"
    assert m["dataset"]["num_images"] == 3
    assert len(m["synthesized"]["per_class_iou"]) == 150


def test_eval_segmenter_flag_errors(shared, seg_files, tmp_path):
    coco = shared / "data" / "coco_stuff_sample"
    ckpt = _checkpoint(tmp_path / "ckpt" / "coco", ["--dataset_mode", "coco", "--dataroot", str(coco)])
    base = ["--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--how_many", "1"]
    with pytest.raises(SpadeganError, match="--segmenter_weights"):
        ecli.main(base + ["--segmenter", "deeplabv2_cocostuff"])
    with pytest.raises(SpadeganError, match="deeplabv2_resnet101_msc-cocostuff164k-100000.pth"):
        ecli.main(base + ["--segmenter", "deeplabv2_cocostuff", "--segmenter_weights", str(tmp_path / "nope.pth")])
    deeplab = str(seg_files["deeplabv2_cocostuff"][0])
    with pytest.raises(SpadeganError, match="takes 1 weight file"):
        ecli.main(base + ["--segmenter", "deeplabv2_cocostuff", "--segmenter_weights", deeplab, deeplab])
    with pytest.raises(SpadeganError, match="invalid choice"):
        ecli.main(base + ["--segmenter", "segformer"])
    with pytest.raises(SpadeganError, match="scores cityscapes label maps.*--dataset_mode coco"):
        ecli.main(base + ["--segmenter", "drn105_cityscapes", "--segmenter_weights", str(tmp_path / "x.pth")])


def test_cocostuff_accounting_equals_deeplab_pytorch_metric_scores(shared):
    """The fixture's `metric.scores([label.png], [pred], 182)` from the unmodified reference."""
    from PIL import Image

    folder = fixture_dir(shared, "segmenters", "deeplabv2_cocostuff")
    reference = json.loads((folder / "spec.json").read_text())["reference_scores_pred_vs_label"]
    pred = torch.load(folder / "expected.pt", weights_only=True)["pred"][0].numpy()
    target = dataset_targets("cocostuff", np.asarray(Image.open(folder / "label.png")))
    conf = confusion_matrix(pred, target, 182, ignore_index=IGNORE)
    s = paper_scores(conf, int((target == IGNORE).sum()), "labelled_classes")
    assert s["miou"] == pytest.approx(reference["Mean IoU"], rel=1e-9)
    assert s["pixel_accuracy"] == pytest.approx(reference["Pixel Accuracy"], rel=1e-9)
    assert s["mean_accuracy"] == pytest.approx(reference["Mean Accuracy"], rel=1e-9)
    assert s["frequency_weighted_iou"] == pytest.approx(reference["Frequency Weighted IoU"], rel=1e-9)
    # the nanmean over classes labelled OR predicted (DRN's rule) would not equal it here
    assert paper_scores(conf, 0, "union_classes")["miou"] != pytest.approx(reference["Mean IoU"], rel=1e-3)
