"""The faithful networks: official-checkpoint parity, an independent reference, shapes, gradients."""

from __future__ import annotations

import copy
import shlex

import pytest
import torch
import torch.nn as nn

from spadegan import networks, options
from spadegan.data import to_semantics
from spadegan.layers.spectral import conv2d_output_scaled, spectral_norm

from reference_spade import multiscale_discriminator, spade_generator, unit_scale_

TOL = 1e-4


def maxdiff(a, b) -> float:
    if isinstance(a, (list, tuple)):
        return max(maxdiff(x, y) for x, y in zip(a, b, strict=True))
    return (a - b).abs().max().item()


# ---- the official parity fixture ---------------------------------------------------------
@pytest.fixture(scope="module")
def official(parity_dir):
    argv = shlex.split((parity_dir / "flags.txt").read_text())
    opt = options.parse(argv, train=True)
    load = lambda name: torch.load(parity_dir / name, map_location="cpu", weights_only=True)  # noqa: E731
    return opt, load("latest_net_G.pth"), load("latest_net_D.pth"), load("input.pt"), load("expected.pt")


def test_official_state_dicts_load_strict(official):
    opt, sdG, sdD, _, _ = official
    G, D = networks.define_G(opt), networks.define_D(opt)
    G.load_state_dict(sdG, strict=True)
    D.load_state_dict(sdD, strict=True)
    assert set(G.state_dict()) == set(sdG) and set(D.state_dict()) == set(sdD)


def test_official_parity_G_eval_and_D(official):
    opt, sdG, sdD, inp, exp = official
    G, D = networks.define_G(opt), networks.define_D(opt)
    G.load_state_dict(sdG)
    D.load_state_dict(sdD)
    G.eval(), D.eval()
    sem = to_semantics(inp["label"], inp["instance"], opt)
    with torch.no_grad():
        fake = G(sem)
        assert maxdiff(fake, exp["G_eval"]) <= TOL
        d_fake = D(torch.cat([sem, exp["G_eval"]], 1))
        d_real = D(torch.cat([sem, inp["image"]], 1))
    assert len(d_fake) == len(exp["D_fake"]) == opt.num_D
    assert maxdiff(d_fake, exp["D_fake"]) <= TOL
    assert maxdiff(d_real, exp["D_real"]) <= TOL


def test_official_parity_G_train_mode(official):
    """Batch statistics + one spectral-norm power iteration, from the saved state."""
    opt, sdG, _, inp, exp = official
    G = networks.define_G(opt)
    G.load_state_dict(sdG)
    G.train()
    sem = to_semantics(inp["label"], inp["instance"], opt)
    with torch.no_grad():
        out = G(sem)
    assert maxdiff(out, exp["G_train"]) <= TOL
    # the power iteration moved u (as the official code does) and BN statistics were updated
    assert not torch.equal(G.state_dict()["head_0.conv_0.weight_u"], sdG["head_0.conv_0.weight_u"])
    assert not torch.equal(G.state_dict()["head_0.norm_0.param_free_norm.running_mean"],
                           sdG["head_0.norm_0.param_free_norm.running_mean"])


# ---- spectral norm against PyTorch's own implementation -----------------------------------
@pytest.mark.parametrize("layer", [lambda: nn.Conv2d(5, 7, 3), lambda: nn.Linear(6, 4),
                                   lambda: nn.ConvTranspose2d(5, 7, 3)])
def test_spectral_norm_matches_torch(layer):
    torch.manual_seed(0)
    ours = layer()
    theirs = copy.deepcopy(ours)
    spectral_norm(ours)
    torch.nn.utils.spectral_norm(theirs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 8, 8) if not isinstance(ours, nn.Linear) else torch.randn(2, 6)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train"), theirs.train(mode == "train")
        assert maxdiff(ours(x), theirs(x)) < 1e-6
    assert set(ours.state_dict()) == {"weight_orig", "weight_u", "weight_v", "bias"}
    for k, v in theirs.state_dict().items():
        assert torch.allclose(ours.state_dict()[k], v, atol=1e-6), k


def test_spectral_norm_gradients_flow_to_weight_orig():
    conv = spectral_norm(nn.Conv2d(3, 4, 3))
    conv(torch.randn(1, 3, 6, 6)).sum().backward()
    assert conv.weight_orig.grad is not None and conv.weight_orig.grad.abs().sum() > 0


