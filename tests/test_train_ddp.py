"""DistributedDataParallel on CPU: 2 gloo processes launched by torchrun, or by spadegan's
own launcher (what `spadegan train --gpu_ids 0,1` uses), vs 1 process.

The torchrun test runs this file under `python -m torch.distributed.run --standalone
--nproc_per_node 2`; the launcher test starts `spadegan train` twice through
`spadegan.train.launch.launch` on two CPU devices. Each rank trains the tiny model on its half of every global batch
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

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spadegan.errors import SpadeganError

STEPS = 3
N_SAMPLES = 8


def ddp_argv(out: Path, name: str) -> list[str]:
    from test_train import tiny_argv
    return tiny_argv(out, "--batchSize", "4", "--use_vae", "--niter", "2", "--niter_decay", "0",
                     "--print_freq", "4", name=name)


def ddp_opt(out: Path, name: str):
    from spadegan.options import parse
    return parse(ddp_argv(out, name), train=True)


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


def check_against_one_process(tmp_path: Path, name: str) -> None:
    """The ranks' rank{0,1}.pt (weights after STEPS steps, first gradients) and the run's files
    in tmp_path/ck/<name> against one process with the same global batch, in float64."""
    from test_train import SynthPairs

    from spadegan.train.trainer import Trainer
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for net in r0["state"]:
        for k in r0["state"][net]:
            assert torch.equal(r0["state"][net][k], r1["state"][net][k]), f"ranks differ in {net}.{k}"

    # rank 0 alone wrote the run's files, once
    folder = tmp_path / "ck" / name
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


def test_two_gloo_processes_match_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    check_against_one_process(tmp_path, "ddp")


# ---- spadegan's own launcher (`spadegan train --gpu_ids 0,1,...`) ----------------------------------
def launched_worker(out: str, argv: list[str]) -> int:
    """What each launched process runs: `spadegan train` (train_main) in float64 on SynthPairs,
    dumping its weights after STEPS steps and its first gradients to out/rank<r>.pt."""
    from test_train import SynthPairs

    from spadegan.train import cli
    from spadegan.train.trainer import Trainer
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # see the module docstring
    cli._prepare_dataset = lambda opt, show: (opt, SynthPairs(n=N_SAMPLES))
    run = Trainer.run

    def recording_run(self, max_steps=None):
        grads = record_first_grads(self)
        result = run(self, max_steps=STEPS)
        torch.save({"state": _state(self), "grads": grads}, Path(out) / f"rank{self.dist.rank}.pt")
        return result
    Trainer.run = recording_run
    return cli.train_main(argv)


def test_launcher_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    from spadegan.train.launch import CPU_PROCESSES_ENV, launch, launch_devices
    argv = ddp_argv(tmp_path, "launched")
    monkeypatch.setenv(CPU_PROCESSES_ENV, "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    devices = launch_devices(ddp_opt(tmp_path, "launched"))
    assert devices == [torch.device("cpu")] * 2
    assert launch(functools.partial(launched_worker, str(tmp_path)), argv, devices) == 0
    check_against_one_process(tmp_path, "launched")


COCO_ARGS = ["--dataset_mode", "coco", "--max_dataset_size", "4", "--preprocess_mode", "fixed",
             "--load_size", "64", "--crop_size", "64", "--ngf", "8", "--ndf", "8", "--nThreads", "0",
             "--seed", "1", "--batchSize", "2", "--no_vgg_loss", "--display_freq", "100000", "--print_freq", "1"]


def _launch_command(tmp_path: Path, coco: Path, name: str, niter: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "spadegan.cli", "train", "--name", name, "--checkpoints_dir",
            str(tmp_path), "--dataroot", str(coco), *COCO_ARGS, "--niter", str(niter)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPADEGAN_CPU_PROCESSES": "2"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)


def _finish(proc: subprocess.Popen, out: list[str]) -> str:
    try:
        out.append(proc.communicate(timeout=180)[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return "".join(out)


def test_train_command_launches_processes_that_finish_and_write_once(tmp_path, shared):
    from spadegan.train.state import read_iter_file
    coco = shared / "data" / "coco_stuff_sample"
    proc = _launch_command(tmp_path, coco, "two", niter=2)
    text = _finish(proc, [])
    assert proc.returncode == 0, text[-3000:]
    assert text.count("starting 2 DistributedDataParallel processes, one per device: cpu, cpu") == 1
    assert text.count("DistributedDataParallel: 2 processes (gloo), 1 samples each of the global --batchSize 2") == 1
    assert text.count("----------------- Options") == 1 and text.count("Training was successfully finished") == 1
    folder = tmp_path / "two"
    log = (folder / "loss_log.txt").read_text().splitlines()
    assert sum(line.startswith("====") for line in log) == 1 and len(log) == 1 + 4  # 2 epochs of 2 steps
    assert {"opt.txt", "opt.pkl", "opt.json", "latest_net_G.pth", "latest_net_D.pth", "2_net_G.pth",
            "latest_optim.pth"} <= {p.name for p in folder.iterdir()}
    assert read_iter_file(folder / "iter.txt") == (3, 0)
    assert not list(folder.glob("*.tmp"))


def test_sigterm_to_the_launcher_reaches_every_process_once(tmp_path, shared):
    # the launcher alone gets the signal (as from `kill PID`); it passes it on once, so the
    # trainers finish their step and rank 0 saves `latest` (a second signal would quit unsaved)
    from spadegan.train.state import read_iter_file
    proc = _launch_command(tmp_path, shared / "data" / "coco_stuff_sample", "stop", niter=500)
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("(epoch:"):
            os.kill(proc.pid, signal.SIGTERM)
            break
    text = _finish(proc, out)
    assert proc.returncode == 0, text[-3000:]
    assert text.count("SIGTERM received") == 1 and "saved 'latest'" in text and "interrupted" not in text
    assert (tmp_path / "stop" / "latest_net_G.pth").is_file()
    epoch, iters = read_iter_file(tmp_path / "stop" / "iter.txt")
    assert epoch == 1 and iters > 0


def test_an_error_in_the_processes_is_reported_once(tmp_path, monkeypatch):
    from spadegan.train.cli import train_main
    monkeypatch.setenv("SPADEGAN_CPU_PROCESSES", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    missing = tmp_path / "nothing"
    with pytest.raises(SpadeganError) as e:
        train_main(["--name", "x", "--checkpoints_dir", str(tmp_path), "--dataset_mode", "coco",
                    "--dataroot", str(missing), "--no_vgg_loss", "--batchSize", "2"])
    assert str(e.value).startswith(f"--dataroot {missing} does not exist")  # not once per process
    assert not (tmp_path / "x").exists()


# ---- which devices the launcher picks (CUDA queries replaced) ------------------------------------
@pytest.fixture
def cuda4(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for var in ("WORLD_SIZE", "SPADEGAN_RANK_DEVICE", "SPADEGAN_CPU_PROCESSES"):
        monkeypatch.delenv(var, raising=False)


def _devices(*flags: str):
    from spadegan.options import parse
    from spadegan.train.launch import launch_devices
    return launch_devices(parse(list(flags), train=True))


def test_several_gpu_ids_launch_one_process_per_gpu(cuda4, monkeypatch):
    assert _devices("--gpu_ids", "2,0", "--batchSize", "4") == [torch.device("cuda", 2), torch.device("cuda", 0)]
    assert _devices("--gpu_ids", "1") is None  # one GPU: this process
    assert _devices("--gpu_ids", "0,1", "--batchSize", "2", "--device", "cuda:1") is None  # an explicit device wins
    with pytest.raises(SpadeganError, match=r"--gpu_ids 0,5 asks for GPU 5, but this machine has 4"):
        _devices("--gpu_ids", "0,5", "--batchSize", "2")
    with pytest.raises(SpadeganError, match="--gpu_ids 1,1 lists a GPU twice"):
        _devices("--gpu_ids", "1,1", "--batchSize", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: torchrun started the processes
    assert _devices("--gpu_ids", "0,1", "--batchSize", "2") is None
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SPADEGAN_RANK_DEVICE", "cuda:1")  # one of the launched processes
    assert _devices("--gpu_ids", "0,1", "--batchSize", "2") is None
    monkeypatch.delenv("SPADEGAN_RANK_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no CUDA: the CPU, one process
    assert _devices("--gpu_ids", "0,1", "--batchSize", "2") is None


def test_hidden_cpu_processes_variable(cuda4, monkeypatch):
    monkeypatch.setenv("SPADEGAN_CPU_PROCESSES", "3")
    assert _devices("--gpu_ids", "0", "--batchSize", "3") == [torch.device("cpu")] * 3
    with pytest.raises(SpadeganError, match="--batchSize 4 is the global batch and must be a multiple of "
                                            r"the number of processes \(3\)"):
        _devices("--gpu_ids", "-1", "--batchSize", "4")
    monkeypatch.setenv("SPADEGAN_CPU_PROCESSES", "1")
    assert _devices("--gpu_ids", "-1") is None
    monkeypatch.setenv("SPADEGAN_CPU_PROCESSES", "two")
    with pytest.raises(SpadeganError, match="SPADEGAN_CPU_PROCESSES='two'"):
        _devices("--gpu_ids", "-1")


def test_each_process_gets_its_device(cuda4, monkeypatch):
    import warnings

    import spadegan.device
    from spadegan.options import parse
    from spadegan.train.distributed import launched_device, rank_device, setup_distributed
    opt = parse(["--gpu_ids", "0,1", "--batchSize", "2"], train=True)
    monkeypatch.setenv("SPADEGAN_RANK_DEVICE", "cuda:3")  # started by the launcher
    assert launched_device() == torch.device("cuda", 3) == rank_device(opt)
    assert setup_distributed(torch.device("cpu")).device == torch.device("cpu")  # one process: as given
    monkeypatch.delenv("SPADEGAN_RANK_DEVICE")
    assert launched_device() is None
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: cuda:LOCAL_RANK later, no "first id only" message
    monkeypatch.setattr(spadegan.device, "_SAID", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rank_device(opt) == torch.device("cuda")
    assert rank_device(parse(["--gpu_ids", "-1"], train=True)) == torch.device("cpu")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
