"""The training step against the official trainer (NVlabs/SPADE `Pix2PixTrainer`).

`../shared/fixtures/official_train/ade_tiny` holds two iterations of the unmodified official
trainer on a fixed batch (G step, then D step; TTUR Adam, hinge loss, feature matching, no
VGG): the losses of both iterations, the first iteration's gradients (G's from the G step,
D's from the D step) and the weights after both. spadegan's step, dense and sparse SPADE
alike, must reproduce them: losses and gradients tightly; weights after the two Adam steps
within a few learning rates (Adam with beta1 = 0 moves every weight by about lr whatever
the gradient's size, so rounding in near-zero gradients can flip a step's sign).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from spadegan.options import parse
from spadegan.train.trainer import Trainer


class _Batch(Dataset):
    def __init__(self, inputs: dict):
        self.inputs = inputs

    def __len__(self) -> int:
        return self.inputs["label"].shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"label": self.inputs["label"][i].float(), "image": self.inputs["image"][i],
                "instance": torch.zeros(()), "path": f"{i}.png"}


def _trainer(train_fixture_dir: Path, tmp_path: Path, impl: str) -> Trainer:
    flags = (train_fixture_dir / "flags.txt").read_text().split()
    flags[flags.index("--checkpoints_dir") + 1] = str(tmp_path)
    opt = parse(flags + ["--seed", "0", "--spade_impl", impl], train=True)
    inputs = torch.load(train_fixture_dir / "input.pt", weights_only=True)
    t = Trainer(opt, dataset=_Batch(inputs), progress=False, log=False)
    for which, net in (("G", t.model.netG), ("D", t.model.netD)):
        net.load_state_dict(torch.load(train_fixture_dir / f"latest_net_{which}.pth", weights_only=True))
    return t


def _grads(net: torch.nn.Module) -> dict:
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def _close(ours: dict, theirs: dict, rel: float, what: str) -> None:
    assert ours.keys() == theirs.keys(), what
    scale = max(float(v.abs().max()) for v in theirs.values())
    for k, v in theirs.items():
        err = float((ours[k] - v).abs().max())
        assert err <= rel * float(v.abs().max()) + 1e-6 * scale, f"{what} {k}: off by {err:.3g}"


def _two_iterations(t: Trainer, inputs: dict, record) -> list[dict]:
    """Two official iterations on the fixture's batch; `record(stage)` after each step."""
    data = {"label": inputs["label"].float(), "image": inputs["image"],
            "instance": torch.zeros(()), "path": ["0.png", "1.png"]}
    losses = []
    for it in range(2):
        codes, real = t.model.preprocess_input(data, t.device)
        t.run_generator_one_step(codes, real)
        record(f"G{it}")
        t.run_discriminator_one_step(codes, real)
        record(f"D{it}")
        losses.append(t.latest_losses())
    return losses


def test_dense_step_matches_the_official_trainer(train_fixture_dir, tmp_path):
    """The dense path runs the official operations in the official order: it reproduces the
    losses, the first iteration's gradients and, within Adam's rounding, the weights."""
    torch.set_num_threads(1)
    expected = torch.load(train_fixture_dir / "expected.pt", weights_only=True)
    inputs = torch.load(train_fixture_dir / "input.pt", weights_only=True)
    t = _trainer(train_fixture_dir, tmp_path, "dense")
    grads = {}

    def record(stage: str) -> None:
        if stage == "G0":
            grads["G"] = _grads(t.model.netG)
        elif stage == "D0":
            grads["D"] = _grads(t.model.netD)
    losses = _two_iterations(t, inputs, record)
    _close(grads["G"], expected["G_grads"], 1e-4, "G gradient")
    _close(grads["D"], expected["D_grads"], 1e-4, "D gradient")
    for it, (got, want) in enumerate(zip(losses, expected["losses"])):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), f"iteration {it + 1} loss {k}"
    lr = max(t.learning_rates.values())
    for which, net in (("G", t.model.netG), ("D", t.model.netD)):
        mine = net.state_dict()
        for k, v in expected[f"{which}_after"].items():
            assert mine[k].shape == v.shape
            assert float((mine[k].float() - v.float()).abs().max()) <= 4 * lr, f"{which} {k} after two steps"


def test_sparse_step_equals_the_dense_step_in_float64(train_fixture_dir, tmp_path):
    """Sparse and dense SPADE in the whole training step (G step, D step, Adam, twice) from
    the fixture's weights: in float64 every loss, gradient and weight agrees to ~1e-12, so
    the sparse path reproduces the official trainer wherever the dense one does."""
    torch.set_num_threads(1)
    inputs = torch.load(train_fixture_dir / "input.pt", weights_only=True)
    runs = {}
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for impl in ("dense", "sparse"):
            t = _trainer(train_fixture_dir, tmp_path / impl, impl)
            seen: dict = {}

            def record(stage: str, t=t, seen=seen) -> None:
                net = t.model.netG if stage[0] == "G" else t.model.netD
                seen[stage] = _grads(net)
            losses = _two_iterations(t, inputs, record)
            runs[impl] = (losses, seen, {k: v.clone() for k, v in t.model.netG.state_dict().items()},
                          {k: v.clone() for k, v in t.model.netD.state_dict().items()})
    finally:
        torch.set_default_dtype(dtype)
    (dl, dg, dG, dD), (sl, sg, sG, sD) = runs["dense"], runs["sparse"]
    for a, b in zip(dl, sl):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-10, abs=1e-12), k
    for stage in dg:
        assert next(iter(dg[stage].values())).dtype == torch.float64
        _close(sg[stage], dg[stage], 1e-8, f"{stage} gradient")
    for ref, got in ((dG, sG), (dD, sD)):
        for k, v in ref.items():
            assert float((got[k].double() - v.double()).abs().max()) <= 1e-9 * max(1.0, float(v.abs().max())), k


def test_sparse_first_step_matches_the_official_trainer(train_fixture_dir, tmp_path):
    """The sparse path in float32 against the official G step: the same losses; the
    gradients within a tolerance set by one rounding tie. The sparse path sums in another
    order (~1e-6 relative in the forward pass), which on this fixture moves one of the 0.3M
    inputs of up_3's LeakyReLU across 0 (-2.2e-7 dense, +1.4e-6 sparse; median |x| 0.65):
    its slope flips (0.2 <-> 1) and every gradient upstream moves by 2e-4 .. 2e-3. (After
    Adam's sign-like first step that reaches D's gradients too, hence the float64 test.)"""
    torch.set_num_threads(1)
    expected = torch.load(train_fixture_dir / "expected.pt", weights_only=True)
    inputs = torch.load(train_fixture_dir / "input.pt", weights_only=True)
    t = _trainer(train_fixture_dir, tmp_path, "sparse")
    data = {"label": inputs["label"].float(), "image": inputs["image"],
            "instance": torch.zeros(()), "path": ["0.png", "1.png"]}
    codes, real = t.model.preprocess_input(data, t.device)
    t.run_generator_one_step(codes, real)
    _close(_grads(t.model.netG), expected["G_grads"], 5e-3, "G gradient")
    got = t.latest_losses()
    for k in ("GAN", "GAN_Feat"):
        assert got[k] == pytest.approx(expected["losses"][0][k], rel=1e-5), k
