"""OASIS pieces on hand-made inputs: the discriminator's shape, the class-balanced N+1 loss,
LabelMix; and (further down) training with --netD oasis: 3D noise, EMA, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from spadegan.losses import class_balance_weights, labelmix_loss, labelmix_mask, oasis_loss
from spadegan.networks.discriminator import OASISDiscriminator, oasis_depth
from spadegan.options import parse

from test_train import coco_root  # noqa: F401  (fixture)


def _opt(crop: int = 64, ndf: int = 8, *extra: str):
    return parse(["--dataset_mode", "landscapes", "--crop_size", str(crop), "--ndf", str(ndf),
                  "--gpu_ids", "-1", *extra], train=True)


@pytest.mark.parametrize("crop,depth", [(256, 6), (128, 5), (64, 4), (32, 3)])
def test_discriminator_predicts_n_plus_1_classes_per_pixel(crop, depth):
    opt = _opt(crop)
    assert oasis_depth(crop) == depth
    D = OASISDiscriminator(opt)
    assert len(D.down) == depth and len(D.up) == depth
    out = D(torch.randn(2, 3, crop, crop))
    assert out.shape == (2, 1 + 10, crop, crop)  # landscapes: 10 classes, + "fake"


def test_discriminator_widths_are_the_papers_at_ndf_64():
    D = OASISDiscriminator(_opt(256, 64))
    assert [b.conv2.weight_orig.shape[0] for b in D.down] == [128, 128, 256, 256, 512, 512]
    assert [b.conv2.weight_orig.shape[0] for b in D.up] == [512, 256, 256, 128, 128, 64]
    assert D.up[1].conv1.weight_orig.shape[1] == 2 * 512  # skip connection concatenated


def test_class_balance_weights():
    # 2 images of 2x2: class 0 on 6 pixels, class 1 on 1, class 3 on 1 (class 2 absent)
    label = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [3, 0]]])
    w = class_balance_weights(label, 4)
    # N / (K n_c): 8 / (3 * 6), 8 / (3 * 1)
    assert torch.allclose(w[label == 0], torch.full((6,), 8 / 18))
    assert torch.allclose(w[label == 1], torch.tensor([8 / 3]))
    assert torch.allclose(w[label == 3], torch.tensor([8 / 3]))
    assert float(w.mean()) == pytest.approx(1.0)
    # dontcare (class 3) weighs nothing and does not count as present
    w = class_balance_weights(label, 4, ignore_index=3)
    assert float(w[label == 3]) == 0
    assert torch.allclose(w[label == 1], torch.tensor([8 / 2]))  # N counts every pixel, K the others


def test_n_plus_1_loss_values():
    label = torch.tensor([[[0, 1]]])  # one image, 1x2, classes 0 and 1
    logits = torch.zeros(1, 3, 1, 2)  # channels: fake, class 0, class 1
    logits[0, 1, 0, 0] = 2.0  # pixel 0 says class 0
    logits[0, 0, 0, 1] = 1.0  # pixel 1 says fake
    lse0 = math.log(math.exp(2) + 2)
    lse1 = math.log(math.exp(1) + 2)
    # real: targets class 0 -> channel 1, class 1 -> channel 2; weights 2 / (2 * 1) = 1 each
    want_real = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    assert float(oasis_loss(logits, label, True)) == pytest.approx(want_real, rel=1e-6)
    # fake: channel 0 everywhere, unweighted
    want_fake = ((lse0 - 0.0) + (lse1 - 1.0)) / 2
    assert float(oasis_loss(logits, label, False)) == pytest.approx(want_fake, rel=1e-6)
    # class balancing: class 1 on 1 of 4 pixels weighs 4 / (2 * 1) = 2, class 0 4 / (2 * 3)
    label4 = torch.tensor([[[0, 0, 0, 1]]])
    logits4 = torch.randn(1, 3, 1, 4)
    ce = F.cross_entropy(logits4, label4 + 1, reduction="none")[0, 0]
    want = float((ce[:3].sum() * (4 / 6) + ce[3] * 2) / 4)
    assert float(oasis_loss(logits4, label4, True)) == pytest.approx(want, rel=1e-6)


def test_labelmix_mask_takes_whole_classes_and_loss_is_zero_for_a_consistent_d():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (3, 16, 16), generator=g)
    mask = labelmix_mask(label, torch.randint(0, 2, (3, 6), generator=torch.Generator().manual_seed(1)))
    assert mask.shape == (3, 1, 16, 16)
    for b in range(3):
        for c in label[b].unique():
            vals = mask[b, 0][label[b] == c].unique()
            assert vals.numel() == 1 and float(vals) in (0.0, 1.0)
    assert 0 < float(mask.mean()) < 1  # both sources used for this seed
    # a discriminator acting per pixel is consistent: D(mix) = mix of D(real), D(fake)
    real, fake = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    mixed = mask * real + (1 - mask) * fake
    conv = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        assert float(labelmix_loss(mask, conv(mixed), conv(fake), conv(real))) < 1e-10
        d_mix = conv(mixed) + 1.0  # off by 1 everywhere
        assert float(labelmix_loss(mask, d_mix, conv(fake), conv(real))) == pytest.approx(1.0, rel=1e-5)


# ---- training with --netD oasis: 3D noise, EMA, resume ----------------------------------------
def _oasis_opt(tmp_path, *extra, name="run", netG="oasis"):
    """A tiny --netD oasis run: the published generator (netG oasis, the default) or SPADE's."""
    from test_train import tiny_opt
    return tiny_opt(tmp_path, "--netD", "oasis", "--netG", netG, "--ema_decay", "0.9", *extra, name=name)


