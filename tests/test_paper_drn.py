"""DRN-D-105 Cityscapes (`drn105_cityscapes`) against the reference fixture (fyu/drn segment.py).

The released file is rebuilt from the fixture's fill rule (`up.weight` excepted: it holds the
fixed bilinear kernel of `fill_up_weights`, not random values) and loaded only through the
public `paper_segmenter.load`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fixture_dir
from paper_fixtures import write_released
from spadegan.errors import SpadeganError, SpadeganWarning
from spadegan.evaluation import paper_segmenter
from spadegan.evaluation.paper import drn

NAME = "drn105_cityscapes"
FILE = "drn-d-105_ms_cityscapes.pth"
# CPU float32 parity: measured 1.7e-5 (log-softmax, values down to -19), 1.6e-5 (seg_x),
# 9e-5 (the six-scale sum, values down to -100)
ATOL, MS_ATOL = 5e-5, 3e-4
NEAR_TIE = 1e-4  # the fixture has one pixel whose top-2 log-probabilities differ by 3.4e-5


def up_kernel(shape: list[int]) -> torch.Tensor:
    """fill_up_weights as the fixture README writes it: f = 8, c = 0.9375, all channels equal."""
    f, c = 8, 0.9375
    axis = torch.tensor([1 - abs(i / f - c) for i in range(shape[2])])
    return torch.outer(axis, axis).expand(shape).clone()


UP_EXCEPTION = {"up.weight": up_kernel}


@pytest.fixture(scope="module")
def fixture(shared: Path) -> Path:
    return fixture_dir(shared, "segmenters", NAME)


@pytest.fixture(scope="module")
def released(fixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = write_released(fixture, tmp_path_factory.mktemp("drn"), exceptions=UP_EXCEPTION)
    assert path.name == FILE
    return path


@pytest.fixture(scope="module")
def segmenter(released: Path) -> paper_segmenter.PaperSegmenter:
    return paper_segmenter.load(NAME, [released])


@pytest.fixture(scope="module")
def expected(fixture: Path) -> dict[str, torch.Tensor]:
    return torch.load(fixture / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def image(fixture: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(fixture / "input.png"))).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def state(released: Path) -> dict[str, torch.Tensor]:
    return torch.load(released, weights_only=True)


def save_variant(state: dict[str, torch.Tensor], directory: Path,
                 replace: dict[str, torch.Tensor] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """The released file with entries replaced or dropped, saved under its released name."""
    variant = {key: value for key, value in state.items() if key not in drop}
    variant.update(replace or {})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    torch.save(variant, path)
    return path


def assert_pred_equal(pred: torch.Tensor, expected_pred: torch.Tensor, log_probs: torch.Tensor) -> None:
    """Equal class maps, except where the expected top two scores are within NEAR_TIE."""
    top2 = log_probs.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) < NEAR_TIE
    differ = pred != expected_pred
    assert not (differ & ~near_tie).any(), f"{int((differ & ~near_tie).sum())} pixels differ"
    assert int(differ.sum()) <= int(near_tie.sum())


# ---- parity with the reference ------------------------------------------------------------------

def test_single_scale_parity(segmenter, expected, image, monkeypatch):
    network = segmenter.network
    torch.testing.assert_close(network.normalize(image[None]), expected["input_normalized"], atol=1e-6, rtol=0)
    log_probs, seg_x = network.reference_outputs(image[None])
    torch.testing.assert_close(seg_x, expected["seg_x"], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(log_probs, expected["logits"], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(network.log_probabilities(image[None]), expected["logits"], atol=ATOL, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sizes that are multiples of 8: nothing cropped, nothing said
        probs = segmenter.probabilities(image)
    assert probs.shape == (19, 64, 128) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected["logits"][0].exp(), atol=1e-5, rtol=1e-5)
    pred = segmenter.predict(image)
    assert pred.shape == (64, 128) and pred.dtype == torch.int64
    assert_pred_equal(pred[None], expected["pred"], expected["logits"])


def test_default_protocol_is_single_scale_argmax(segmenter, expected, image):
    pred = segmenter.predict(image.permute(1, 2, 0).numpy())  # (H, W, 3) array input
    assert pred.dtype == torch.int64 and pred.shape == (64, 128)
    assert torch.equal(pred, segmenter.probabilities(image).argmax(0))
    assert torch.equal(pred, segmenter.predict(image, multiscale=False))
    assert_pred_equal(pred[None], expected["pred"], expected["logits"])


def test_multiscale_parity(segmenter, expected, image):
    total = segmenter.network.multiscale_log_probabilities(image[None])
    torch.testing.assert_close(total, expected["ms_logsoftmax_sum"], atol=MS_ATOL, rtol=1e-5)
    pred = segmenter.predict(image, multiscale=True)
    assert pred.dtype == torch.int64 and pred.shape == (64, 128)
    assert_pred_equal(pred[None], expected["ms_pred"], expected["ms_logsoftmax_sum"])
    assert not torch.equal(pred[None], expected["pred"])  # the fixture tells the protocols apart


def test_file_without_bookkeeping_keys(fixture, tmp_path, expected, image):
    (path,) = write_released(fixture, tmp_path, exceptions=UP_EXCEPTION, drop_suffixes=("num_batches_tracked",))
    state = torch.load(path, weights_only=True)
    assert len(state) == 543 and not any(k.endswith("num_batches_tracked") for k in state)
    network = paper_segmenter.load(NAME, path).network
    torch.testing.assert_close(network.reference_outputs(image[None])[0], expected["logits"], atol=ATOL, rtol=1e-5)


def test_batch_equals_singles(segmenter, image):
    other = image.flip(-1).roll(17, dims=-2)
    batch = torch.stack([image, other])
    probs = segmenter.network.probabilities(batch)
    for i, single in enumerate((image, other)):
        torch.testing.assert_close(probs[i], segmenter.probabilities(single), atol=1e-5, rtol=1e-5)
    singles = torch.stack([segmenter.predict(image), segmenter.predict(other)])
    assert torch.equal(segmenter.predict_batch(batch), singles)


def test_multiscale_batch_equals_singles(segmenter, image):
    small = torch.stack([image[:, :24, :40], image[:, 30:54, 70:110]])  # 24x40: cheap, not /8 at 0.75
    totals = segmenter.network.multiscale_log_probabilities(small)
    for i in range(2):
        torch.testing.assert_close(totals[i], segmenter.network.multiscale_log_probabilities(small[i:i + 1])[0],
                                   atol=1e-4, rtol=1e-5)
    assert torch.equal(segmenter.predict_batch(small, multiscale=True), totals.argmax(1))


# ---- sizes that are not multiples of 8 ------------------------------------------------------------

def test_other_sizes_crop_the_output(segmenter, image, monkeypatch):
    """The reference's output is 8*ceil(H/8) x 8*ceil(W/8); probabilities crop it to H x W (said once)."""
    odd = image[:, :61, :122].contiguous()
    log_probs, seg_x = segmenter.network.reference_outputs(odd[None])
    assert seg_x.shape == (1, 19, 8, 16) and log_probs.shape == (1, 19, 64, 128)
    with pytest.warns(SpadeganWarning, match="cropped"):
        probs = segmenter.probabilities(odd)
    assert probs.shape == (19, 61, 122)
    torch.testing.assert_close(probs, log_probs[0, :, :61, :122].exp(), atol=0, rtol=0)
    assert torch.equal(segmenter.predict(odd), probs.argmax(0))
    # --ms resizes every map whose size is not (h, w), the scale-1 map included (resize_4d_tensor)
    small = odd[:, :21, :30]
    total = segmenter.network.multiscale_log_probabilities(small[None])
    assert total.shape == (1, 19, 21, 30) and torch.isfinite(total).all()
    assert torch.equal(segmenter.predict(small, multiscale=True), total[0].argmax(0))
    with pytest.raises(SpadeganError, match="1x30"):
        segmenter.predict(small[:, :1], multiscale=True)


