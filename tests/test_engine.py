"""The synthesis engine computes what the faithful generator computes (spadegan.engine).

Generators get unit-scale random weights (so SPADE's gamma/beta matter), BatchNorm
statistics calibrated on the test maps and a last conv scaled so that the output is mostly
in tanh's linear range: an output saturated at +-1 would hide any difference. Every
configuration is checked with the per-class sparse path forced on everywhere and with the
dense path everywhere, against the faithful network in eval mode (max abs error <= 1e-4).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reference_spade import unit_scale_
from spadegan import load_checkpoint, networks, options
from spadegan.data.semantics import to_semantics
from spadegan.device import best_precision, describe_hardware
from spadegan.engine import SynthesisEngine, count_flops
from spadegan.errors import SpadeganError

TOL = 1e-4


def tiny_opt(**flags) -> options.Options:
    argv = ["--label_nc", "12", "--contain_dontcare_label", "--ngf", "8", "--crop_size", "64",
            "--gpu_ids", "-1", "--no_instance"]
    if flags.pop("instance", False):
        argv.remove("--no_instance")
    for k, v in flags.items():
        argv += ["--" + k] if v is True else ["--" + k, str(v)]
    return options.parse(argv, train=False)


def tiny_maps(opt, batch: int = 2, seed: int = 0, cell: int = 8):
    """Blocky random label maps (as real maps are), instance maps and z."""
    g = torch.Generator().manual_seed(seed)
    h, w = round(opt.crop_size / opt.aspect_ratio), opt.crop_size
    lab = torch.randint(0, opt.label_channels, (batch, 1, max(1, h // cell), max(1, w // cell)), generator=g)
    lab = F.interpolate(lab.float(), size=(h, w)).long()[:, 0]
    inst = torch.randint(0, 3, (batch, 1, max(1, h // 8), max(1, w // 8)), generator=g).float()
    inst = F.interpolate(inst, size=(h, w))[:, 0]
    z = torch.randn(batch, opt.z_dim, generator=g)
    return lab, (None if opt.no_instance else inst), z


def semantics(opt, lab, inst):
    return to_semantics(lab[:, None], None if inst is None else inst[:, None], opt)


def make_generator(opt, lab, inst, z, seed: int = 1) -> torch.nn.Module:
    """Unit-scale weights, calibrated BatchNorm statistics, unsaturated output; G.opt set."""
    G = unit_scale_(networks.define_G(opt), seed)
    sem = semantics(opt, lab, inst)
    bns = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.momentum = None
            m.reset_running_stats()
        if bns:
            G.train()
            G(sem, z)
        G.eval()
        seen = {}
        hook = G.conv_img.register_forward_hook(lambda m, i, o: seen.setdefault("o", o))
        G(sem, z)
        hook.remove()
        G.conv_img.weight.mul_(0.8 / seen["o"].std())
        G.conv_img.bias.zero_()
    return G


def engine_of(G, precision="fp32", mode="auto"):
    e = SynthesisEngine.from_generator(G, precision=precision)
    if mode == "sparse":  # the per-class shortcut wherever it is possible
        e.sparse_threshold = math.inf
    elif mode == "dense":  # 1x1 kernels have no band: their levels are always lookups
        e.sparse_threshold = -math.inf
    return e


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((((a.float() - b.float()) / 2) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


CONFIGS = [
    dict(),  # spectralspadesyncbatch3x3, the default
    dict(norm_G="spectralspadebatch3x3"),
    dict(norm_G="spectralspadeinstance3x3", crop_size=128),  # instance norm needs >= 2x2 maps
    dict(norm_G="spadeinstance5x5", crop_size=128),
    dict(norm_G="spadesyncbatch5x5"),
    dict(norm_G="spectralspadebatch5x5", instance=True),
    dict(instance=True),
    dict(use_vae=True),
    dict(use_vae=True, instance=True, norm_G="spectralspadeinstance3x3", crop_size=128),
    dict(num_upsampling_layers="more"),
    dict(num_upsampling_layers="most", crop_size=128),
    dict(aspect_ratio=1.5, instance=True),
    dict(aspect_ratio=0.75),
    dict(aspect_ratio=2.0, crop_size=128, num_upsampling_layers="more", label_nc=35,
         contain_dontcare_label=False, instance=True),
    dict(ngf=16, instance=True),  # 256 channels on tiny maps: convolutions as one GEMM
    dict(ngf=16, crop_size=128, norm_G="spectralspadeinstance3x3"),  # and Winograd at 16x16
    dict(norm_G="spectralspadesyncbatch1x1", use_vae=True, ngf=16),  # the built-in model's kind
    dict(norm_G="spadeinstance1x1", crop_size=128, instance=True),
]


def cfg_id(c: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in c.items()) or "default"


@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_engine_matches_faithful_generator(cfg):
    cfg = dict(cfg)
    if cfg.get("contain_dontcare_label") is False:
        cfg.pop("contain_dontcare_label")
        opt = tiny_opt(**cfg)
        opt = opt.replace(contain_dontcare_label=False)
    else:
        opt = tiny_opt(**cfg)
    lab, inst, z = tiny_maps(opt, cell=8)
    G = make_generator(opt, lab, inst, z)
    with torch.no_grad():
        ref = G(semantics(opt, lab, inst), z)
    assert (ref.abs() < 0.99).float().mean() > 0.5  # not saturated: the comparison means something
    for mode in ("sparse", "dense"):
        out = engine_of(G, mode=mode).generate(lab, inst, z)
        assert out.shape == ref.shape and out.dtype == torch.float32
        err = float((out - ref).abs().max())
        assert err <= TOL, f"{mode}: max abs error {err:.2e}"


@pytest.mark.parametrize("hw", [(8, 8), (16, 16), (5, 7), (6, 9)])
def test_winograd_conv_matches_direct_conv(hw):
    from spadegan.engine.engine import _Conv3x3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *hw, 256, generator=g)
    w = torch.randn(64, 256, 3, 3, generator=g) / 48
    b = torch.randn(64, generator=g)
    ref = F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=1).permute(0, 2, 3, 1)
    out = _Conv3x3(w, b, torch.float32, use_winograd=True)(x)
    assert out.shape == ref.shape and float((out - ref).abs().max()) <= 1e-5


def test_engine_matches_official_parity_fixture(parity_dir):
    G = load_checkpoint(parity_dir)
    inp = torch.load(parity_dir / "input.pt")
    expected = torch.load(parity_dir / "expected.pt")["G_eval"]
    for mode in ("sparse", "dense", "auto"):
        out = engine_of(G, mode=mode).generate(inp["label"][:, 0])
        assert float((out - expected).abs().max()) <= TOL


def test_engine_is_at_least_as_close_to_float64_as_the_faithful_network():
    opt = tiny_opt(num_upsampling_layers="most", crop_size=128)
    lab, inst, z = tiny_maps(opt, cell=16)
    G = make_generator(opt, lab, inst, z)
    sem = semantics(opt, lab, inst)
    with torch.no_grad():
        ref32 = G(sem, z)
    out = engine_of(G, mode="sparse").generate(lab, inst, z)
    G64 = G.double()
    with torch.no_grad():
        ref64 = G64(sem.double(), z.double()).float()
    faithful_err = float((ref32 - ref64).abs().max())
    engine_err = float((out - ref64).abs().max())
    assert engine_err <= max(2 * faithful_err, 2e-5)


def test_sparse_path_is_taken_on_real_like_maps_and_agrees(monkeypatch):
    """Large regions (as in real label maps): the layers' rule (`runs_dense`, the one the
    training path uses) picks the band path at the high resolutions, dense on tiny maps."""
    opt = tiny_opt(crop_size=128)
    lab, inst, z = tiny_maps(opt, batch=1, cell=32)
    G = make_generator(opt, lab, inst, z)
    from spadegan.engine import engine as eng
    seen = []
    orig = eng.runs_dense

    def spy(level, pw, groups, threshold=None):
        res = orig(level, pw, groups, threshold)
        seen.append((level.H, res))
        return res

    monkeypatch.setattr(eng, "runs_dense", spy)
    out = engine_of(G).generate(lab, inst, z)
    with torch.no_grad():
        ref = G(semantics(opt, lab, inst), z)
    assert (128, False) in seen and (4, True) in seen
    assert float((out - ref).abs().max()) <= TOL


def test_engine_band_in_chunks_of_taps_agrees(monkeypatch):
    """The band's per-tap product split into chunks of taps (as on large maps) gives the same."""
    from spadegan.engine import engine as eng
    opt = tiny_opt(norm_G="spadesyncbatch5x5", instance=True)
    lab, inst, z = tiny_maps(opt)
    G = make_generator(opt, lab, inst, z)
    with torch.no_grad():
        ref = G(semantics(opt, lab, inst), z)
    monkeypatch.setattr(eng, "_BAND_CHUNK_BYTES", 1)  # one tap per chunk
    out = engine_of(G, mode="sparse").generate(lab, inst, z)
    assert float((out - ref).abs().max()) <= TOL


