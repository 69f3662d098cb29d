"""FID/KID parity with pytorch-fid 0.3.0 and torch-fidelity 0.4.0 on ../shared/fixtures/fid_pytorch_fid.

The fixture (read its README.md) ran the reference code unmodified on ten 64x64 PNGs with the
released Inception file rebuilt from a fill rule. Here the same file is written in its released
format (tests/paper_fixtures.write_released) and goes through the public names users call:
``load_fid_inception``, ``extract_features``, ``fid_from_features(_details)``, ``kid``.
What is pinned: the resize (bilinear, align_corners=False, no antialias), the 2x-1 scaling, the
FID blocks (count_include_pad=False pools, max pool in Mixed_7c), the statistics (np.cov, N-1),
the Frechet distance (pytorch-fid's value within 1e-4, the exact low-rank value within 1e-9),
and torch-fidelity's KID with its RandomState(2020) subset order.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_dir
from paper_fixtures import write_released
from PIL import Image

from spadegan.errors import SpadeganError, SpadeganWarning
from spadegan.evaluation import fid

WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def fx(shared: Path) -> Path:
    return fixture_dir(shared, ".", "fid_pytorch_fid")


@pytest.fixture(scope="module")
def expected(fx: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(fx / "expected.pt", weights_only=True).items()}


@pytest.fixture(scope="module")
def released(fx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The released file as a plain state_dict, with and without num_batches_tracked."""
    root = tmp_path_factory.mktemp("fid_released")
    (full,) = write_released(fx, root / "full")
    (lean,) = write_released(fx, root / "lean", drop_suffixes=("num_batches_tracked",))
    return {"full": full, "lean": lean}


def _images(fx: Path, name: str) -> np.ndarray:
    """5 x 64 x 64 x 3 uint8, read as pytorch-fid's ImagePathDataset does (sorted, RGB)."""
    files = sorted(fx.glob(f"{name}_*.png"))
    assert [f.name for f in files] == [f"{name}_{i}.png" for i in range(5)]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _block_hooks(model: fid.FIDInceptionV3, seen: dict[str, torch.Tensor]) -> list:
    """Record block 0's input (x299) and the spatial means of pytorch-fid's four block outputs."""
    def keep(name, reduce):
        return lambda module, inputs, out: seen.__setitem__(name, reduce(out))

    def pooled(t):  # blocks 0 and 1 end in a 3x3 stride-2 max pool, applied functionally here
        return F.max_pool2d(t, 3, stride=2).mean(dim=(2, 3))

    def mean(t):
        return t.mean(dim=(2, 3))

    return [
        model.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, inputs: seen.__setitem__("x299", inputs[0])),
        model.Conv2d_2b_3x3.register_forward_hook(keep("block0", pooled)),
        model.Conv2d_4a_3x3.register_forward_hook(keep("block1", pooled)),
        model.Mixed_6e.register_forward_hook(keep("block2", mean)),
        model.Mixed_7c.register_forward_hook(keep("block3", mean)),
    ]