def test_bilinear_kernel_matches_fill_up_weights():
    kernel = drn.bilinear_up_kernel()
    assert kernel.shape == (19, 1, 16, 16)
    axis = [0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375]
    axis = torch.tensor(axis + axis[::-1])
    assert torch.equal(kernel, torch.outer(axis, axis).expand(19, 1, 16, 16))


# ---- sensitivity: the parity tests catch a wrong preprocessing ----------------------------------

def test_wrong_channel_order_or_preprocessing_mismatches(segmenter, expected, image):
    network = segmenter.network
    bgr = network.log_probabilities(image.flip(0)[None])
    assert (bgr - expected["logits"]).abs().max() > 100 * ATOL
    mean, std = network.mean, network.std
    try:  # torchvision's ImageNet statistics instead of info.json's
        network.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        network.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        imagenet = network.log_probabilities(image[None])
    finally:
        network.mean, network.std = mean, std
    assert (imagenet - expected["logits"]).abs().max() > 100 * ATOL
    torch.testing.assert_close(network.log_probabilities(image[None]), expected["logits"], atol=ATOL, rtol=1e-5)


# ---- bad files ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(SpadeganError, match=FILE):
        paper_segmenter.load(NAME, tmp_path / "nothing.pth")
    with pytest.raises(SpadeganError, match=FILE):
        paper_segmenter.load(NAME, [])


