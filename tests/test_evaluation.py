"""Tests for spadegan.evaluation: Frechet distance, KID, mIoU, FID Inception, segmenter, plots.

The Inception network is exercised with random weights only (the real weights file is never
downloaded); those tests check structure, strict loading and the "unavailable" path, not
FID values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from spadegan.errors import SpadeganError
from spadegan.evaluation import (
    FID_WEIGHTS_FILENAME,
    FIDInceptionV3,
    FIDUnavailable,
    SmallSegmenter,
    activation_statistics,
    compute_fid_kid,
    confusion_matrix,
    extract_features,
    fid_from_features,
    frechet_distance,
    kid,
    load_fid_inception,
    load_segmenter,
    parse_loss_log,
    plot_loss_log,
    plot_metrics,
    save_segmenter,
    scores,
    segment,
    train_segmenter,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The CI/dev machine has 2 shared cores; several intra-op threads thrash under load
    # (measured 5-10x slower), while these tiny workloads gain nothing from them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ Frechet distance


def _random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def _reference_fd(mu1, s1, mu2, s2) -> float:
    # Independent route: the eigenvalues of S1 S2 equal those of S1^1/2 S2 S1^1/2, which are
    # real and >= 0, so Tr sqrt(S1 S2) is the sum of their square roots.
    ev = np.linalg.eigvals(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_identical_is_zero(method):
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=8), _random_cov(rng, 8)
    assert frechet_distance(mu, s, mu, s, method=method) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_diagonal_closed_form(method):
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_one_dimensional():
    # N(0, 2^2) vs N(3, 5^2): (0-3)^2 + (2-5)^2 = 18.
    assert frechet_distance([0.0], [[4.0]], [3.0], [[25.0]]) == pytest.approx(18.0)
    assert frechet_distance(np.zeros(1), np.array([[4.0]]), np.array([3.0]), np.array([[25.0]]),
                            method="eigh") == pytest.approx(18.0)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_matches_independent_formula(method):
    rng = np.random.default_rng(1)
    for d in (2, 5, 16):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(
            _reference_fd(mu1, s1, mu2, s2), rel=1e-7, abs=1e-9)


def test_frechet_singular_covariances_stay_real_and_agree():
    # Fewer samples than dimensions (the usual small-eval case) gives singular covariances.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 20)), rng.normal(size=(6, 20)) + 0.5
    (m1, s1), (m2, s2) = activation_statistics(x), activation_statistics(y)
    a = frechet_distance(m1, s1, m2, s2, method="sqrtm")
    b = frechet_distance(m1, s1, m2, s2, method="eigh")
    assert math.isfinite(a) and a > 0
    assert a == pytest.approx(b, rel=1e-3)


@pytest.mark.parametrize("n1,n2", [(5, 7), (7, 5), (4, 60), (60, 4), (60, 50)])
def test_fid_from_features_low_rank_route_matches_full(n1, n2):
    # d = 12: sets with <= 12 rows take the exact low-rank route, larger ones the full one.
    rng = np.random.default_rng(n1 * 100 + n2)
    x, y = rng.normal(size=(n1, 12)), 1.5 * rng.normal(size=(n2, 12)) + 0.2
    (m1, s1), (m2, s2) = activation_statistics(x), activation_statistics(y)
    assert fid_from_features(x, y) == pytest.approx(_reference_fd(m1, s1, m2, s2), rel=1e-6)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_rejects_mismatched_shapes_and_methods():
    with pytest.raises(SpadeganError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(SpadeganError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="magic")


def test_activation_statistics_matches_numpy():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(50, 4))
    mu, sigma = activation_statistics(torch.from_numpy(f).float())
    np.testing.assert_allclose(mu, f.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), atol=1e-5)
    with pytest.raises(SpadeganError, match="at least 2"):
        activation_statistics(f[:1])


# ------------------------------------------------------------------ KID


def _mmd2_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_bruteforce_unbiased_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    # One subset of the full size is a permutation of each set; MMD ignores order.
    mean, std = kid(x, y, num_subsets=1, subset_size=7)
    assert mean == pytest.approx(_mmd2_bruteforce(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_near_zero_for_identical_and_positive_for_shifted():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 16))
    same_mean, _ = kid(x, x.copy(), num_subsets=20, subset_size=100)
    shifted_mean, shifted_std = kid(x, x + 1.0, num_subsets=20, subset_size=100)
    assert abs(same_mean) < 0.05 * shifted_mean
    assert shifted_mean > 0 and shifted_std >= 0
    with pytest.raises(SpadeganError, match="at least 2"):
        kid(x[:1], x, num_subsets=2, subset_size=10)


# ------------------------------------------------------------------ mIoU


def test_miou_perfect_prediction():
    t = torch.tensor([[0, 1], [2, 2]])
    s = scores(confusion_matrix(t, t, num_classes=3))
    assert s["miou"] == 1.0 and s["pixel_accuracy"] == 1.0 and s["mean_accuracy"] == 1.0


def test_miou_half_right():
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 0])
    conf = confusion_matrix(pred, target, num_classes=2)
    np.testing.assert_array_equal(conf, [[1, 1], [1, 1]])
    s = scores(conf)
    # Each class: intersection 1, union 3.
    assert s["per_class_iou"] == pytest.approx([1 / 3, 1 / 3])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["pixel_accuracy"] == pytest.approx(0.5)
    assert s["mean_accuracy"] == pytest.approx(0.5)


def test_miou_ignore_index_and_absent_classes_and_accumulation():
    target = torch.tensor([[0, 0, 255], [1, 1, 255]])
    pred = torch.tensor([[0, 0, 3], [1, 0, 3]])  # predictions on ignored pixels do not count
    conf = confusion_matrix(pred, target, num_classes=4, ignore_index=255)
    assert conf.sum() == 4
    s = scores(conf)
    # Classes 2 and 3 appear in neither the (kept) prediction nor the target: excluded.
    assert math.isnan(s["per_class_iou"][2]) and math.isnan(s["per_class_iou"][3])
    assert s["per_class_iou"][0] == pytest.approx(2 / 3)  # tp 2, union 3
    assert s["per_class_iou"][1] == pytest.approx(1 / 2)  # tp 1, union 2
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # A class predicted but absent from the target counts as IoU 0.
    conf2 = confusion_matrix(np.array([2]), np.array([0]), 4, conf=conf)
    assert conf2 is conf and conf.sum() == 5
    s2 = scores(conf)
    assert s2["per_class_iou"][2] == 0.0 and math.isnan(s2["per_class_accuracy"][2])


def test_miou_errors_and_empty():
    with pytest.raises(SpadeganError, match="outside"):
        confusion_matrix(np.array([0]), np.array([7]), num_classes=3)
    with pytest.raises(SpadeganError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((3, 3), int), num_classes=3)
    s = scores(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(s["miou"]) and math.isnan(s["pixel_accuracy"])


# ------------------------------------------------------------------ FID Inception


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    path = tmp_path_factory.mktemp("fid") / "random_inception.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_inception_state_dict_layout(random_inception_file):
    _, model = random_inception_file
    sd = model.state_dict()
    # 94 conv+BN units x (conv.weight + 5 BN tensors) + fc weight/bias.
    assert len(sd) == 94 * 6 + 2
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert sd["Mixed_7b.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["Mixed_5b.branch_pool.bn.running_var"].shape == (32,)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert "AuxLogits.fc.weight" not in sd
    assert sum(p.numel() for p in model.parameters()) == 23_850_960


def test_inception_strict_load_roundtrip(random_inception_file, tmp_path):
    path, model = random_inception_file
    loaded = load_fid_inception(path)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # Files from old PyTorch versions lack num_batches_tracked; that alone is tolerated.
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    old_style = tmp_path / "old.pth"
    torch.save(sd, old_style)
    load_fid_inception(old_style)
    # A missing weight or a wrong shape (torchvision's 1000 classes) is not the FID network.
    del sd["Mixed_6e.branch1x1.conv.weight"]
    sd["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(sd, tmp_path / "wrong.pth")
    with pytest.raises(SpadeganError, match="wrong.pth") as info:
        load_fid_inception(tmp_path / "wrong.pth")
    assert "Mixed_6e.branch1x1.conv.weight" in str(info.value) and "fc.weight" in str(info.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SpadeganError, match="junk.pth"):
        load_fid_inception(tmp_path / "junk.pth")


def test_inception_unavailable_without_weights(tmp_path):
    with pytest.raises(FIDUnavailable, match=FID_WEIGHTS_FILENAME):
        load_fid_inception(None)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FIDUnavailable, match="nope.pth"):
        load_fid_inception(missing)

    def never_iterated():
        raise AssertionError("images must not be read when FID is unavailable")
        yield  # pragma: no cover

    for weights in (None, missing):
        res = compute_fid_kid(never_iterated(), never_iterated(), weights, "cpu", 4)
        assert res["status"] == "unavailable"
        assert res["fid"] is None and res["kid_mean"] is None
        assert FID_WEIGHTS_FILENAME in res["reason"]
    assert issubclass(FIDUnavailable, SpadeganError)


def test_inception_features_and_end_to_end(random_inception_file, monkeypatch):
    import spadegan.evaluation.fid as fid_module

    path, _ = random_inception_file
    seen = []
    real_extract = fid_module.extract_features

    def spy(*args, **kwargs):  # observe the features without an extra (slow) forward
        feats = real_extract(*args, **kwargs)
        seen.append(feats)
        return feats

    monkeypatch.setattr(fid_module, "extract_features", spy)
    torch.manual_seed(1)
    real = torch.rand(2, 3, 48, 40) * 2 - 1  # generator range [-1, 1]
    # Two batches of one image each, re-batched to one forward of 2.
    fake = [torch.rand(1, 3, 48, 40) * 2 - 1, torch.rand(1, 3, 48, 40) * 2 - 1]
    res = compute_fid_kid([real], fake, path, "cpu", batch_size=2,
                          kid_subsets=3, kid_subset_size=2)
    assert [f.shape for f in seen] == [(2, 2048), (2, 2048)]
    assert all(np.isfinite(f).all() for f in seen)
    assert res["status"] == "ok" and res["reason"] is None
    assert res["num_real"] == 2 and res["num_fake"] == 2
    assert math.isfinite(res["fid"]) and res["fid"] >= 0
    assert math.isfinite(res["kid_mean"]) and res["notes"]


def test_extract_features_batching_and_input_conversion():
    calls = []

    def stub(x):  # stands in for the network: records batch shapes, returns channel means
        calls.append(tuple(x.shape))
        return x.mean(dim=(2, 3))

    items = [
        torch.full((3, 3, 8, 8), -1.0),                  # float in [-1, 1] -> 0
        torch.full((1, 3, 8, 8), 255, dtype=torch.uint8),  # uint8 -> 1
        np.full((6, 5, 3), 255, dtype=np.uint8),          # H x W x 3 array, other size
        (torch.ones(2, 3, 6, 5), torch.zeros(2, 6, 5)),   # (images, labels) pair
    ]
    feats = extract_features(stub, items, batch_size=2)
    assert calls == [(2, 3, 8, 8), (2, 3, 8, 8), (3, 3, 6, 5)]
    np.testing.assert_allclose(feats[:, 0], [0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(SpadeganError, match="B x 3 x H x W"):
        extract_features(stub, [torch.zeros(1, 4, 8, 8)])


# ------------------------------------------------------------------ segmenter


def _two_class_data(n: int = 4, size: int = 16):
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        labels[i, y:y + size // 2, x:x + size // 2] = 1
    noise = 0.1 * torch.randn(n, 3, size, size, generator=g)
    images = torch.where(labels[:, None].bool(), 0.6, -0.6) + noise
    return images.clamp(-1, 1), labels


def test_segmenter_overfits_tiny_two_class_example(tmp_path):
    images, labels = _two_class_data()
    model = train_segmenter([(images, labels)], num_classes=2, steps=25, lr=1e-2,
                            device="cpu", progress=False, width=8)
    pred = segment(model, images)
    assert pred.shape == labels.shape and pred.dtype == torch.long
    acc = (pred == labels).float().mean().item()
    assert acc > 0.97, acc

    path = tmp_path / "seg" / "segmenter.pt"
    save_segmenter(model, path)
    again = load_segmenter(path)
    assert (again.num_classes, again.width) == (2, 8)
    assert torch.equal(segment(again, images), pred)


def test_segmenter_shapes_and_errors(tmp_path):
    model = SmallSegmenter(10)
    assert 500_000 <= sum(p.numel() for p in model.parameters()) <= 2_000_000
    small = SmallSegmenter(3, width=4)
    out = segment(small, torch.zeros(2, 3, 13, 21))  # sizes not divisible by 8
    assert out.shape == (2, 13, 21)
    with pytest.raises(SpadeganError, match="does not exist"):
        load_segmenter(tmp_path / "absent.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(SpadeganError, match="not a spadegan segmenter"):
        load_segmenter(tmp_path / "other.pt")
    bad = [(torch.zeros(1, 3, 8, 8), torch.full((1, 8, 8), 5))]
    with pytest.raises(SpadeganError, match="outside"):
        train_segmenter(bad, num_classes=2, steps=1, progress=False, width=4)
    with pytest.raises(SpadeganError, match="no batches"):
        train_segmenter(iter([]), num_classes=2, steps=1, progress=False, width=4)


# ------------------------------------------------------------------ plots

_LOG = """================ Training Loss (Mon Jan  1 00:00:00 2024) ================
(epoch: 1, iters: 100, time: 0.123) GAN: 0.812 GAN_Feat: 1.234 VGG: 2.345 D_Fake: 0.456 D_real: 0.567 
(epoch: 1, iters: 200, time: 0.120) GAN: 0.700 GAN_Feat: 1.100 VGG: 2.100 KLD: 0.050 D_Fake: 0.400 D_real: 0.500 
some unrelated line
(epoch: 2, iters: 100, time: 0.119) GAN: 0.650 GAN_Feat: 1.000 VGG: 2.000 KLD: 0.040 D_Fake: 0.390 D_real: 0.480 
(epoch: 2, iters: 200, time: 0.118) GAN: 0.600 GAN_Feat: 0.950 VGG: 1.900 KLD: 0.030 D_Fake: 0.380 D_real: 0.470 
"""


def _assert_png(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_plot_loss_log_writes_png(tmp_path):
    log = tmp_path / "loss_log.txt"
    log.write_text(_LOG)
    entries = parse_loss_log(log)
    assert len(entries) == 4
    assert entries[1]["losses"]["KLD"] == pytest.approx(0.05)
    assert entries[0]["losses"]["D_real"] == pytest.approx(0.567)
    assert (entries[2]["epoch"], entries[2]["iters"]) == (2, 100)
    out = plot_loss_log(log, tmp_path / "plots" / "losses.png")
    _assert_png(out)


def test_plot_loss_log_errors(tmp_path):
    with pytest.raises(SpadeganError, match="does not exist"):
        plot_loss_log(tmp_path / "missing.txt", tmp_path / "x.png")
    empty = tmp_path / "empty.txt"
    empty.write_text("================ Training Loss ================\n")
    with pytest.raises(SpadeganError, match="no loss lines"):
        plot_loss_log(empty, tmp_path / "x.png")


def test_plot_metrics_writes_png(tmp_path):
    history = [
        {"epoch": 1, "miou": 0.20, "pixel_accuracy": 0.5, "fid": None},
        {"epoch": 2, "miou": 0.30, "pixel_accuracy": 0.6, "fid": None, "per_class_iou": [0.1]},
        {"epoch": 3, "miou": 0.35, "pixel_accuracy": 0.7, "fid": float("nan")},
    ]
    _assert_png(plot_metrics(history, tmp_path / "metrics.png"))
    with pytest.raises(SpadeganError, match="empty"):
        plot_metrics([], tmp_path / "m.png")
    with pytest.raises(SpadeganError, match="'epoch'"):
        plot_metrics([{"miou": 1.0}], tmp_path / "m.png")