def test_engine_rejects_unknown_ids_as_the_synthesizer_does():
    """Ids past the class count (dontcare mapped to label_nc) are the Synthesizer's error, not
    "class 0 on an instance edge" (id = class count) or an IndexError (larger ids)."""
    from spadegan.synthesize import Synthesizer
    for cfg in (dict(), dict(instance=True)):
        opt = tiny_opt(**cfg)
        lab, inst, z = tiny_maps(opt, batch=1)
        G = make_generator(opt, lab, inst, z)
        e, syn = engine_of(G), Synthesizer(G, device="cpu", use_engine=False)
        for bad in (opt.label_channels, opt.label_channels + 7, -1):
            ids = lab.clone()
            ids[0, 5:9, 5:9] = bad
            with pytest.raises(SpadeganError) as want:
                syn.label_ids(ids[0].numpy())
            with pytest.raises(SpadeganError) as got:
                e.generate(ids, inst, z)
            assert str(got.value) == str(want.value)
            assert f"label id(s) {bad} (16 px) not known to this model" in str(got.value)


@pytest.mark.parametrize("cfg", [dict(), dict(instance=True, norm_G="spectralspadeinstance3x3", crop_size=128),
                                 dict(use_vae=True)], ids=cfg_id)
def test_bf16_engine_psnr_against_fp32_engine(cfg):
    opt = tiny_opt(**cfg)
    lab, inst, z = tiny_maps(opt, cell=16)
    G = make_generator(opt, lab, inst, z)
    e32 = engine_of(G)
    e16 = engine_of(G, precision="bf16")
    a, b = e32.generate(lab, inst, z), e16.generate(lab, inst, z)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert psnr(a, b) >= 35.0