def test_unknown_preprocessing(released):
    with pytest.raises(SpadeganError, match="rgb_cityscapes"):
        paper_segmenter.load(NAME, released, preprocessing="bgr_legacy")


def test_another_networks_file(shared, tmp_path):
    (other,) = write_released(fixture_dir(shared, "segmenters", "deeplabv2_cocostuff"), tmp_path)
    with pytest.raises(SpadeganError, match=FILE) as error:
        paper_segmenter.load(NAME, other)
    assert str(other) in str(error.value) and "base.layer1" in str(error.value)


def test_missing_key(state, tmp_path):
    path = save_variant(state, tmp_path, drop=("seg.bias",))
    with pytest.raises(SpadeganError, match=rf"lacks 1 key\(s\): seg\.bias.*{FILE}") as error:
        paper_segmenter.load(NAME, path)
    assert str(path) in str(error.value)


def test_wrong_shape(state, tmp_path):
    path = save_variant(state, tmp_path, {"base.8.0.weight": torch.zeros(512, 512, 1, 1)})
    with pytest.raises(SpadeganError, match=r"base\.8\.0\.weight has shape \(512, 512, 1, 1\)"):
        paper_segmenter.load(NAME, path)


def test_up_weight_must_be_the_bilinear_kernel(fixture, state, tmp_path):
    """The reference never trains `up`; another kernel means the file is not the released one."""
    (random_up,) = write_released(fixture, tmp_path / "random")  # the plain fill rule: random up.weight
    with pytest.raises(SpadeganError, match=rf"up\.weight is not the fixed bilinear.*{FILE}") as error:
        paper_segmenter.load(NAME, random_up)
    assert str(random_up) in str(error.value)
    scaled = save_variant(state, tmp_path / "scaled", {"up.weight": state["up.weight"] * 1.01})
    with pytest.raises(SpadeganError, match=r"max deviation 0\.00879"):
        paper_segmenter.load(NAME, scaled)


# ---- Cityscapes label ids -> train ids ------------------------------------------------------------

def test_cityscapes_targets_match_cityscapes_scripts(fixture):
    table = {int(k): v for k, v in json.loads((fixture / "labels_35_to_19.json").read_text()).items()}
    assert sorted(table) == list(range(-1, 34))
    ids = np.array(sorted(table))
    wanted = np.array([table[i] if 0 <= table[i] < 19 else paper_segmenter.IGNORE for i in ids])
    assert np.array_equal(paper_segmenter.dataset_targets("cityscapes", ids), wanted)
    assert np.array_equal(paper_segmenter.dataset_targets("cityscapes", torch.tensor(ids).view(5, 7)),
                          wanted.reshape(5, 7))
    assert (paper_segmenter.dataset_targets("cityscapes", np.array([34, 255])) == paper_segmenter.IGNORE).all()


def test_convolutions_run_without_tf32(segmenter, image):
    """cuDNN's TF32 is off during each pass (the reference's numbers are float32), restored after."""
    seen = []
    handle = segmenter.network.model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.backends.cudnn.allow_tf32))
    before = torch.backends.cudnn.allow_tf32
    try:
        segmenter.predict(image[:, :16, :16])
        segmenter.network.multiscale_log_probabilities(image[None, :, :16, :16])
    finally:
        handle.remove()
    assert seen == [False] * 7 and torch.backends.cudnn.allow_tf32 == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_fixture(released, expected, image):
    segmenter = paper_segmenter.load(NAME, released, device="cuda")
    log_probs = segmenter.network.log_probabilities(image[None])
    assert log_probs.device.type == "cuda"
    torch.testing.assert_close(log_probs.cpu(), expected["logits"], atol=1e-3, rtol=1e-4)
    assert_pred_equal(segmenter.predict(image)[None], expected["pred"], expected["logits"])
    total = segmenter.network.multiscale_log_probabilities(image[None])
    torch.testing.assert_close(total, expected["ms_logsoftmax_sum"], atol=5e-3, rtol=1e-4)