def test_oasis_options_defaults_and_refusals():
    from spadegan.errors import SpadeganError
    opt = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--gpu_ids", "-1"], train=True)
    assert (opt.use_3d_noise, opt.z_dim, opt.ema_decay, opt.beta1, opt.beta2) == (True, 64, 0.9999, 0.0, 0.999)
    assert opt.no_vgg_loss and opt.no_ganFeat_loss and opt.lambda_labelmix == 10.0
    assert opt.netG == "oasis" and (opt.lr_g, opt.lr_d) == (1e-4, 4e-4)  # the published model and lrs
    spade = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--netG", "spade", "--gpu_ids", "-1"], train=True)
    assert (spade.lr / 2, spade.lr * 2, spade.lr_g, spade.lr_d) == (1e-4, 4e-4, 0, 0)  # TTUR from --lr
    assert spade.generator_input_nc == spade.semantic_nc + 64
    mine = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--z_dim", "16", "--ema_decay", "0",
                  "--gpu_ids", "-1"], train=True)
    assert (mine.z_dim, mine.ema_decay) == (16, 0.0)
    with pytest.raises(SpadeganError, match="choose one"):
        parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--netG", "spade", "--use_vae", "--gpu_ids", "-1"],
              train=True)
    with pytest.raises(SpadeganError, match="no style encoder"):
        parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--use_vae", "--gpu_ids", "-1"], train=True)
    with pytest.raises(SpadeganError, match="ema_decay"):
        parse(["--dataset_mode", "landscapes", "--ema_decay", "1.5", "--gpu_ids", "-1"], train=True)


def test_ema_update_arithmetic():
    from spadegan import networks
    from spadegan.train.ema import GeneratorEMA
    opt = parse(["--dataset_mode", "landscapes", "--ngf", "8", "--crop_size", "32", "--gpu_ids", "-1"], train=True)
    G = networks.define_G(opt)
    ema = GeneratorEMA(G, 0.75)
    before = {k: v.clone() for k, v in ema.net.named_parameters()}
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(G)
    for k, p in G.named_parameters():
        assert torch.allclose(dict(ema.net.named_parameters())[k], 0.75 * before[k] + 0.25 * p, atol=1e-6), k
    assert not any(p.requires_grad for p in ema.net.parameters())
    # SyncBatchNorm becomes plain BatchNorm: the average never waits for other processes
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ema.net.modules())


