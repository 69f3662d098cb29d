"""The training step against the official trainer (NVlabs/SPADE `Pix2PixTrainer`).

`../shared/fixtures/official_train/ade_tiny` holds two iterations of the unmodified official
trainer on a fixed batch (G step, then D step; TTUR Adam, hinge loss, feature matching, no
VGG): the losses of both iterations, the first iteration's gradients (G's from the G step,
D's from the D step) and the weights after both. spadegan's step, dense and sparse SPADE
alike, must reproduce them: losses and gradients tightly; weights after the two Adam steps
within the network's own learning rate (TTUR: G lr/2, D lr*2), a few where rounding in
near-zero gradients flips a step's sign (Adam with beta1 = 0 moves every weight by about lr
whatever the gradient's size).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from spadegan.options import load_options_file, parse
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


def _iterations(t: Trainer, inputs: dict, record, count: int = 2) -> list[dict]:
    """`count` official iterations on the fixture's batch; `record(stage)` after each step."""
    data = {"label": inputs["label"].float(), "image": inputs["image"],
            "instance": torch.zeros(()), "path": ["0.png", "1.png"]}
    losses = []
    for it in range(count):
        codes, real = t.model.preprocess_input(data, t.device)
        t.run_generator_one_step(codes, real)
        record(f"G{it}")
        t.run_discriminator_one_step(codes, real)
        record(f"D{it}")
        losses.append(t.latest_losses())
    return losses


# Tolerances, and why. The first iteration's losses are computed before any update: they
# agree to float rounding on every CPU (measured <= 6e-6 relative). The gradients of a GAN step
# are piecewise linear in the activations, each LeakyReLU/ReLU input picking its slope by its
# sign: rounding that differs from the official run's (another summation order, as in the
# sparse path, or another CPU's kernels: AVX2 against the AVX-512 ones the fixture was made
# with) moves one of this fixture's ~0.3 M LeakyReLU inputs in up_3 across 0 (-2.2e-7 against
# +1.4e-6; median |x| 0.65), and every gradient upstream of it moves by up to 2e-3 relative.
# Adam with beta1 = 0 then moves each weight by about +-lr whatever its gradient's size, so
# weights whose gradients are near zero step differently, and the D step (on the fake of the
# updated G) and the second iteration inherit that: D's gradients up to 5.5e-2, the second
# iteration's losses up to 1.3e-3 (measured with ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2; with AVX-512 the dense path matches to 1e-6). Dropping the
# feature-matching weight, doubling a loss or a wrong sign is off by 100 % or more. That the
# sparse path is the dense path's function is tested without any of this noise in float64 below.
FIRST_LOSS_RTOL, G_GRAD_RTOL, D_GRAD_RTOL, SECOND_LOSS_RTOL = 2e-5, 5e-3, 0.1, 5e-3
# The weights after two steps, per network in its own learning rate. Adam with beta1 = 0 moves
# a weight by at most lr in its first step and lr * sqrt(1 + beta2) in its second, so two runs
# whose steps differ in sign end at most ADAM_APART = 2 (1 + sqrt(1 + beta2)) lr apart (4.757
# lr; measured with AVX2: G 4.72, D 4.754 lr), plus float32 rounding of unit-scale weights
# (1e-3 of G's lr): any more is not rounding. Most weights agree: at most WEIGHT_FLIPS of a
# network's entries differ by over half its lr (measured with AVX2: G 0.2 %, D 3 %; with
# AVX-512: 0.02 %). A doubled G lr puts G's weights up to 5.7 lr off and 67 % of them over half
# an lr; a halved one 55 %. Buffers (batch-norm statistics, spectral-norm vectors) follow the
# activations, not Adam: within BUFFER_ATOL (measured with AVX2: 1.0e-3).
ADAM_ROUNDING_LRS, WEIGHT_FLIPS, BUFFER_ATOL = 0.01, 0.1, 1.6e-3


def official_adam(opt: dict) -> tuple[dict[str, float], tuple[float, float]]:
    """G's and D's learning rates and Adam's betas as the official
    `Pix2PixModel.create_optimizers` sets them from saved options: TTUR gives G lr/2 and D
    lr*2 with betas (0, 0.9); --no_TTUR lr for both with the options' betas."""
    lr = float(opt["lr"])
    if opt["no_TTUR"]:
        return {"G": lr, "D": lr}, (float(opt["beta1"]), float(opt["beta2"]))
    return {"G": lr / 2, "D": lr * 2}, (0.0, 0.9)


def _check_weights_after(net: torch.nn.Module, expected: dict, lr: float, beta2: float, which: str) -> None:
    """`net`'s weights against the official ones after two Adam steps of learning rate `lr`."""
    params, state = dict(net.named_parameters()), net.state_dict()
    bound = (2 * (1 + math.sqrt(1 + beta2)) + ADAM_ROUNDING_LRS) * lr
    flipped = total = 0
    for k, v in expected.items():
        assert state[k].shape == v.shape, f"{which} {k}"
        diff = (state[k].float() - v.float()).abs()
        if k in params:
            assert float(diff.max()) <= bound, f"{which} {k} after two steps: {float(diff.max()) / lr:.2f} lr off"
            flipped += int((diff > lr / 2).sum())
            total += diff.numel()
        else:
            assert float(diff.max()) <= BUFFER_ATOL, f"{which} buffer {k} after two steps"
    assert flipped <= WEIGHT_FLIPS * total, f"{which}: {flipped} of {total} weights over half an lr off"


@pytest.mark.parametrize("impl", ["dense", "sparse"])
def test_two_iterations_match_the_official_trainer(train_fixture_dir, tmp_path, impl):
    torch.set_num_threads(1)
    expected = torch.load(train_fixture_dir / "expected.pt", weights_only=True)
    inputs = torch.load(train_fixture_dir / "input.pt", weights_only=True)
    t = _trainer(train_fixture_dir, tmp_path, impl)
    grads = {}

    def record(stage: str) -> None:
        if stage == "G0":
            grads["G"] = _grads(t.model.netG)
        elif stage == "D0":
            grads["D"] = _grads(t.model.netD)
    losses = _iterations(t, inputs, record)
    _close(grads["G"], expected["G_grads"], G_GRAD_RTOL, "G gradient")
    _close(grads["D"], expected["D_grads"], D_GRAD_RTOL, "D gradient")
    for it, (got, want, rtol) in enumerate(zip(losses, expected["losses"], (FIRST_LOSS_RTOL, SECOND_LOSS_RTOL))):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=rtol, abs=1e-6), f"iteration {it + 1} loss {k}"
    lrs, (beta1, beta2) = official_adam(load_options_file(train_fixture_dir / "opt.txt"))
    assert beta1 == 0  # the bound below is Adam's with beta1 = 0
    for which, net in (("G", t.model.netG), ("D", t.model.netD)):
        _check_weights_after(net, expected[f"{which}_after"], lrs[which], beta2, which)
    assert t.learning_rates == pytest.approx(lrs)


def test_sparse_step_equals_the_dense_step_in_float64(train_fixture_dir, tmp_path):
    """Sparse and dense SPADE in the whole training step (G step, D step, Adam, three times)
    from the fixture's weights: in float64 every loss, gradient and weight agrees to ~1e-12, so
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
            losses = _iterations(t, inputs, record, count=3)
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