@pytest.mark.parametrize("cin,cout,size,bias", [(32, 48, 4, True), (16, 8, 3, False), (4, 6, 12, True)])
def test_conv2d_output_scaled_equals_the_spectral_conv_in_float64(cin, cout, size, bias):
    """conv(x, W / sigma) + b = conv(x, W) / sigma + b: outputs, the gradients of x, weight_orig
    and bias, and the power-iteration vectors agree, in train mode over two steps. Where the
    weight is the larger tensor (the first two cases) the output is scaled; otherwise (the
    third), and in eval mode, the layer is called as it is."""
    torch.manual_seed(0)
    ref = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1, bias=bias)).double()
    fast = copy.deepcopy(ref)
    calls = []
    fast.register_forward_pre_hook(lambda *a: calls.append(1))  # runs only when called as a module
    x = torch.randn(2, cin, size, size, dtype=torch.float64)
    for _ in range(2):
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ref, out_fast = ref(xr), conv2d_output_scaled(fast, xf)
        target = torch.randn_like(out_ref)
        (out_ref * target).sum().backward()
        (out_fast * target).sum().backward()
        assert maxdiff(out_fast, out_ref) < 1e-12
        assert maxdiff(xf.grad, xr.grad) < 1e-12
        for name, p in ref.named_parameters():
            assert maxdiff(dict(fast.named_parameters())[name].grad, p.grad) < 1e-12, name
        assert torch.equal(fast.weight_u, ref.weight_u) and torch.equal(fast.weight_v, ref.weight_v)
    scaled = cin * cout * 9 > 2 * cout * size * size
    assert calls == ([] if scaled else [1, 1])
    fast.eval(), ref.eval()
    assert maxdiff(conv2d_output_scaled(fast, x), ref(x)) < 1e-12 and len(calls) == (1 if scaled else 3)


# ---- configurations beyond the fixture, against the independent reference ------------------
G_CONFIGS = [
    dict(norm_G="spectralspadesyncbatch3x3"),
    dict(norm_G="spadeinstance3x3"),
    dict(norm_G="spectralspadebatch5x5"),
    dict(norm_G="spectralspadeinstance5x5", no_instance=False),
    dict(norm_G="spectralspadesyncbatch3x3", use_vae=True),
    dict(norm_G="spectralspadesyncbatch3x3", aspect_ratio=2.0, no_instance=False),
    dict(norm_G="spectralspadeinstance3x3", num_upsampling_layers="more", crop_size=128),
    dict(norm_G="spectralspadebatch3x3", num_upsampling_layers="most", crop_size=128, use_vae=True),
]


def tiny_argv(crop_size=64, aspect_ratio=1.0, no_instance=True, use_vae=False, **flags) -> list[str]:
    argv = ["--gpu_ids", "-1", "--dataset_mode", "coco", "--label_nc", "6", "--ngf", "8", "--ndf", "8",
            "--crop_size", str(crop_size), "--load_size", str(crop_size), "--aspect_ratio", str(aspect_ratio),
            "--z_dim", "16"]
    if no_instance:
        argv.append("--no_instance")
    if use_vae:
        argv.append("--use_vae")
    for k, v in flags.items():
        argv += ["--" + k] if v is True else ["--" + k, str(v)]
    return argv