@pytest.mark.parametrize("netG", ["oasis", "spade"])
def test_oasis_training_resume_equals_uninterrupted_with_ema(tmp_path, netG):
    """Exact resume with the published generator and the official EMA (buffers averaged, the
    statistics pass on the live average at prints and saves) and with SPADE's generator."""
    from test_train import SynthPairs, _assert_same, _weights

    from spadegan.train.state import OPTIM_FILE
    from spadegan.train.trainer import Trainer
    N, k = 5, 2
    ref = Trainer(_oasis_opt(tmp_path, "--print_freq", "6", name="ref", netG=netG), dataset=SynthPairs(),
                  progress=False)
    assert isinstance(ref.model.netD, OASISDiscriminator)
    ref.run(max_steps=N)
    assert set(ref.d_losses) == {"D_Fake", "D_real", "D_LabelMix"} and set(ref.g_losses) == {"GAN"}
    first = Trainer(_oasis_opt(tmp_path, "--print_freq", "6", name="cut", netG=netG), dataset=SynthPairs(),
                    progress=False)
    first.run(max_steps=k)
    resumed = Trainer(_oasis_opt(tmp_path, "--print_freq", "6", "--continue_train", name="cut", netG=netG),
                      dataset=SynthPairs(), progress=False)
    resumed.run(max_steps=N)
    nets = ("G", "D", "EMA")
    _assert_same(_weights(tmp_path / "ck" / "ref", nets), _weights(tmp_path / "ck" / "cut", nets))
    sa = torch.load(tmp_path / "ck" / "ref" / OPTIM_FILE, weights_only=True)["ema"]
    sb = torch.load(tmp_path / "ck" / "cut" / OPTIM_FILE, weights_only=True)["ema"]
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    # the saved average is not G, and its batch statistics were measured for it
    g = _weights(tmp_path / "ck" / "ref", ("G", "EMA"))
    block, norm = ("body.0", "first_norm") if netG == "oasis" else ("head_0", "param_free_norm")
    key = f"{block}.norm_0.{norm}.running_mean"
    assert not torch.equal(g["G"][f"{block}.conv_0.weight_orig"], g["EMA"][f"{block}.conv_0.weight_orig"])
    assert not torch.equal(g["G"][key], g["EMA"][key])
    if netG == "spade":
        assert not torch.equal(sa[key], g["EMA"][key])  # the live average keeps its own buffers
    else:  # official: G's buffers are averaged in too (u moves), and the live average got statistics
        assert ref.ema.official and ref._ema_refreshed_at == 3  # the print at sample 6 (iteration 3)
        assert not torch.equal(g["G"][f"{block}.conv_0.weight_u"], g["EMA"][f"{block}.conv_0.weight_u"])


