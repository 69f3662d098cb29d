"""DeepLabV2-ResNet101 MSC (COCO-Stuff) against kazuto1011/deeplab-pytorch's own outputs.

The fixture (../shared/fixtures/segmenters/deeplabv2_cocostuff, see its README.md) holds the
reference's logits / probabilities / class map for one COCO val image, computed with weights from
a fill rule; `write_released` rebuilds the released file from that rule and the tests load it
only through the public loader `paper_segmenter.load`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fixture_dir
from paper_fixtures import write_released
from spadegan.errors import SpadeganError
from spadegan.evaluation import miou, paper_segmenter
from spadegan.evaluation.paper import deeplab

NAME = "deeplabv2_cocostuff"
FILE = "deeplabv2_resnet101_msc-cocostuff164k-100000.pth"
# README's suggested tolerances (float32 here vs the reference's run)
LOGITS_ATOL, PROBS_SUB8_ATOL, PROBS_F16_ATOL = 2e-2, 1e-3, 2e-3


@pytest.fixture(scope="module")
def fixture(shared: Path) -> Path:
    return fixture_dir(shared, "segmenters", NAME)


@pytest.fixture(scope="module")
def expected(fixture: Path) -> dict[str, torch.Tensor]:
    return torch.load(fixture / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def image(fixture: Path) -> torch.Tensor:
    """input.png as a uint8 RGB (3, H, W) tensor."""
    rgb = np.array(Image.open(fixture / "input.png").convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def released(fixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = write_released(fixture, tmp_path_factory.mktemp("deeplab_released"))
    assert path.name == FILE
    return path


@pytest.fixture(scope="module")
def segmenter(released: Path) -> paper_segmenter.PaperSegmenter:
    return paper_segmenter.load(NAME, [released])


@pytest.fixture(scope="module")
def probs(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor) -> torch.Tensor:
    threads = torch.get_num_threads()  # module fixtures run before conftest's one-thread fixture
    torch.set_num_threads(1)
    try:
        return segmenter.probabilities(image)
    finally:
        torch.set_num_threads(threads)


def _probs_mismatch(probs: torch.Tensor, expected: dict[str, torch.Tensor]) -> float:
    return float((probs[:, ::8, ::8] - expected["probs_sub8"][0]).abs().max())


def _write_variant(fixture: Path, tmp_path: Path, **kwargs) -> Path:
    (path,) = write_released(fixture, tmp_path, **kwargs)
    return path


# ---- parity -------------------------------------------------------------------------------------

def test_probabilities_match_reference(probs: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    assert probs.dtype == torch.float32 and probs.shape == (182, 96, 128)
    assert torch.allclose(probs.sum(0), torch.ones(96, 128), atol=1e-5)
    assert _probs_mismatch(probs, expected) <= PROBS_SUB8_ATOL
    assert float((probs - expected["probs"][0].float()).abs().max()) <= PROBS_F16_ATOL


def test_logits_match_reference(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                expected: dict[str, torch.Tensor]) -> None:
    logits = segmenter.network.logits(image[None])
    assert logits.dtype == torch.float32 and logits.shape == (1, 182, 13, 17)
    assert float((logits - expected["logits"]).abs().max()) <= LOGITS_ATOL


def test_default_predict_is_msc_argmax(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                       probs: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    pred = segmenter.predict(image)
    assert pred.dtype == torch.int64 and pred.shape == (96, 128)
    # smallest top1-top2 gap is 0.048 (README): no near-ties, the map must be equal
    assert torch.equal(pred, expected["pred"][0])
    assert torch.equal(pred, probs.argmax(0))
    assert torch.equal(segmenter.predict(image, multiscale=True), pred)


def test_single_scale_is_the_base_network_alone(segmenter: paper_segmenter.PaperSegmenter,
                                                image: torch.Tensor) -> None:
    net = segmenter.network
    msc_logits, base_logits = net.logits(image[None]), net.logits(image[None], multiscale=False)
    assert base_logits.shape == msc_logits.shape
    assert bool((msc_logits >= base_logits).all())  # MSC = element-wise max over base + 2 scales
    assert not torch.allclose(msc_logits, base_logits)
    pred = segmenter.predict(image, multiscale=False)
    assert pred.dtype == torch.int64 and pred.shape == (96, 128)
    assert torch.equal(pred, net.probabilities(image[None], multiscale=False)[0].argmax(0))


def test_batch_of_two_equals_singles(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                     probs: torch.Tensor) -> None:
    other = image.flip(-1).roll(17, dims=-2).contiguous()
    batch = torch.stack([image, other])
    batch_probs = segmenter.network.probabilities(batch)
    assert batch_probs.shape == (2, 182, 96, 128)
    # logits reach |2000|: float rounding moves them by ~1e-3 and the probabilities by ~5e-5
    assert torch.allclose(batch_probs[0], probs, atol=2e-4)
    assert torch.allclose(batch_probs[1], segmenter.probabilities(other), atol=2e-4)
    preds = segmenter.predict_batch(batch)
    assert preds.dtype == torch.int64 and preds.shape == (2, 96, 128)
    assert torch.equal(preds, batch_probs.argmax(1))


def test_other_sizes(segmenter: paper_segmenter.PaperSegmenter) -> None:
    odd = torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert segmenter.probabilities(odd).shape == (182, 45, 61)
    assert segmenter.network.logits(odd[None]).shape == (1, 182, 6, 8)
    assert segmenter.predict(odd[:, :2, :3]).shape == (2, 3)
    with pytest.raises(SpadeganError, match="at least 2x2 pixels, got 1x5"):
        segmenter.predict(odd[:, :1, :5])


def test_file_without_bn_counters_loads(fixture: Path, tmp_path: Path, image: torch.Tensor,
                                        segmenter: paper_segmenter.PaperSegmenter) -> None:
    path = _write_variant(fixture, tmp_path, drop_suffixes=("num_batches_tracked",))
    assert not any(k.endswith("num_batches_tracked") for k in torch.load(path, weights_only=True))
    again = paper_segmenter.load(NAME, [path])
    path.unlink()
    assert torch.equal(again.probabilities(image), segmenter.probabilities(image))


# ---- sensitivity: the parity above would catch a wrong input convention ----------------------

def test_rgb_order_does_not_match(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                  expected: dict[str, torch.Tensor]) -> None:
    wrong = segmenter.probabilities(image.flip(0).contiguous())  # the network then sees RGB
    assert _probs_mismatch(wrong, expected) > 100 * PROBS_SUB8_ATOL


def test_wrong_mean_does_not_match(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                   expected: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deeplab, "MEAN_BGR", tuple(reversed(deeplab.MEAN_BGR)))  # RGB-ordered means
    assert _probs_mismatch(segmenter.probabilities(image), expected) > 10 * PROBS_SUB8_ATOL


def test_floor_mode_pool_does_not_match(segmenter: paper_segmenter.PaperSegmenter, image: torch.Tensor,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = segmenter.network.msc.base.layer1.pool
    monkeypatch.setattr(pool, "ceil_mode", False)
    assert segmenter.network.logits(image[None]).shape[2:] == (12, 16)  # reference: 13x17


# ---- wrong files --------------------------------------------------------------------------------

def test_missing_file_names_the_release(tmp_path: Path) -> None:
    with pytest.raises(SpadeganError, match=FILE):
        paper_segmenter.load(NAME, [tmp_path / FILE])
    with pytest.raises(SpadeganError, match="takes 1 weight file"):
        paper_segmenter.load(NAME, [tmp_path / "a.pth", tmp_path / "b.pth"])


def test_other_networks_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "drn-d-105_ms_cityscapes.pth"  # DRN-style keys: nothing under base.
    torch.save({"base.0.weight": torch.zeros(16, 3, 7, 7), "seg.weight": torch.zeros(19, 512, 1, 1)}, path)
    with pytest.raises(SpadeganError, match=f"lacks 528 key.*unknown key.*expected the released file {FILE}"):
        paper_segmenter.load(NAME, [path])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SpadeganError, match=str(path.name)):
        paper_segmenter.load(NAME, [path])


def test_missing_key_is_named(fixture: Path, tmp_path: Path) -> None:
    path = _write_variant(fixture, tmp_path, drop_suffixes=("base.layer4.block7.conv3x3.bn.running_var",))
    with pytest.raises(SpadeganError, match=f"lacks 1 key.*layer4.block7.conv3x3.bn.running_var.*{FILE}"):
        paper_segmenter.load(NAME, [path])
    path.unlink()


def test_wrong_shape_is_named(fixture: Path, tmp_path: Path) -> None:
    # the VOC12 release of the same model has 21 classes
    voc = {f"base.aspp.c{i}.{p}": (lambda s: torch.zeros([21] + s[1:])) for i in range(4) for p in ("weight", "bias")}
    path = _write_variant(fixture, tmp_path, exceptions=voc)
    with pytest.raises(SpadeganError, match=rf"aspp.c0.weight has shape \(21, 2048, 3, 3\), expected \(182, .*{FILE}"):
        paper_segmenter.load(NAME, [path])
    path.unlink()


def test_older_release_layout_is_explained(tmp_path: Path) -> None:
    path = tmp_path / FILE  # issue #26 era: MSC.scale, `proj` shortcuts, aspp.stages
    torch.save({"scale.layer1.conv1.conv.weight": torch.zeros(64, 3, 7, 7),
                "scale.layer2.block1.proj.conv.weight": torch.zeros(256, 64, 1, 1),
                "scale.aspp.stages.c0.weight": torch.zeros(182, 2048, 3, 3)}, path)
    with pytest.raises(SpadeganError, match="older deeplab-pytorch file.*does not load either.*" + FILE):
        paper_segmenter.load(NAME, [path])


def test_unknown_preprocessing_and_float_input(segmenter: paper_segmenter.PaperSegmenter, released: Path,
                                               image: torch.Tensor) -> None:
    assert deeplab.PREPROCESSINGS == ("bgr_caffe",) and segmenter.preprocessing == "bgr_caffe"
    with pytest.raises(SpadeganError, match="rgb_imagenet"):
        paper_segmenter.load(NAME, [released], preprocessing="rgb_imagenet")
    with pytest.raises(SpadeganError, match="uint8"):
        segmenter.network.probabilities(image[None].float())


# ---- the reference's scores (libs/utils/metric.py::scores) from our confusion matrix --------------

def _reference_accounting(conf: np.ndarray) -> dict[str, float]:
    """metric.scores: classes without ground-truth pixels are left out of the means."""
    hist = conf.astype(np.float64)
    tp, gt, predicted = np.diag(hist), hist.sum(axis=1), hist.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (gt + predicted - tp)
        accuracy = tp / gt
    present = gt > 0
    freq = gt / hist.sum()
    return {"Pixel Accuracy": tp.sum() / hist.sum(), "Mean Accuracy": float(np.nanmean(accuracy[present])),
            "Frequency Weighted IoU": float((freq[present] * iou[present]).sum()),
            "Mean IoU": float(np.nanmean(iou[present]))}


def test_reference_scores_from_confusion_matrix(fixture: Path, expected: dict[str, torch.Tensor]) -> None:
    label = np.array(Image.open(fixture / "label.png"))
    targets = paper_segmenter.dataset_targets("cocostuff", label)
    assert np.array_equal(targets, label)  # COCO-Stuff 164k: ids are the classes, 255 = unlabelled
    conf = miou.confusion_matrix(expected["pred"][0], targets, deeplab.NUM_CLASSES, ignore_index=255)
    assert conf.sum() == int((label != 255).sum())
    reference = json.loads((fixture / "spec.json").read_text())["reference_scores_pred_vs_label"]
    ours = _reference_accounting(conf)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
