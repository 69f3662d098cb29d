"""DistributedDataParallel on CPU: 2 gloo processes launched by torchrun vs 1 process.

The test runs this file under `python -m torch.distributed.run --standalone
--nproc_per_node 2`; each rank trains the tiny model on its half of every global batch
(--batchSize 4 -> 2 per rank) with the default SPADE norm `spectralspadesyncbatch3x3`
(CPUSyncBatchNorm all-reduces the batch statistics) and --use_vae (the KLD and the
reparameterisation noise follow the global batch), then dumps its weights. Both ranks must
end identical, and their gradients and weights equal those of one process with --batchSize 4
to rounding.

Both runs are in float64. The gradient is piecewise linear in the activations: every
LeakyReLU/ReLU input picks its slope by its sign (2.6M of them in a G step here). In
float32, 2 processes (or 1 process with another thread count or CPU kernel) round the
forward differently by ~1e-6 relative, and about one of those inputs lies that close to 0
(seed 3 on an AVX-512 Xeon: up_0's second LeakyReLU at [1, 40, 0, 1] is -3.5e-8 in one run
and +1.2e-6 in the other). Its slope flips (0.2 <-> 1), which changes every gradient
upstream of it (G before up_0, and E) by 1.5e-2 and, through the updated G, D's by 2.9e-2:
no tolerance tells that from a real bug (an unscaled KLD changes D's by 2.1e-2). In float64
the forward rounding is ~1e-16, so a flip would need an activation within ~1e-15 of 0, and
the runs agree to ~1e-14.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = 3
N_SAMPLES = 8


def ddp_opt(out: Path, name: str):
    from test_train import tiny_opt
    return tiny_opt(out, "--batchSize", "4", "--use_vae", "--niter", "2", "--niter_decay", "0",
                    "--print_freq", "4", name=name)


def _state(trainer) -> dict:
    return {k: {n: v.detach().clone() for n, v in net.state_dict().items()}
            for k, net in trainer._nets().items()}


def record_first_grads(trainer) -> dict:
    """Keep the gradients of the first iteration (G step and D step), as DDP averaged them."""
    grads: dict = {}
    step = trainer.train_one_step

    def wrapped(i, data):
        step(i, data)
        if not grads:
            for k, net in trainer._nets().items():
                grads[k] = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    trainer.train_one_step = wrapped
    return grads


def worker(out: Path) -> None:
    """One torchrun process."""
    from test_train import SynthPairs

    from spadegan.train.distributed import cleanup_distributed, setup_distributed
    from spadegan.train.trainer import Trainer
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # see the module docstring
    opt = ddp_opt(out, "ddp")
    info = setup_distributed(opt.torch_device)
    assert info.world_size == 2
    t = Trainer(opt, dataset=SynthPairs(n=N_SAMPLES), dist=info, progress=False)
    grads = record_first_grads(t)
    t.run(max_steps=STEPS)
    torch.save({"state": _state(t), "grads": grads}, out / f"rank{info.rank}.pt")
    cleanup_distributed()


def test_two_gloo_processes_match_one_process(tmp_path):
    from test_train import SynthPairs

    from spadegan.train.trainer import Trainer
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for net in r0["state"]:
        for k in r0["state"][net]:
            assert torch.equal(r0["state"][net][k], r1["state"][net][k]), f"ranks differ in {net}.{k}"

    # rank 0 alone wrote the run's files, once
    folder = tmp_path / "ck" / "ddp"
    log = (folder / "loss_log.txt").read_text().splitlines()
    assert sum(line.startswith("====") for line in log) == 1 and len(log) == 1 + STEPS
    saved = torch.load(folder / "latest_net_G.pth", weights_only=True)
    assert all(torch.equal(saved[k], r0["state"]["G"][k]) for k in saved)

    # one process, the same global batch, in float64 like the workers
    torch.set_num_threads(1)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single = Trainer(ddp_opt(tmp_path, "single"), dataset=SynthPairs(n=N_SAMPLES), progress=False)
        init = _state(single)
        grads = record_first_grads(single)
        single.run(max_steps=STEPS)
    finally:
        torch.set_default_dtype(dtype)
    ref = _state(single)
    # the first iteration's gradients (G step with E and KLD, D step) agree to float64
    # rounding (measured 5e-15 G, 1e-14 D, 5e-15 E). Near-zero ones (e.g. biases right before
    # batch norm, mathematically zero) are rounding noise, hence the tolerance relative to the
    # network's largest gradient. A wrong batch split, gradient averaging, KLD scale, noise
    # slice or an unsynchronised batch norm differs by 1e-2 or more.
    for net, g in grads.items():
        assert g.keys() == r0["grads"][net].keys()
        assert all(v.dtype == torch.float64 for v in g.values())
        flat = torch.cat([v.flatten() for v in g.values()])
        other = torch.cat([r0["grads"][net][k].flatten() for k in g])
        assert float((flat - other).norm() / flat.norm()) < 1e-9, f"gradients of {net}"
        scale = float(flat.abs().max())
        for k, v in g.items():
            err = float((v - r0["grads"][net][k]).abs().max())
            assert err <= 1e-9 * float(v.abs().max()) + 1e-10 * scale, f"gradient of {net}.{k}"
    first_losses = (tmp_path / "ck" / "single" / "loss_log.txt").read_text().splitlines()[1]
    assert log[1].split(")")[1] == first_losses.split(")")[1]  # the logged losses (time aside)
    # Adam divides by sqrt(v) + 1e-8, so the rounding noise of mathematically zero gradients
    # (~1e-17 in float64) moves weights by ~1e-9 lr: after STEPS steps the runs still agree
    # to a tiny fraction of how far the weights moved (measured 5e-13).
    for net in ref:
        names = [n for n, _ in single._nets()[net].named_parameters()]
        moved = sum(float((ref[net][n] - init[net][n]).abs().sum()) for n in names)
        diff = sum(float((ref[net][n] - r0["state"][net][n]).abs().sum()) for n in names)
        print(f"{net}: |2 processes - 1 process| / |weight movement| = {diff / moved:.1e}")
        assert diff < 1e-6 * moved, net


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
