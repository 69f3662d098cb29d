"""UperNet-ResNet101 ADE20K segmenter (evaluation/paper/upernet.py) against the reference's outputs.

Fixture: ../shared/fixtures/segmenters/upernet101_ade20k (README.md there): the released files
rebuilt from the fill rule, loaded only through the public `paper_segmenter.load`, on a 96x128
ADE20K crop; expected.pt holds the reference's single-scale scores, prediction and encoder
feature statistics.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import fixture_dir
from paper_fixtures import write_released
from spadegan.errors import SpadeganError
from spadegan.evaluation import paper_segmenter
from spadegan.evaluation.paper import upernet

NAME = "upernet101_ade20k"
#: predictions may differ only where the reference's top1-top2 probability gap is below this
NEAR_TIE = 1e-4


@pytest.fixture(scope="module")
def fixture(shared: Path) -> Path:
    return fixture_dir(shared, "segmenters", NAME)


@pytest.fixture(scope="module")
def released(fixture: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_released(fixture, tmp_path_factory.mktemp("upernet_released"))


@pytest.fixture(scope="module")
def segmenter(released: list[Path]) -> paper_segmenter.PaperSegmenter:
    return paper_segmenter.load(NAME, released)


@pytest.fixture(scope="module")
def image(fixture: Path) -> np.ndarray:
    return np.array(Image.open(fixture / "input.png").convert("RGB"))  # (96, 128, 3) uint8


@pytest.fixture(scope="module")
def expected(fixture: Path) -> dict[str, torch.Tensor]:
    return torch.load(fixture / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def probabilities(segmenter: paper_segmenter.PaperSegmenter, image: np.ndarray) -> torch.Tensor:
    return segmenter.probabilities(image)


def top2_gap(scores: torch.Tensor) -> torch.Tensor:
    top = scores.topk(2, dim=0).values
    return top[0] - top[1]


def assert_same_map(pred: torch.Tensor, expected_scores: torch.Tensor) -> None:
    """pred equals the argmax of expected_scores except where the expected top-2 gap is a near-tie."""
    differ = pred != expected_scores.argmax(0)
    assert (differ & (top2_gap(expected_scores) >= NEAR_TIE)).sum() == 0, f"{int(differ.sum())} pixels differ"


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


# ---- parity ------------------------------------------------------------------------------------
def test_probabilities_match_reference(probabilities: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    scores = expected["scores"][0]
    assert probabilities.shape == scores.shape == (150, 96, 128) and probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities, scores, atol=1e-5, rtol=0)
    # the logits too (log-probabilities up to a per-pixel constant), where the probabilities are not tiny
    log_ratio = probabilities.log() - scores.log()
    assert (log_ratio - log_ratio.mean(0)).abs().max() < 1e-3


def test_single_scale_prediction_matches_reference(segmenter: paper_segmenter.PaperSegmenter, image: np.ndarray,
                                                   probabilities: torch.Tensor,
                                                   expected: dict[str, torch.Tensor]) -> None:
    pred = segmenter.predict(image, multiscale=False)
    assert pred.dtype == torch.int64 and pred.shape == (96, 128)
    assert torch.equal(pred, probabilities.argmax(0))
    assert torch.equal(expected["pred"], expected["scores"][0].argmax(0))
    assert_same_map(pred, expected["scores"][0])


def test_encoder_features_match_reference(segmenter: paper_segmenter.PaperSegmenter, image: np.ndarray,
                                          expected: dict[str, torch.Tensor]) -> None:
    maps = segmenter.network.features(as_batch(image))
    assert [tuple(m.shape) for m in maps] == [(1, 256, 24, 32), (1, 512, 12, 16), (1, 1024, 6, 8), (1, 2048, 3, 4)]
    stats = torch.tensor([[m.double().mean().item(), m.double().std().item()] for m in maps], dtype=torch.float64)
    torch.testing.assert_close(stats, expected["features"].double(), rtol=1e-4, atol=1e-5)


def test_files_without_bookkeeping_keys_give_the_same_result(fixture: Path, tmp_path: Path, image: np.ndarray,
                                                             segmenter: paper_segmenter.PaperSegmenter,
                                                             probabilities: torch.Tensor) -> None:
    # the real files were saved by older torch/SyncBN and may lack any of the bookkeeping buffers
    files = write_released(fixture, tmp_path, drop_suffixes=upernet.BOOKKEEPING_SUFFIXES)
    state = torch.load(files[0], weights_only=True)
    assert not any(key.endswith(upernet.BOOKKEEPING_SUFFIXES) for key in state)
    without = paper_segmenter.load(NAME, files)
    own, full = without.network.state_dict(), segmenter.network.state_dict()
    assert all(torch.equal(own[key], full[key]) for key in own if not key.endswith("num_batches_tracked"))
    torch.testing.assert_close(without.probabilities(image), probabilities, atol=1e-5, rtol=0)


def test_batch_of_two_equals_two_singles(segmenter: paper_segmenter.PaperSegmenter, image: np.ndarray,
                                         probabilities: torch.Tensor) -> None:
    flipped = np.ascontiguousarray(image[:, ::-1])
    batch = torch.cat([as_batch(image), as_batch(flipped)])
    both = segmenter.network.probabilities(batch)
    torch.testing.assert_close(both[0], probabilities, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1], segmenter.probabilities(flipped), atol=1e-5, rtol=0)
    assert torch.equal(segmenter.predict_batch(batch, multiscale=False), both.argmax(1))


# ---- sensitivity: the wrong input convention must not pass the parity check --------------------
def test_wrong_channel_order_or_preprocessing_mismatches(segmenter: paper_segmenter.PaperSegmenter,
                                                         image: np.ndarray,
                                                         expected: dict[str, torch.Tensor]) -> None:
    scores = expected["scores"][0]
    bgr = segmenter.probabilities(np.ascontiguousarray(image[:, :, ::-1]))
    legacy = copy.copy(segmenter.network)  # shares the weights
    legacy.preprocessing = "bgr_legacy"
    with torch.no_grad():
        legacy_scores = legacy.probabilities(as_batch(image))[0]
    for wrong in (bgr, legacy_scores):
        assert (wrong - scores).abs().max() > 0.05
        assert (wrong.argmax(0) != expected["pred"]).float().mean() > 0.05


# ---- preprocessing and the multi-scale protocol --------------------------------------------------
def test_scaled_sizes_follow_the_reference() -> None:
    # 96x128: short side to each test size, truncated, rounded UP to a multiple of 32
    assert [upernet.scaled_size(96, 128, s) for s in upernet.IMG_SIZES] == \
        [(320, 416), (384, 512), (480, 608), (544, 704), (608, 800)]
    assert upernet.scaled_size(96, 128, 96) == (96, 128)  # probabilities: scale 1
    assert upernet.scaled_size(512, 683, 600) == (608, 800)  # ADE_val_00000001
    assert upernet.scaled_size(400, 2000, 300) == (224, 1024)  # long side capped at 1000
    assert upernet.scaled_size(50, 70, 50) == (64, 96)  # rounding stretches the image
    with pytest.raises(SpadeganError, match="too thin"):
        upernet.scaled_size(1, 5000, 300)


def test_rgb_preprocessing_is_the_normalised_image(image: np.ndarray) -> None:
    x = upernet.preprocess(as_batch(image), (96, 128), "rgb_imagenet")
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    by_hand = (np.float32(image) / np.float32(255) - mean) / std
    assert torch.equal(x[0], torch.from_numpy(by_hand).permute(2, 0, 1))


def test_legacy_preprocessing_is_bgr_minus_mean(image: np.ndarray) -> None:
    x = upernet.preprocess(as_batch(image), (96, 128), "bgr_legacy")
    by_hand = np.float32(image[:, :, ::-1]) - np.float32([102.9801, 115.9465, 122.7717])
    assert torch.equal(x[0], torch.from_numpy(by_hand).permute(2, 0, 1))


def test_rgb_resize_is_pil_bilinear(image: np.ndarray) -> None:
    resized = upernet.pil_resize(as_batch(image), (320, 416))
    by_hand = np.array(Image.fromarray(image).resize((416, 320), Image.BILINEAR))
    assert torch.equal(resized[0], torch.from_numpy(by_hand).permute(2, 0, 1))


def _pattern(h: int, w: int) -> torch.Tensor:
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return torch.from_numpy(((37 * y * y + 91 * x + 101 * c + 13 * x * y) % 256).astype(np.uint8)).permute(2, 0, 1)


#: cv2.resize(_pattern(h, w) as HWC, (tw, th)) by opencv-python-headless 4.14.0 (INTER_LINEAR), as (C, H, W)
CV2_UP_4x5_TO_7x6 = [
    [[0, 68, 144, 113, 40, 108], [13, 85, 164, 138, 68, 140], [34, 112, 198, 177, 113, 190],
     [93, 79, 139, 178, 164, 151], [143, 53, 81, 172, 206, 103], [102, 128, 113, 149, 190, 92],
     [77, 174, 133, 135, 179, 85]],
    [[101, 169, 96, 65, 141, 209], [114, 186, 116, 89, 146, 149], [135, 213, 149, 128, 155, 54],
     [194, 180, 166, 151, 137, 124], [244, 140, 175, 166, 115, 204], [203, 105, 146, 144, 99, 193],
     [178, 83, 128, 130, 88, 186]],
    [[202, 78, 90, 166, 178, 54], [215, 95, 110, 152, 137, 86], [236, 122, 143, 130, 73, 137],
     [167, 153, 139, 124, 110, 97], [89, 177, 126, 118, 152, 48], [48, 142, 97, 95, 136, 38],
     [23, 120, 79, 81, 125, 31]]]
CV2_DOWN_8x10_TO_3x4 = [
    [[107, 106, 115, 135], [181, 202, 127, 149], [175, 91, 71, 115]],
    [[208, 153, 205, 150], [90, 111, 100, 122], [84, 128, 161, 184]],
    [[117, 84, 146, 92], [127, 148, 105, 95], [185, 197, 177, 114]]]


def test_legacy_resize_matches_opencv_values() -> None:
    up = upernet.cv2_resize_linear(_pattern(4, 5)[None], (7, 6))[0]
    down = upernet.cv2_resize_linear(_pattern(8, 10)[None], (3, 4))[0]
    assert torch.equal(up, torch.tensor(CV2_UP_4x5_TO_7x6, dtype=torch.uint8))
    assert torch.equal(down, torch.tensor(CV2_DOWN_8x10_TO_3x4, dtype=torch.uint8))
    same = _pattern(5, 6)[None]
    assert torch.equal(upernet.cv2_resize_linear(same, (5, 6)), same)
    half = upernet.cv2_resize_linear(_pattern(4, 6)[None], (2, 3))[0].long()  # = OpenCV's INTER_AREA 2x path
    blocks = _pattern(4, 6).long().unfold(1, 2, 2).unfold(2, 2, 2).sum((-1, -2))
    assert torch.equal(half, (blocks + 2) >> 2)


def test_legacy_resize_matches_opencv_when_installed() -> None:
    cv2 = pytest.importorskip("cv2")  # not a dependency; a developer check where it is installed
    rng = np.random.default_rng(0)
    for _ in range(40):
        (h, w), (th, tw) = rng.integers(2, 80, 2), rng.integers(1, 120, 2)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = upernet.cv2_resize_linear(as_batch(img), (int(th), int(tw)))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(ours, cv2.resize(img, (int(tw), int(th)))), ((h, w), (th, tw))


def test_multiscale_protocol_averages_softmax_at_each_scale(segmenter: paper_segmenter.PaperSegmenter,
                                                            image: np.ndarray) -> None:
    # the protocol with two small scales (the real five take minutes on a CPU), rebuilt by hand:
    # 48 -> scale 0.5 -> 48x64 -> rounded up to 64x64 (stretched); 120 -> scale 1.25 -> 120x160 -> 128x160
    network = copy.copy(segmenter.network)
    network.img_sizes = (48, 120)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    total = torch.zeros(1, 150, 96, 128)
    with torch.no_grad():
        for h, w in ((64, 64), (128, 160)):
            resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
            x = (as_batch(resized).float() / 255 - mean) / std
            logits = network.decoder(network.encoder(x))
            total += F.softmax(F.interpolate(logits, (96, 128), mode="bilinear", align_corners=False), 1) / 2
        ours = network.multiscale_probabilities(as_batch(image))
        pred = network.predict(as_batch(image), multiscale=True)
    torch.testing.assert_close(ours, total, atol=1e-6, rtol=0)
    assert_same_map(pred[0], total[0])


def test_default_predict_is_multiscale_and_runs(segmenter: paper_segmenter.PaperSegmenter) -> None:
    # a thin 3x100 image keeps the five real scales cheap: each is capped by imgMaxSize to 32x1024
    assert segmenter.network.img_sizes == (300, 375, 450, 525, 600)
    assert [upernet.scaled_size(3, 100, s) for s in upernet.IMG_SIZES] == [(32, 1024)] * 5
    thin = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 100), dtype=np.uint8))
    pred = segmenter.predict(thin)
    assert pred.shape == (3, 100) and pred.dtype == torch.int64
    assert 0 <= int(pred.min()) and int(pred.max()) < 150
    with torch.no_grad():
        at_1024 = segmenter.network._scale_probabilities(thin[None], 300)[0]
    assert_same_map(pred, at_1024)  # five equal scales average to the one
    assert not torch.equal(pred, segmenter.predict(thin, multiscale=False))  # the single pass is 32x128


# ---- bad files -------------------------------------------------------------------------------------
def test_missing_file_names_the_expected_one(released: list[Path], tmp_path: Path) -> None:
    with pytest.raises(SpadeganError, match="decoder_epoch_50.pth"):
        paper_segmenter.load(NAME, [released[0], tmp_path / "nothing.pth"])
    with pytest.raises(SpadeganError, match="takes 2 weight file"):
        paper_segmenter.load(NAME, released[0])


def test_decoder_file_in_place_of_encoder_is_refused(released: list[Path]) -> None:
    with pytest.raises(SpadeganError, match=r"encoder_epoch_50\.pth.*order encoder_epoch_50\.pth, decoder") as error:
        paper_segmenter.load(NAME, [released[1], released[0]])
    assert "ppm_conv" in str(error.value) and str(released[1]) in str(error.value)


def _edited(path: Path, tmp_path: Path, edit) -> Path:
    state = torch.load(path, weights_only=True)
    edit(state)
    out = tmp_path / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def test_missing_key_wrong_shape_and_foreign_file_are_refused(released: list[Path], tmp_path: Path) -> None:
    encoder, decoder = released
    lacking = _edited(decoder, tmp_path / "a", lambda s: s.pop("conv_last.1.bias"))
    with pytest.raises(SpadeganError, match=r"lacks 1 key.*conv_last\.1\.bias.*decoder_epoch_50\.pth"):
        paper_segmenter.load(NAME, [encoder, lacking])
    shaped = _edited(decoder, tmp_path / "b", lambda s: s.update({"conv_last.1.weight": torch.zeros(182, 512, 1, 1)}))
    with pytest.raises(SpadeganError, match=r"conv_last\.1\.weight has shape \(182, 512, 1, 1\), expected \(150"):
        paper_segmenter.load(NAME, [encoder, shaped])
    foreign = tmp_path / "c" / "encoder_epoch_50.pth"  # e.g. a DeepLab file renamed
    foreign.parent.mkdir()
    torch.save({"base.layer1.conv1.conv.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(SpadeganError, match=r"lacks .*expected the released file encoder_epoch_50\.pth"):
        paper_segmenter.load(NAME, [foreign, decoder])


def test_unknown_preprocessing_is_refused(released: list[Path]) -> None:
    with pytest.raises(SpadeganError, match="bgr_legacy"):
        paper_segmenter.load(NAME, released, preprocessing="caffe")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference(released: list[Path], image: np.ndarray, expected: dict[str, torch.Tensor]) -> None:
    segmenter = paper_segmenter.load(NAME, released, device="cuda")
    torch.testing.assert_close(segmenter.probabilities(image), expected["scores"][0], atol=1e-4, rtol=0)
    assert_same_map(segmenter.predict(image, multiscale=False), expected["scores"][0])
