"""Training the published OASIS model (--netD oasis, which implies --netG oasis) against the
official train.py: ../shared/fixtures/oasis_official/train_step (two official iterations on
two ADE20K samples at channels_G 16, every random draw recorded; see its README.md).

The fixture's start weights are written as an official run folder (`models/best_{G,D,EMA}.pth`)
and loaded by `spadegan train --continue_train --which_epoch best` (fine-tuning a released
run); the recorded z draws and LabelMix coins are replayed through the model's `noise` /
`coins` hooks and the EMA statistics pass; the trainer's own step (G step, the three-pass D
step, the official EMA) then has to give the official losses, gradients and states within the
fixture's suggested tolerances. Also: the published defaults (74.3 M parameters for ADE20K at
ngf 64, the per-dataset settings), the label-channel rule and the official LabelMix mask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import fixture_dir
from test_oasis_official import released_state_dicts
from spadegan import networks
from spadegan.errors import SpadeganError
from spadegan.losses import labelmix_class_mask
from spadegan.networks.oasis import oasis_channels
from spadegan.oasis_checkpoint import dataset_ids, official_d_key, official_d_state_dict, oasis_label_channels
from spadegan.options import parse

from test_train import coco_root  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::spadegan.errors.SpadeganWarning")


# ---- the published model and settings -------------------------------------------------------------
def test_netD_oasis_defaults_to_the_published_generator_and_settings():
    opt = parse(["--dataset_mode", "ade20k", "--netD", "oasis", "--gpu_ids", "-1"], train=True)
    assert opt.netG == "oasis" and opt.no_instance
    G = networks.define_G(opt)
    assert round(G.num_parameters() / 1e6, 1) == 74.3  # the official OASIS_Generator for ADE20K at 64
    assert G.oasis_opt.latent_size == (8, 8) and G.oasis_opt.semantic_nc == 151
    assert (opt.lr_g, opt.lr_d, opt.beta1, opt.beta2) == (1e-4, 4e-4, 0.0, 0.999)
    assert (opt.niter, opt.niter_decay, opt.ema_decay, opt.lambda_labelmix) == (200, 0, 0.9999, 10.0)
    assert (opt.z_dim, opt.use_3d_noise, opt.no_vgg_loss, opt.load_size) == (64, True, True, 256)
    assert not opt.labelmix_per_image and not opt.d_classifier_torch_init
    city = parse(["--dataset_mode", "cityscapes", "--netD", "oasis", "--gpu_ids", "-1"], train=True)
    assert (city.lr_g, city.lr_d, city.lambda_labelmix, city.ema_decay) == (4e-4, 4e-4, 5.0, 0.999)
    assert networks.define_G(city, init=False).oasis_opt.latent_size == (8, 16)
    coco = parse(["--dataset_mode", "coco", "--netD", "oasis", "--gpu_ids", "-1"], train=True)
    assert coco.niter == 100 and coco.no_instance
    # SPADE's generator with OASIS' D stays reachable by name
    spade = parse(["--dataset_mode", "ade20k", "--netD", "oasis", "--netG", "spade", "--gpu_ids", "-1"], train=True)
    assert spade.netG == "spade" and round(networks.define_G(spade, init=False).num_parameters() / 1e6, 1) == 98.4
    with pytest.raises(SpadeganError, match="--netD oasis"):
        parse(["--dataset_mode", "ade20k", "--netG", "oasis", "--gpu_ids", "-1"], train=True)
    with pytest.raises(SpadeganError, match="use_vae"):
        parse(["--dataset_mode", "coco", "--netD", "oasis", "--gpu_ids", "-1", "--use_vae"], train=True)


def test_discriminator_predicts_oasis_channels_and_classifier_init():
    opt = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--gpu_ids", "-1", "--crop_size", "64",
                 "--ndf", "8"], train=True)
    D = networks.define_D(opt)
    assert D.classifier.out_channels == 1 + 11  # landscapes: 10 classes + OASIS' dontcare channel 0, + fake
    official = float(D.classifier.weight.detach().std())
    mine = networks.define_D(opt.replace(d_classifier_torch_init=True))
    assert official < 0.01 < float(mine.classifier.weight.detach().std())  # xavier gain 0.02 vs PyTorch's default


@pytest.mark.parametrize("mode", ["ade20k", "coco", "cityscapes"])
def test_label_channels_follow_the_official_datasets(mode):
    opt = parse(["--dataset_mode", mode, "--netD", "oasis", "--gpu_ids", "-1"], train=True)
    nc = opt.label_nc + int(opt.contain_dontcare_label)
    label = torch.arange(nc).view(1, 1, 1, nc)  # every id spadegan's dataset can give
    want = oasis_label_channels(dataset_ids(label, opt), mode)[:, 0]
    assert torch.equal(oasis_channels(label, opt), want)
    with pytest.raises(SpadeganError, match="outside"):
        oasis_channels(torch.tensor([[[nc]]]), opt)


def test_official_labelmix_mask_ties_class_0_to_class_1():
    label = torch.tensor([[[0, 1, 2, 5]], [[0, 0, 2, 5]]])  # classes 0, 1, 2, 5 over the batch
    mask = labelmix_class_mask(label, torch.tensor([1, 0, 1, 0]))
    assert mask.shape == (2, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]  # class 0 ends with class 1's coin
    assert labelmix_class_mask(label, torch.tensor([1, 1, 0, 1]))[:, 0, 0].tolist() == [[1, 1, 0, 1], [1, 1, 0, 1]]
    assert labelmix_class_mask(label, torch.tensor([0, 1, 1, 0]))[:, 0, 0].tolist() == [[0, 1, 1, 0], [0, 0, 1, 0]]
    no_one = torch.tensor([[[0, 2]]])
    assert labelmix_class_mask(no_one, torch.tensor([1, 0]))[0, 0, 0].tolist() == [1, 0]


# ---- the official training step --------------------------------------------------------------------
class Batch(torch.utils.data.Dataset):
    """The fixture's two samples as spadegan's ADE20K dataset gives them (ids 0..150 kept)."""

    def __init__(self, inp: dict):
        self.inp = inp

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return {"label": self.inp["label"][i].float(), "instance": torch.zeros(()), "image": self.inp["image"][i],
                "path": self.inp["names"][i]}


@pytest.fixture(scope="module")
def official(shared, tmp_path_factory):
    """(trainer after the replayed official iterations, recorded results, expected.pt, start weights)."""
    from spadegan.train.trainer import Trainer
    fx = fixture_dir(shared, "oasis_official", "train_step")
    spec = json.loads((fx / "spec.json").read_text())
    inp = torch.load(fx / "input.pt", weights_only=True)
    rnd = torch.load(fx / "randomness.pt", weights_only=True)
    exp = torch.load(fx / "expected.pt", weights_only=True)
    start = released_state_dicts(spec)
    root = tmp_path_factory.mktemp("oasis_train")
    models = root / "ck" / "oasis_ade20k" / "models"
    models.mkdir(parents=True)
    for name, state in start.items():
        torch.save(state, models / name)
    opt = parse(["--dataset_mode", "ade20k", "--netD", "oasis", "--ngf", "16", "--batchSize", "2", "--gpu_ids", "-1",
                 "--checkpoints_dir", str(root / "ck"), "--name", "oasis_ade20k", "--continue_train",
                 "--which_epoch", "best", "--no_flip", "--seed", "0", "--nThreads", "0"], train=True)
    tr = Trainer(opt, dataset=Batch(inp), progress=False, log=False)
    draws = [d["value"] for d in rnd["draws"] if d["fn"] == "randn"]
    z_steps = [draws[0], draws[1], draws[3], draws[4]]  # G step, D step per iteration; draws[2]: EMA pass
    tr.model.noise = lambda shape: z_steps.pop(0)
    coins = [m["coins"] for m in rnd["labelmix"]]

    def coin_flips(n: int) -> torch.Tensor:
        c = coins.pop(0)
        assert c.numel() == n
        return c
    tr.model.coins = coin_flips
    data = torch.utils.data.default_collate([Batch(inp)[0], Batch(inp)[1]])
    got: dict = {"losses": []}
    for it in (0, 1):
        tr.train_one_step(it, data)
        got["losses"].append({**{k: float(v) for k, v in tr.g_losses.items()},
                              **{k: float(v) for k, v in tr.d_losses.items()}})
        if it == 0:
            got["G_grad"] = {k: p.grad.clone() for k, p in tr.model.netG.named_parameters()}
            got["D_grad"] = {official_d_key(k): p.grad.clone() for k, p in tr.model.netD.named_parameters()}
            tr._refresh_ema(batches=[data], noise=lambda b: draws[2])  # the official pass at cur_iter 0
        tr.iteration += 1
    assert not z_steps and not coins
    return tr, got, exp, start


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.slow  # the official iterations at 256 x 256 (about 2-3 minutes on one CPU thread)
def test_losses_match_the_official_iterations(official):
    _, got, exp, _ = official
    names = {"G_adv": "GAN", "D_fake": "D_Fake", "D_real": "D_real", "D_labelmix": "D_LabelMix"}
    for it in (0, 1):
        for off, mine in names.items():
            tol = 1e-3 if off == "D_labelmix" else 2e-5
            assert _rel(got["losses"][it][mine], exp["losses"][it][off]) <= tol, (it, off)


@pytest.mark.slow  # the official iterations at 256 x 256 (about 2-3 minutes on one CPU thread)
def test_iteration_0_gradients_match(official):
    tr, got, exp, _ = official
    g = got["G_grad"]
    noise = set(exp["G_grad_noise_driven"])
    top = max(float(v.abs().max()) for v in g.values())
    for k, ref in exp["G_grad_l2"].items():
        if k in noise:
            assert float(g[k].abs().max()) < 1e-5 * top, k
            continue
        assert _rel(float(g[k].norm()), float(ref)) <= 1e-3, k
    for k, ref in {**exp["G_grad"], **exp["G_grad_sample"]}.items():
        if k in noise:
            continue
        mine = g[k] if k in exp["G_grad"] else g[k].reshape(-1)[::math.ceil(g[k].numel() / 2048)]
        assert float((mine - ref).norm()) <= 5e-3 * float(ref.norm()), k
        assert float((mine - ref).abs().max()) <= 2e-2 * float(ref.abs().max()), k
    for k, ref in exp["D_grad_l2"].items():
        assert _rel(float(got["D_grad"][k].norm()), float(ref)) <= 1e-3, k
    for k, ref in exp["D_grad"].items():
        assert float((got["D_grad"][k] - ref).abs().max()) <= 1e-3 * float(ref.abs().max()), k


def _stored(state: dict, exp: dict, what: str) -> dict:
    """{key: (mine, official)} for the entries expected.pt stores whole or sampled."""
    out = {}
    for k, ref in exp[what].items():
        out[k] = (state[k], ref)
    for k, ref in exp.get(what + "_sample", {}).items():
        out[k] = (state[k].reshape(-1)[::math.ceil(state[k].numel() / 2048)], ref)
    return out


@pytest.mark.slow  # the official iterations at 256 x 256 (about 2-3 minutes on one CPU thread)
def test_states_after_two_iterations_match(official):
    tr, _, exp, start = official
    lr_g, lr_d = 1e-4, 4e-4
    G = tr.model.netG.state_dict()
    noise = set(exp["G_grad_noise_driven"])
    for k, (mine, ref) in _stored(G, exp, "G_after").items():
        if not mine.is_floating_point():
            continue  # num_batches_tracked: the official SynchronizedBatchNorm never counts
        if k.endswith(("running_mean", "running_var")):
            tol = 1e-3
        elif k.endswith(("weight_u", "weight_v")):
            tol = 5e-4
        else:
            tol = 5 * lr_g
        assert float((mine - ref).abs().max()) <= tol, k
    for k, ref in exp["G_delta_l2"].items():
        if k in noise or not G[k].is_floating_point():
            continue
        d = float((G[k].double() - start["best_G.pth"][k].double()).norm())
        tol = 5e-3 * float(ref) if k.endswith(("running_mean", "running_var", "weight_u", "weight_v")) \
            else 1e-3 * float(ref) + lr_g
        assert abs(d - float(ref)) <= tol, k
    ema = tr.ema.net.state_dict()
    for k, (mine, ref) in _stored(ema, exp, "EMA_after").items():
        if mine.is_floating_point():
            assert float((mine - ref).abs().max()) <= 5e-6, k
    for k, ref in exp["EMA_delta_l2"].items():
        if ema[k].is_floating_point():
            d = float((ema[k].double() - start["best_EMA.pth"][k].double()).norm())
            assert _rel(d, float(ref)) <= 1e-2 or abs(d - float(ref)) <= 1e-9, k
    D = official_d_state_dict(tr.model.netD)
    for k, ref in exp["D_after"].items():
        tol = 1e-3 if k.endswith(("weight_u", "weight_v")) else 5 * lr_d
        assert float((D[k] - ref).abs().max()) <= tol, k
    for k, ref in exp["D_delta_l2"].items():
        if k.endswith(("weight_u", "weight_v")):
            d = float((D[k].double() - start["best_D.pth"][k].double()).norm())
            assert _rel(d, float(ref)) <= 1e-3, k


# ---- the README's commands with the published model ----------------------------------------------
def test_published_model_train_test_synthesize_commands_on_coco(tmp_path, monkeypatch, coco_root):  # noqa: F811
    """`--netD oasis` on the COCO sample, then `spadegan test --netG oasis` and `spadegan
    synthesize` of the run (its generator reads COCO's own ids, 255 = dontcare at channel 0)."""
    from test_train import COCO

    from spadegan.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--name", "coco_oasis", "--dataroot", coco_root, *COCO, "--ndf", "8", "--batchSize", "2",
                 "--netD", "oasis", "--z_dim", "16", "--niter", "1", "--print_freq", "1"]) == 0
    folder = tmp_path / "checkpoints" / "coco_oasis"
    saved = torch.load(folder / "latest_net_G.pth", weights_only=True)
    assert "body.0.norm_0.first_norm.running_mean" in saved and "fc.weight" in saved  # the official names
    assert saved["fc.weight"].shape[1] == 16 + 183  # z first, then COCO-Stuff's 182 classes + dontcare
    assert "D_LabelMix" in (folder / "loss_log.txt").read_text()
    assert main(["test", "--name", "coco_oasis", "--dataroot", coco_root, *COCO, "--netG", "oasis", "--z_dim", "16",
                 "--how_many", "1", "--phase", "val"]) == 0
    assert len(list((tmp_path / "results" / "coco_oasis" / "test_latest" / "images" / "synthesized_image").glob(
        "*.png"))) == 1
    label = str(next(Path(coco_root, "val_label").glob("*.png")))
    assert main(["synthesize", "--checkpoint", str(folder), "--which_epoch", "latest", "--label", label, "--out", "syn",
                 "--seed", "3"]) == 0
    assert len(list((tmp_path / "syn").glob("*.png"))) == 1