def test_bf16_psnr_on_a_trained_like_checkpoint(parity_dir):
    """The official fixture (weights saved by the official train.py) in bf16."""
    G = load_checkpoint(parity_dir)
    lab = torch.load(parity_dir / "input.pt")["label"][:, 0]
    assert psnr(engine_of(G).generate(lab), engine_of(G, "bf16").generate(lab)) >= 35.0


def test_output_size_and_batching():
    opt = tiny_opt()
    lab, inst, z = tiny_maps(opt, batch=3)
    G = make_generator(opt, lab, inst, z)
    e = engine_of(G)
    assert e.default_size == (64, 64)
    # a bigger output from the same label maps: the faithful network with a bigger start map
    out = e.generate(lab, inst, z, size=(64, 128))
    with torch.no_grad():
        ref = networks.at_size(G, (64, 128))(semantics(opt, lab, inst), z)
    assert (G.sh, G.sw) == (2, 2)  # G itself is untouched
    assert out.shape == (3, 3, 64, 128) and float((out - ref).abs().max()) <= TOL
    # a batch gives what the images give one by one
    one = torch.cat([e.generate(lab[i:i + 1], None, z[i:i + 1]) for i in range(3)])
    assert float((one - e.generate(lab, None, z)).abs().max()) <= TOL
    with pytest.raises(SpadeganError, match="multiple of 32"):
        e.generate(lab, inst, z, size=(48, 64))


def test_vae_size_is_fixed_and_instance_required():
    opt = tiny_opt(use_vae=True, instance=True)
    lab, inst, z = tiny_maps(opt)
    G = make_generator(opt, lab, inst, z)
    e = engine_of(G)
    with pytest.raises(SpadeganError, match="fixes the output"):
        e.generate(lab, inst, z, size=(64, 128))
    with pytest.raises(SpadeganError, match="instance map"):
        e.generate(lab, None, z)
    # without z: a random style, still a valid image
    out = e.generate(lab, inst)
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1


def test_consume_frees_the_faithful_blocks_and_gives_the_same_result():
    opt = tiny_opt()
    lab, inst, z = tiny_maps(opt)
    G = make_generator(opt, lab, inst, z)
    ref = engine_of(G).generate(lab, inst, z)
    e = SynthesisEngine.from_generator(G, consume=True)
    assert isinstance(G.head_0, torch.nn.Identity) and isinstance(G.up_3, torch.nn.Identity)
    assert torch.equal(e.generate(lab, inst, z), ref)


def test_rejects_pix2pixhd_and_unknown_precision():
    opt = options.parse(["--netG", "pix2pixhd", "--label_nc", "4", "--no_instance", "--ngf", "8",
                         "--crop_size", "32", "--resnet_n_blocks", "1", "--gpu_ids", "-1"], train=False)
    G = networks.define_G(opt)
    with pytest.raises(SpadeganError, match="netG spade"):
        SynthesisEngine.from_generator(G)
    opt = tiny_opt()
    G = networks.define_G(opt)
    with pytest.raises(SpadeganError, match="precision"):
        SynthesisEngine.from_generator(G, precision="int8")


def test_flop_count_and_hardware_probe():
    opt = options.parse(["--dataset_mode", "ade20k", "--gpu_ids", "-1"], train=False)
    G = networks.define_G(opt, init=False)
    # the ADE20K configuration: 362 GFLOP per image (counted as 2 x multiply-adds)
    assert 355e9 < count_flops(G) < 370e9
    hw = describe_hardware("cpu")
    assert hw["device"] == "cpu" and isinstance(hw["bf16"], bool)
    assert best_precision("cpu") in ("fp32", "bf16")