def test_oasis_checkpoint_synthesizes_with_ema_and_seeded_3d_noise(tmp_path):
    from test_train import SynthPairs

    from spadegan.checkpoint import load_checkpoint
    from spadegan.synthesize import Synthesizer
    from spadegan.train.trainer import Trainer
    from spadegan.options import save_options
    opt = _oasis_opt(tmp_path, "--z_dim", "8", netG="spade")
    Trainer(opt, dataset=SynthPairs(), progress=False).run(max_steps=3)
    folder = save_options(opt)
    with pytest.warns(UserWarning, match="moving average"):
        G = load_checkpoint(folder)
    ema = torch.load(folder / "latest_net_EMA.pth", weights_only=True)
    assert all(torch.equal(G.state_dict()[k], ema[k]) for k in ema)
    raw = load_checkpoint(folder, ema=False)
    assert not torch.equal(raw.state_dict()["fc.weight"], ema["fc.weight"])
    # spadegan eval (every <epoch>_net_G it evaluates) takes the average too, unless --no_ema
    from spadegan.evaluation.split import load_networks
    G_eval, _ = load_networks(folder / "latest_net_G.pth", G.opt, torch.device("cpu"), "random")
    assert torch.equal(G_eval.state_dict()["fc.weight"], ema["fc.weight"])
    G_raw, _ = load_networks(folder / "latest_net_G.pth", G.opt, torch.device("cpu"), "random", ema=False)
    assert torch.equal(G_raw.state_dict()["fc.weight"], raw.state_dict()["fc.weight"])
    with pytest.warns(UserWarning, match="fast engine"):
        syn = Synthesizer.from_checkpoint(folder)
    label = SynthPairs()[0]["label"][0].long().numpy()
    a, b, c = (np.asarray(syn.synthesize(label, seed=s), dtype=np.float32) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # restyling one region: its pixels get the region's own vector, the others keep theirs
    region = int(label[0, 0])
    d = np.asarray(syn.synthesize(label, seed=1, region_seeds={region: 99}), dtype=np.float32)
    same = np.asarray(syn.synthesize(label, seed=1, region_seeds={region: 1}), dtype=np.float32)
    assert not np.array_equal(d, a) and np.array_equal(same, a)
    table = syn.noise([1], [{region: 99}])
    assert table.shape == (1, syn.label_channels, 8)
    assert torch.equal(table[0, region], torch.randn(8, generator=torch.Generator().manual_seed(99)))
    others = [c for c in range(syn.label_channels) if c != region]
    assert torch.equal(table[0, others], syn.noise([1])[0].expand(len(others), 8))
    sem = torch.nn.functional.one_hot(torch.from_numpy(label)[None], syn.label_channels).permute(0, 3, 1, 2).float()
    # without the engine, G is built for the device (--spade_impl auto: sparse on the CPU); the
    # one-hot tensor is what the dense implementation reads
    from spadegan import networks
    assert syn.G.spade_impl == ("sparse" if syn.device.type == "cpu" else "dense")
    noise = networks.define_G(syn.G.opt, init=False, impl="dense").with_noise(sem, table)[:, syn.label_channels:]
    inside = torch.from_numpy(label == region)
    assert torch.equal(noise[0, :, inside], table[0, region][:, None].expand(-1, int(inside.sum())))


def test_oasis_train_test_synthesize_commands_on_coco(tmp_path, monkeypatch, coco_root, capsys):
    """The README's OASIS example, tiny: train on the COCO sample, then test and synthesize."""
    from test_train import COCO

    from spadegan.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--name", "coco_oasis", "--dataroot", coco_root, *COCO, "--ndf", "8",
                 "--batchSize", "2", "--netD", "oasis", "--netG", "spade", "--z_dim", "16", "--ema_decay", "0.9",
                 "--niter", "1", "--print_freq", "1"]) == 0
    folder = tmp_path / "checkpoints" / "coco_oasis"
    assert {"latest_net_G.pth", "latest_net_D.pth", "latest_net_EMA.pth", "1_net_EMA.pth"} <= {
        p.name for p in folder.iterdir()}
    log = (folder / "loss_log.txt").read_text()
    assert "D_LabelMix" in log and "GAN_Feat" not in log
    test = ["test", "--name", "coco_oasis", "--dataroot", coco_root, *COCO, "--use_3d_noise", "--z_dim", "16",
            "--how_many", "1", "--phase", "val"]
    assert main(test) == 0
    assert "moving average of the generator's weights" in capsys.readouterr().err
    images = list((tmp_path / "results" / "coco_oasis" / "test_latest" / "images" / "synthesized_image").glob("*.png"))
    assert len(images) == 1
    label = str(next(Path(coco_root, "val_label").glob("*.png")))
    assert main(["synthesize", "--checkpoint", str(folder), "--label", label, "--out", "syn", "--seed", "3"]) == 0
    assert len(list((tmp_path / "syn").glob("*.png"))) == 1
