"""`engine.oasis_engine.OASISEngine`: the OASIS generator's outputs (eval mode) within 1e-4 in
fp32 for every noise form, through `OASISSynthesizer` too; bad inputs are SpadeganErrors.

Tiny random generators (channels_G 8, 64 x 64, ADE20K's 151 channels) with BatchNorm
statistics calibrated on the label map and conv_img scaled so tanh is not saturated (a
saturated output would hide differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spadegan.engine.oasis_engine import OASISEngine
from spadegan.errors import SpadeganError
from spadegan.networks.oasis import OASISGenerator, OASISOptions
from spadegan.oasis_checkpoint import oasis_semantics
from spadegan.synthesize.oasis import OASISSynthesizer, generator_at

ATOL = 1e-4
NC, ZD = 151, 64


def blocky_channels(b: int = 2, size: int = 64, block: int = 8, seed: int = 0, width: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ch = torch.randint(0, NC, (b, size // block, (width or size) // block), generator=g)
    return ch.repeat_interleave(block, 1).repeat_interleave(block, 2)


def make_generator(norm: str = "syncbatch", no_3dnoise: bool = False, seed: int = 0) -> OASISGenerator:
    torch.manual_seed(seed)
    G = OASISGenerator(OASISOptions(semantic_nc=NC, crop_size=64, channels_G=8, param_free_norm=norm,
                                    no_3dnoise=no_3dnoise, dataset_mode="ade20k"))
    sem = oasis_semantics(blocky_channels(seed=seed + 1), NC)
    z = None if no_3dnoise else torch.randn(2, ZD)
    for m in G.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        G.train()(sem, z)
        pre = {}
        hook = G.conv_img.register_forward_hook(lambda m, i, o: pre.__setitem__("o", o))
        G.eval()(sem, z)
        hook.remove()
        scale = 0.4 / pre["o"].std().item()
        G.conv_img.weight.mul_(scale)
        G.conv_img.bias.mul_(scale)
    return G


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert (want.abs() > 0.99).float().mean() < 0.25, "saturated output: the comparison would say little"
    err = (got - want).abs().max().item()
    assert err <= ATOL, f"max |diff| {err}"


@pytest.fixture(scope="module")
def G() -> OASISGenerator:
    return make_generator()


@pytest.fixture(scope="module")
def engine(G) -> OASISEngine:
    return OASISEngine.from_generator(G)


def test_one_vector_per_image(G, engine):
    ch, z = blocky_channels(), torch.randn(2, ZD)
    with torch.no_grad():
        close(engine.generate(ch, z), G(oasis_semantics(ch, NC), z))


def test_noise_map(G, engine):
    ch, z = blocky_channels(seed=3), torch.randn(2, ZD, 64, 64)
    with torch.no_grad():
        close(engine.generate(ch, z), G(oasis_semantics(ch, NC), z))


def test_per_class_noise_and_one_hot_input(G, engine):
    ch, table = blocky_channels(seed=4), torch.randn(2, NC, ZD)
    zmap = OASISSynthesizer.noise_map(table, ch)
    sem = oasis_semantics(ch, NC)
    with torch.no_grad():
        want = G(sem, zmap)
        close(engine.generate(ch, table), want)
        close(engine.generate(sem, table), want)  # the network's own one-hot input
        # the same noise spread as a map runs the per-class path: the very same image
        assert torch.equal(engine.generate(ch, zmap), engine.generate(ch, table))


def test_no_z_draws_as_the_network(G, engine):
    ch = blocky_channels(seed=5)
    with torch.no_grad():
        torch.manual_seed(11)
        want = G(oasis_semantics(ch, NC))
        torch.manual_seed(11)
        close(engine.generate(ch), want)


def test_other_output_size(G, engine):
    ch, z = blocky_channels(b=1, size=64, width=96, seed=6), torch.randn(1, ZD)
    with torch.no_grad():
        close(engine.generate(ch, z, size=(64, 96)), generator_at(G, (64, 96))(oasis_semantics(ch, NC), z))


@pytest.mark.parametrize("norm,no_3dnoise", [("instance", False), ("batch", True)])
def test_instance_norm_and_no_3dnoise(norm, no_3dnoise):
    G = make_generator(norm, no_3dnoise, seed=2)
    E = OASISEngine.from_generator(G)
    ch = blocky_channels(seed=7)
    z = None if no_3dnoise else torch.randn(2, ZD)
    with torch.no_grad():
        close(E.generate(ch, z), G(oasis_semantics(ch, NC), z))
    if no_3dnoise:
        with pytest.raises(SpadeganError, match="no_3dnoise"):
            E.generate(ch, torch.randn(2, ZD))


def test_bad_inputs_are_named(G, engine):
    ch = blocky_channels()
    with pytest.raises(SpadeganError, match="outside"):
        engine.generate(ch + NC)
    with pytest.raises(SpadeganError, match="z must be"):
        engine.generate(ch, torch.randn(2, ZD + 1))
    with pytest.raises(SpadeganError, match="not one-hot"):
        engine.generate(oasis_semantics(ch, NC) * 0.5)
    with pytest.raises(SpadeganError, match="multiple of 32"):
        engine.generate(ch, size=(48, 64))
    with pytest.raises(SpadeganError, match="fp32"):
        OASISEngine.from_generator(G, precision="bf16")
    with pytest.raises(SpadeganError, match="eval mode"):
        OASISEngine.from_generator(make_generator().train())


def test_synthesizer_runs_the_engine(G):
    syn = OASISSynthesizer(G, precision="fp32")
    net = OASISSynthesizer(G, precision="fp32", use_engine=False)
    assert syn.oasis_engine is not None and net.oasis_engine is None and "OASIS engine" in syn.network
    ids = torch.from_numpy(np.where(blocky_channels(b=1).numpy() == 0, 255, blocky_channels(b=1).numpy()))
    table = syn.noise([1], [{int(ids[0, 0, 0]): 7}])
    with torch.no_grad():
        for z in (syn.noise([1]), table, torch.randn(1, ZD, 64, 64)):
            close(syn.generate(ids, None, z), net.generate(ids, None, z))


def test_official_ema_image_through_the_engine(shared, tmp_path):
    """The shared official fixture (ADE20K, channels_G 64 weights as released): the EMA
    generator's test.py image within 1e-4, computed by the engine."""
    from conftest import fixture_dir
    from test_oasis_official import Released
    from test_oasis_runs import sample_label

    run = Released(fixture_dir(shared, "oasis_official", "ade20k"), tmp_path, True)
    syn = OASISSynthesizer.from_checkpoint(run.run, which_epoch="best", precision="fp32")
    assert syn.oasis_engine is not None
    ids = syn.label_ids(sample_label(shared))
    image = syn.generate(torch.from_numpy(ids)[None], None, run.expected["z"], size=(256, 256))
    err = (image - run.expected["EMA_eval"]).abs().max().item()
    assert err <= ATOL, f"EMA_eval: max |diff| {err}"


@pytest.mark.parametrize("form", ["image", "class", "none"])
def test_sparse_gamma_beta(G, form):
    """Per-code constants with only the boundary band computed: forced at every level
    (band_threshold 1, band_min_out 0) and by itself on a map of large regions."""
    net = make_generator(no_3dnoise=True, seed=2) if form == "none" else G
    E, sparse = OASISEngine.from_generator(net), OASISEngine.from_generator(net)
    for blk in sparse.blocks:
        blk.spades.band_threshold, blk.spades.band_min_out = 1.0, 0
    z = {"image": torch.randn(2, ZD), "class": torch.randn(2, NC, ZD), "none": None}[form]
    for ch in (blocky_channels(seed=8), blocky_channels(block=32, seed=9)):
        zz = OASISSynthesizer.noise_map(z, ch) if form == "class" else z
        with torch.no_grad():
            want = net(oasis_semantics(ch, NC), zz)
            close(sparse.generate(ch, z), want)
            close(E.generate(ch, z), want)