@pytest.fixture(scope="module")
def run(fx: Path, released: dict[str, Path]) -> dict[str, np.ndarray]:
    """Features of sets A and B, plus set A's block outputs, through the public API."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = fid.load_fid_inception(released["full"])
        seen: dict[str, torch.Tensor] = {}
        hooks = _block_hooks(model, seen)
        # batch_size 50 as pytorch-fid asks for: one batch of 5 here
        act_a = fid.extract_features(model, [_images(fx, "a")], batch_size=50)
        for h in hooks:
            h.remove()
        act_b = fid.extract_features(model, [_images(fx, "b")], batch_size=50)
        out = {"act_a": act_a, "act_b": act_b}
        out.update({k: v.numpy() for k, v in seen.items()})
        lean = fid.load_fid_inception(released["lean"])
        out["state_equal"] = all(torch.equal(v, lean.state_dict()[k]) for k, v in model.state_dict().items())
    finally:
        torch.set_num_threads(threads)
    return out


def test_released_file_loads_with_and_without_num_batches_tracked(released, run):
    full = torch.load(released["full"], weights_only=True)
    lean = torch.load(released["lean"], weights_only=True)
    assert len(full) == 566 and len(lean) == 472  # 94 num_batches_tracked entries dropped
    assert not any(k.endswith("num_batches_tracked") for k in lean)
    assert run["state_equal"]  # test_compute_fid_kid_end_to_end runs the lean file


def test_preprocessing_matches_pytorch_fid(run, expected):
    # ToTensor /255, F.interpolate bilinear align_corners=False (no antialias), then 2x - 1
    x299 = run["x299"]
    assert x299.shape == (5, 3, 299, 299)
    np.testing.assert_allclose(x299[0], expected["x299_a0"], rtol=0, atol=1e-6)


def test_downscale_has_no_antialias(fx, released):
    # The fixture only upsamples (64 -> 299), where antialias changes nothing; pytorch-fid's
    # F.interpolate also has none when shrinking. A 640 x 640 image (a_0, each pixel 10 x 10):
    big = np.kron(_images(fx, "a")[:1], np.ones((1, 10, 10, 1), dtype=np.uint8))
    model = fid.load_fid_inception(released["full"])
    seen = []
    model.Conv2d_1a_3x3.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    fid.extract_features(model, [big])
    x = torch.from_numpy(big).permute(0, 3, 1, 2).float() / 255.0
    plain = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    smooth = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True) * 2 - 1
    assert float((plain - smooth).abs().max()) > 0.1  # the check can tell them apart
    torch.testing.assert_close(seen[0], plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("block", [0, 1, 2, 3])
def test_block_outputs_match_pytorch_fid(run, expected, block):
    got, want = run[f"block{block}"], expected[f"block{block}_mean_a"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_activations_match_pytorch_fid(run, expected):
    for name in ("act_a", "act_b"):
        assert run[name].shape == (5, 2048) and run[name].dtype == np.float64
        # measured ~1e-5 (another conv backend); the mutations named in the module docstring move it >= 0.1
        np.testing.assert_allclose(run[name], expected[name], rtol=0, atol=1e-4)


def test_statistics_match_pytorch_fid(run, expected):
    # from the reference's own activations: np.mean and np.cov (N - 1) exactly
    mu_a, sigma_a = fid.activation_statistics(expected["act_a"])
    mu_b, sigma_b = fid.activation_statistics(expected["act_b"])
    np.testing.assert_allclose(mu_a, expected["mu_a"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mu_b, expected["mu_b"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma_a[:256, :256], expected["sigma_a_block"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(sigma_a), expected["sigma_a_diag"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(sigma_b), expected["sigma_b_diag"], rtol=1e-12, atol=1e-12)
    # from ours: within what the ~1e-5 activation differences allow
    mu_a, sigma_a = fid.activation_statistics(run["act_a"])
    np.testing.assert_allclose(mu_a, expected["mu_a"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(sigma_a[:256, :256], expected["sigma_a_block"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.diagonal(sigma_a), expected["sigma_a_diag"], rtol=0, atol=1e-4)


def test_fid_matches_pytorch_fid(run, expected):
    details = fid.fid_from_features_details(run["act_a"], run["act_b"])
    assert details == {"fid": pytest.approx(float(expected["fid"]), rel=1e-4), "method": "auto",
                       "method_used": "lowrank", "eps_retry": False, "fallback": None,
                       "num_features": [5, 5]}
    assert fid.fid_from_features(run["act_a"], run["act_b"]) == details["fid"]
    # the same features as the reference: the exact value to round-off, pytorch-fid's sqrtm within 1e-4
    for method in ("auto", "lowrank"):
        exact = fid.fid_from_features(expected["act_a"], expected["act_b"], method=method)
        assert exact == pytest.approx(float(expected["fid_exact_lowrank"]), rel=1e-9)
        assert exact == pytest.approx(float(expected["fid"]), rel=1e-4)
    assert fid.fid_from_features(expected["act_b"], expected["act_a"]) == pytest.approx(
        float(expected["fid_exact_lowrank"]), rel=1e-9)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_statistics_methods_agree_with_lowrank_on_fixture_features(expected, method):
    # pytorch-fid's sqrtm on all 2048 dimensions takes ~60 s; the first 256 dimensions of the
    # same activations exercise the same code path (and are singular in the same way: N = 5)
    a, b = expected["act_a"][:, :256], expected["act_b"][:, :256]
    exact = fid.fid_from_features(a, b, method="lowrank")
    details = fid.fid_from_features_details(a, b, method=method)
    assert details["method"] == details["method_used"] == method and details["fallback"] is None
    assert details["fid"] == pytest.approx(exact, rel=1e-4)


def test_kid_matches_torch_fidelity(expected, fx):
    a, b = expected["act_a"], expected["act_b"]
    spec = json.loads((fx / "spec.json").read_text())["kid"]
    params = spec["params"]
    assert (params["kid_subsets"], params["kid_subset_size"], params["rng_seed"]) == (10, 3, 2020)
    order = [[i1.tolist(), i2.tolist()] for i1, i2 in fid._kid_subsets(5, 5, 3, 10, None, 2020)]
    assert order == spec["subset_indices_[a,b]"]
    mean, std = fid.kid(a, b, num_subsets=10, subset_size=3)  # rng_seed 2020 is the default
    assert mean == pytest.approx(float(expected["kid_mean"]), rel=1e-9)
    assert std == pytest.approx(float(expected["kid_std"]), rel=1e-9)
    assert fid.kid(a, b, 10, 3, rng_seed=2020) == (mean, std)
    full_mean, full_std = fid.kid(a, b, num_subsets=1, subset_size=5)
    assert full_mean == pytest.approx(float(expected["kid_full_mean"]), rel=1e-9) and full_std == 0.0
    # another seed draws other subsets
    assert fid.kid(a, b, 10, 3, rng_seed=1)[0] != pytest.approx(mean, rel=1e-6)
    # torch-fidelity on float32 features computes in float32; we compute in float64 (~3e-6 apart)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    mean32, std32 = fid.kid(a32, b32, num_subsets=10, subset_size=3)
    assert mean32 == pytest.approx(float(expected["kid_mean_f32feat"]), rel=1e-5)
    assert std32 == pytest.approx(float(expected["kid_std_f32feat"]), rel=1e-5)


def test_kid_of_our_features(run, expected):
    mean, std = fid.kid(run["act_a"], run["act_b"], num_subsets=10, subset_size=3)
    assert mean == pytest.approx(float(expected["kid_mean"]), rel=1e-4)
    assert std == pytest.approx(float(expected["kid_std"]), rel=1e-4)
    full_mean, _ = fid.kid(run["act_a"], run["act_b"], num_subsets=1, subset_size=5)
    assert full_mean == pytest.approx(float(expected["kid_full_mean"]), rel=1e-4)


def test_compute_fid_kid_end_to_end(fx, released, expected):
    # the file without num_batches_tracked; uint8 arrays as a user's loader would yield them
    res = fid.compute_fid_kid([_images(fx, "a")], [_images(fx, "b")], released["lean"],
                              kid_subsets=10, kid_subset_size=3)
    assert res["status"] == "ok" and (res["num_real"], res["num_fake"]) == (5, 5)
    assert res["fid"] == pytest.approx(float(expected["fid"]), rel=1e-4)
    assert res["kid_mean"] == pytest.approx(float(expected["kid_mean"]), rel=1e-4)
    assert (res["fid_method_used"], res["fid_eps_retry"], res["fid_fallback"]) == ("lowrank", False, None)


def _stats(seed: int, d: int = 6) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(20, d)), rng.normal(size=(20, d)) + 0.3
    return (*fid.activation_statistics(x), *fid.activation_statistics(y))


def test_sqrtm_eps_retry_is_recorded_and_announced_once(monkeypatch):
    real_sqrtm, calls = fid._scipy_sqrtm, []

    def singular_first(m):  # scipy's answer for a singular product: non-finite
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fid, "_scipy_sqrtm", singular_first)
    mu1, s1, mu2, s2 = _stats(0)
    with pytest.warns(SpadeganWarning, match="eps_retry"):
        details = fid.frechet_distance_details(mu1, s1, mu2, s2, eps=1e-6)
    assert (details["method_used"], details["eps_retry"], details["fallback"]) == ("sqrtm", True, None)
    # the retry is pytorch-fid's: eps * I added to both covariances
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(6)) @ (s2 + 1e-6 * np.eye(6)), rtol=1e-12)
    assert details["fid"] == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2, method="eigh"), rel=1e-5)
    calls.clear()  # the same failure again: recorded again, not announced again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = fid.frechet_distance_details(mu1, s1, mu2, s2)
    assert again["eps_retry"] is True
    assert not [w for w in caught if issubclass(w.category, SpadeganWarning)]


def test_sqrtm_failure_falls_back_to_eigh_recorded(monkeypatch):
    monkeypatch.setattr(fid, "_scipy_sqrtm", lambda m: m + 0.5j)  # pytorch-fid would raise here
    mu1, s1, mu2, s2 = _stats(1)
    with pytest.warns(SpadeganWarning, match="method 'eigh' instead"):
        details = fid.frechet_distance_details(mu1, s1, mu2, s2)
    assert details["method"] == "sqrtm" and details["method_used"] == "eigh"
    assert details["eps_retry"] is False and "imaginary" in details["fallback"] and "0.5" in details["fallback"]
    assert details["fid"] == fid.frechet_distance(mu1, s1, mu2, s2, method="eigh")



def test_fid_method_names_are_checked():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    with pytest.raises(SpadeganError, match="'magic'"):
        fid.fid_from_features(x, y, method="magic")
    with pytest.raises(SpadeganError, match="'lowrank' needs"):
        fid.fid_from_features(x, y, method="lowrank")
    # N > D: "auto" is pytorch-fid's sqrtm, without retry or fallback on a well-posed product
    details = fid.fid_from_features_details(x, y)
    assert (details["method"], details["method_used"], details["eps_retry"]) == ("auto", "sqrtm", False)
    assert details["fid"] == pytest.approx(fid.fid_from_features(x, y, method="eigh"), rel=1e-9)