def test_fine_tuning_an_official_run_names_missing_files(tmp_path):
    from test_train import SynthPairs, tiny_opt

    from spadegan.train.trainer import Trainer
    models = tmp_path / "ck" / "run" / "models"
    models.mkdir(parents=True)
    (models / "best_G.pth").write_bytes(b"")
    opt = tiny_opt(tmp_path, "--netD", "oasis", "--continue_train", "--which_epoch", "best")
    with pytest.raises(SpadeganError, match=r"best_D\.pth, best_EMA\.pth not found in the official OASIS run"):
        Trainer(opt, dataset=SynthPairs(), progress=False)


def test_fine_tuned_official_run_saves_and_synthesizes(tmp_path, coco_root):  # noqa: F811
    """An official run folder (made here from a tiny spadegan run, D under the official names)
    fine-tuned with --continue_train --which_epoch best: the released files stay, the fine-tuned
    weights are spadegan's `latest_net_*.pth` beside them, and they synthesize."""
    from test_train import COCO

    from spadegan.checkpoint import load_checkpoint
    from spadegan.data.datasets import create_dataset
    from spadegan.train.trainer import Trainer
    args = ["--dataroot", coco_root, *COCO, "--ndf", "8", "--batchSize", "2", "--netD", "oasis", "--z_dim", "16",
            "--niter", "1", "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "ck")]
    opt = parse(["--name", "tiny", *args], train=True)
    tr = Trainer(opt, dataset=create_dataset(opt), progress=False, log=False)
    models = tmp_path / "ck" / "released" / "models"
    models.mkdir(parents=True)
    torch.save(tr.model.netG.state_dict(), models / "best_G.pth")
    torch.save(official_d_state_dict(tr.model.netD), models / "best_D.pth")
    torch.save(tr.ema.net.state_dict(), models / "best_EMA.pth")
    (models.parent / "opt.txt").write_text("dataset_mode: coco\n")
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    fine = parse(["--name", "released", *args, "--continue_train", "--which_epoch", "best"], train=True)
    ft = Trainer(fine, dataset=create_dataset(fine), progress=False, log=False)
    assert ft.official_run == models and ft.iteration == 0
    assert torch.equal(ft.model.netD.classifier.weight, tr.model.netD.classifier.weight)
    assert all(torch.equal(v, tr.ema.net.state_dict()[k]) for k, v in ft.ema.net.state_dict().items())
    ft.run(max_steps=1)
    run = models.parent
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before  # the released files stay
    assert (run / "opt.txt").read_text() == "dataset_mode: coco\n" and (run / "opt.json").is_file()
    G = load_checkpoint(run / "latest_net_EMA.pth")
    assert torch.equal(G.state_dict()["fc.weight"], torch.load(run / "latest_net_EMA.pth", weights_only=True)["fc.weight"])
    assert not torch.equal(ft.model.netG.state_dict()["fc.weight"], tr.model.netG.state_dict()["fc.weight"])


def test_official_ema_averages_buffers_and_refreshes_the_live_average():
    from spadegan.train.ema import OFFICIAL_STAT_FORWARDS, GeneratorEMA
    opt = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--ngf", "4", "--crop_size", "32",
                 "--gpu_ids", "-1"], train=True)
    G = networks.define_G(opt)
    ema = GeneratorEMA(G, 0.75, official=True)
    before = {k: v.clone() for k, v in ema.net.state_dict().items()}
    with torch.no_grad():
        for k, v in G.state_dict().items():
            v.add_(4 if not v.is_floating_point() else 1.0)
    ema.update(G)
    after, g = ema.net.state_dict(), G.state_dict()
    for k in ("body.0.norm_0.first_norm.running_mean", "body.0.conv_0.weight_u", "fc.weight"):
        assert torch.allclose(after[k], 0.75 * before[k] + 0.25 * g[k], atol=1e-6), k
    assert int(after["body.0.norm_0.first_norm.num_batches_tracked"]) == 1  # int(0 * 0.75 + 4 * 0.25)
    calls = []
    sem = torch.zeros(2, 11, 32, 32)
    sem[:, 1] = 1
    mean = after["body.0.norm_0.first_norm.running_mean"].clone()

    def run(net, batch):
        calls.append(net.training)
        net(sem, z=torch.randn(2, 64))
    net = ema.refresh_statistics(range(60), run)
    assert net is ema.net and not net.training and calls == [True] * OFFICIAL_STAT_FORWARDS == [True] * 51
    assert not torch.equal(ema.net.state_dict()["body.0.norm_0.first_norm.running_mean"], mean)  # live, in place


def test_labelmix_coins_official_and_per_image_variant():
    from spadegan.train.model import Pix2PixModel
    opt = parse(["--dataset_mode", "landscapes", "--netD", "oasis", "--ngf", "4", "--ndf", "4", "--crop_size", "32",
                 "--gpu_ids", "-1"], train=True)
    label = torch.tensor([[[1, 2], [3, 4]], [[1, 2], [3, 4]]])
    asked = []
    model = Pix2PixModel(opt, coins=lambda n: asked.append(n) or torch.tensor([1, 0, 1, 0]))
    mask = model.labelmix_mask(label)
    assert asked == [4] and torch.equal(mask[0], mask[1])  # one coin per class, shared by the batch
    assert mask[0, 0].tolist() == [[1, 0], [1, 0]]
    variant = Pix2PixModel(opt.replace(labelmix_per_image=True),
                           noise=lambda shape: torch.tensor([[1.0] * 12, [-1.0] * 12]))
    mask = variant.labelmix_mask(label)  # a coin per image and class (from the noise stream)
    assert mask[0].eq(1).all() and mask[1].eq(0).all()