def tiny_inputs(opt, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = round(opt.crop_size / opt.aspect_ratio), opt.crop_size
    label = torch.randint(0, opt.label_channels, (batch, 1, h, w), generator=g)
    # blocky maps, as real label maps are
    label = torch.nn.functional.interpolate(label[:, :, ::8, ::8].float(), size=(h, w)).long()
    inst = torch.randint(0, 3, (batch, 1, h // 8, w // 8), generator=g).float()
    inst = torch.nn.functional.interpolate(inst, size=(h, w))
    z = torch.randn(batch, opt.z_dim, generator=g)
    return to_semantics(label, inst, opt), z


@pytest.mark.parametrize("cfg", G_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_generator_matches_reference(cfg, train):
    opt = options.parse(tiny_argv(**cfg), train=True)
    G = unit_scale_(networks.define_G(opt), seed=1)
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    sem, z = tiny_inputs(opt)
    G.train(train)
    with torch.no_grad():
        ours = G(sem, z)
    kind, ks = ("instance" if "instance" in opt.norm_G else "batch"), int(opt.norm_G[-3])
    ref = spade_generator(sd, sem, z, kind=kind, ks=ks, up_layers=opt.num_upsampling_layers,
                          crop_size=opt.crop_size, aspect_ratio=opt.aspect_ratio, ngf=opt.ngf, train=train)
    assert ours.shape == (2, 3, round(opt.crop_size / opt.aspect_ratio), opt.crop_size)
    assert maxdiff(ours, ref) <= TOL
    assert ours.std() > 0.05  # not saturated or constant: SPADE matters


D_CONFIGS = [dict(), dict(num_D=3), dict(n_layers_D=3), dict(norm_D="spectralbatch"),
             dict(norm_D="instance", num_D=1, no_instance=False)]


@pytest.mark.parametrize("cfg", D_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_discriminator_matches_reference(cfg):
    opt = options.parse(tiny_argv(**cfg), train=True)
    D = unit_scale_(networks.define_D(opt), seed=2).eval()
    sd = {k: v.clone() for k, v in D.state_dict().items()}
    sem, _ = tiny_inputs(opt)
    x = torch.cat([sem, torch.rand(2, 3, *sem.shape[2:]) * 2 - 1], 1)
    with torch.no_grad():
        ours = D(x)
    sub = opt.norm_D.replace("spectral", "")
    ref = multiscale_discriminator(sd, x, num_D=opt.num_D, n_layers_D=opt.n_layers_D, sub_norm=sub or None)
    assert len(ours) == opt.num_D and all(len(s) == opt.n_layers_D + 1 for s in ours)
    assert maxdiff(ours, ref) <= TOL


def test_discriminator_without_feature_loss_returns_predictions_only():
    opt = options.parse(tiny_argv(no_ganFeat_loss=True), train=True)
    D = networks.define_D(opt)
    out = D(torch.randn(1, opt.semantic_nc + 3, 64, 64))
    assert len(out) == 2 and all(len(s) == 1 and s[0].shape[1] == 1 for s in out)


# ---- encoder, pix2pixHD, shapes and gradients ---------------------------------------------
@pytest.mark.parametrize("crop", [32, 64, 128, 256])
def test_encoder_works_for_every_crop_size(crop):
    opt = options.parse(tiny_argv(crop_size=crop, use_vae=True), train=True)
    E = networks.define_E(opt)
    mu, logvar = E(torch.randn(2, 3, crop, crop))
    assert mu.shape == logvar.shape == (2, opt.z_dim)
    assert hasattr(E, "layer6") == (crop >= 256)  # the official layer set, so E checkpoints load


def test_pix2pixhd_generator_shapes_and_keys():
    opt = options.parse(tiny_argv(netG="pix2pixhd", resnet_n_blocks=2, resnet_n_downsample=2), train=True)
    assert opt.norm_G == "instance"
    G = networks.define_G(opt)
    out = G(tiny_inputs(opt)[0])
    assert out.shape == (2, 3, 64, 64)
    keys = set(G.state_dict())
    assert "model.1.0.weight" in keys and "model.1.0.bias" not in keys  # normed convs drop bias
    opt2 = options.parse(tiny_argv(netG="pix2pixhd", norm_G="spectralinstance", resnet_n_blocks=1,
                                   resnet_n_downsample=1), train=True)
    assert "model.1.0.weight_orig" in networks.define_G(opt2).state_dict()


ALL_COMBOS = [(netG, norm) for netG, norm in [
    ("spade", "spectralspadesyncbatch3x3"), ("spade", "spadebatch3x3"), ("spade", "spectralspadeinstance5x5"),
    ("pix2pixhd", "instance"), ("pix2pixhd", "spectralbatch")]]


# every generator norm with the default D, and every D norm with the cheapest generator
COMBOS = [(g, n, "spectralinstance") for g, n in ALL_COMBOS] + \
    [("pix2pixhd", "instance", d) for d in ("spectralbatch", "instance", "spectral")]


@pytest.mark.parametrize("netG,norm_G,norm_D", COMBOS)
def test_shapes_and_gradients_everywhere(netG, norm_G, norm_D):
    # SPADE generators start from crop/32: instance norm needs more than a 1x1 map
    crop = 64 if netG == "spade" and "instance" in norm_G else 32
    flags = dict(netG=netG, norm_G=norm_G, norm_D=norm_D, crop_size=crop)
    if netG == "pix2pixhd":
        flags.update(resnet_n_blocks=1, resnet_n_downsample=2)
    opt = options.parse(tiny_argv(**flags), train=True)
    G, D = networks.define_G(opt), networks.define_D(opt)
    sem, z = tiny_inputs(opt)
    fake = G(sem, z)
    assert fake.shape == (2, 3, crop, crop) and fake.abs().max() <= 1
    pred = D(torch.cat([sem, fake], 1))
    loss = sum(p[-1].mean() for p in pred)
    loss.backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in G.parameters())


def test_deterministic_for_a_seed():
    opt = options.parse(tiny_argv(use_vae=True), train=True)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        G = networks.define_G(opt).eval()
        sem, _ = tiny_inputs(opt)
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(G(sem))  # z drawn from the seeded global generator
    assert torch.equal(outs[0], outs[1])


def test_vgg19_layout_matches_torchvision_keys():
    vgg = networks.VGG19()
    keys = set(vgg.state_dict())
    assert {"features.0.weight", "features.28.weight", "features.28.bias"} <= keys
    assert "features.30.weight" not in keys  # relu5_1 is the last layer used
    feats = vgg(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
