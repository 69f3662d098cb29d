"""Training: exact resume, Ctrl-C, atomic saves, schedule, AMP, the official output files,
`spadegan train` / `spadegan test` on the COCO-Stuff sample, and a real learning signal.

Most tests use `SynthPairs`, a tiny in-memory dataset (10 classes, 32x32, random flips
drawn from the global numpy RNG so the per-sample seeding is exercised); conftest runs
every test on one thread.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from spadegan.errors import SpadeganError
from spadegan.options import parse
from spadegan.train.state import OPTIM_FILE, read_iter_file
from spadegan.train.trainer import Trainer


class SynthPairs(Dataset):
    """Blocky label maps with a colour per class; flips come from the global numpy RNG."""

    def __init__(self, n: int = 6, size: int = 32, nc: int = 10):
        self.n, self.size, self.nc = n, size, nc

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        r = np.random.default_rng(i)
        lab = np.kron(r.integers(0, self.nc, (4, 4)), np.ones((self.size // 4, self.size // 4), dtype=np.int64))
        if np.random.rand() < 0.5:  # augmentation through the global RNG, as many datasets do
            lab = lab[:, ::-1].copy()
        label = torch.from_numpy(lab).float()[None]
        pal = torch.linspace(-1, 1, self.nc)
        ids = label[0].long()
        image = torch.stack([pal[ids], pal.flip(0)[ids], torch.full_like(pal[ids], 0.25)])
        return {"label": label, "instance": torch.zeros(()), "image": image, "path": f"synth{i}.png"}


def tiny_argv(tmp_path: Path, *extra: str, name: str = "run") -> list[str]:
    """`spadegan train` flags of a tiny run (checkpoints in tmp_path/ck/<name>)."""
    return ["--name", name, "--checkpoints_dir", str(tmp_path / "ck"), "--dataset_mode", "landscapes",
            "--ngf", "8", "--ndf", "8", "--crop_size", "32", "--load_size", "32", "--no_vgg_loss",
            "--batchSize", "2", "--nThreads", "0", "--seed", "3", "--niter", "1", "--niter_decay", "2",
            "--print_freq", "1000", "--display_freq", "1000", "--save_latest_freq", "1000", *extra]


def tiny_opt(tmp_path: Path, *extra: str, name: str = "run"):
    return parse(tiny_argv(tmp_path, *extra, name=name), train=True)


def _weights(folder: Path, nets=("G", "D")) -> dict:
    return {k: torch.load(folder / f"latest_net_{k}.pth", weights_only=True) for k in nets}


def _assert_same(a: dict, b: dict) -> None:
    for net in a:
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"


def _flat(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for k in sorted(x, key=str):
            yield from _flat(x[k])
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _flat(v)


# ---- exact resume -------------------------------------------------------------------------------
@pytest.mark.parametrize("how,vae", [("max_steps", False), ("sigint", True)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, how, vae):
    extra = ("--use_vae",) if vae else ()
    N, k = 7, 2  # 3 batches per epoch: stop mid-epoch 1, resume through the lr decay of epochs 2-3
    ref = Trainer(tiny_opt(tmp_path, *extra, name="ref"), dataset=SynthPairs(), progress=False)
    out = ref.run(max_steps=N)
    assert out["iteration"] == N and out["stopped"] == "max_steps"

    first = Trainer(tiny_opt(tmp_path, *extra, name="cut"), dataset=SynthPairs(), progress=False)
    if how == "sigint":
        step = first.train_one_step

        def step_then_ctrl_c(i, data):
            step(i, data)
            if first.iteration + 1 == k:  # the counter is bumped after the step
                os.kill(os.getpid(), signal.SIGINT)
        first.train_one_step = step_then_ctrl_c
        before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
        out = first.run()
        assert out["stopped"] == "signal"
        assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    else:
        out = first.run(max_steps=k)
    assert out["iteration"] == k
    assert read_iter_file(tmp_path / "ck" / "cut" / "iter.txt") == (1, k * 2)

    resumed = Trainer(tiny_opt(tmp_path, *extra, "--continue_train", name="cut"), dataset=SynthPairs(),
                      progress=False)
    assert (resumed.epoch, resumed.epoch_iter, resumed.iteration) == (1, k * 2, k)
    out = resumed.run(max_steps=N)
    assert out["iteration"] == N

    nets = ("G", "D", "E") if vae else ("G", "D")
    _assert_same(_weights(tmp_path / "ck" / "ref", nets), _weights(tmp_path / "ck" / "cut", nets))
    sa = torch.load(tmp_path / "ck" / "ref" / OPTIM_FILE, weights_only=True)
    sb = torch.load(tmp_path / "ck" / "cut" / OPTIM_FILE, weights_only=True)
    for key in ("optimizer_G", "optimizer_D"):
        assert all(torch.equal(x, y) for x, y in zip(_flat(sa[key]), _flat(sb[key])))
        assert sa[key]["param_groups"][0]["lr"] == sb[key]["param_groups"][0]["lr"]
    assert (sa["epoch"], sa["epoch_iter"], sa["old_lr"]) == (sb["epoch"], sb["epoch_iter"], sb["old_lr"])
    assert sa["old_lr"] == pytest.approx(0.0002 / 2)  # epoch 3 runs at half the lr


def test_continuing_a_finished_run_with_a_longer_decay_follows_the_new_schedule(tmp_path, capsys):
    # 1 + 1 epochs end at lr 0; going on with --niter_decay 3 must give epochs 3 and 4 the new
    # schedule's 2/3 and 1/3 of --lr (the saved lr 0 kept decaying to -lr/3 before the fix)
    short = ("--niter", "1", "--niter_decay", "1")
    Trainer(tiny_opt(tmp_path, *short), dataset=SynthPairs(), progress=False).run()
    longer = Trainer(tiny_opt(tmp_path, "--niter", "1", "--niter_decay", "3", "--continue_train"),
                     dataset=SynthPairs(), progress=False)
    assert longer.epoch == 3 and longer.old_lr == pytest.approx(0.0002 * 2 / 3)
    assert longer.learning_rates == pytest.approx({"G": 0.0001 * 2 / 3, "D": 0.0004 * 2 / 3})
    assert "give learning rate 0.000133333 at epoch 3; the run was at 0 " in capsys.readouterr().out
    seen = []
    update = longer.update_learning_rate
    longer.update_learning_rate = lambda epoch: (update(epoch), seen.append(longer.old_lr))
    longer.run()
    assert seen == pytest.approx([0.0002 / 3, 0.0], abs=1e-12)  # after epochs 3 and 4: never below zero
    unchanged = Trainer(tiny_opt(tmp_path, "--niter", "1", "--niter_decay", "3", "--continue_train"),
                        dataset=SynthPairs(), progress=False)
    assert "give learning rate" not in capsys.readouterr().out  # the same schedule: the saved rate, no note
    assert unchanged.old_lr == pytest.approx(0.0, abs=1e-12)


def test_loader_workers_do_not_change_the_result(tmp_path):
    # each sample's augmentation is seeded by (seed, epoch, index), not by a worker's RNG stream
    for name, workers in (("w0", "0"), ("w2", "2")):
        Trainer(tiny_opt(tmp_path, "--nThreads", workers, name=name), dataset=SynthPairs(),
                progress=False).run(max_steps=2)
    _assert_same(_weights(tmp_path / "ck" / "w0"), _weights(tmp_path / "ck" / "w2"))


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    t = Trainer(tiny_opt(tmp_path), dataset=SynthPairs(), progress=False)
    t.run(max_steps=1)
    folder = tmp_path / "ck" / "run"
    before = {p.name: p.read_bytes() for p in folder.glob("latest_*")}
    assert set(before) == {"latest_net_G.pth", "latest_net_D.pth", OPTIM_FILE}
    iter_before = (folder / "iter.txt").read_bytes()
    t.train_one_step(1, next(iter(t.loader)))  # the weights change ...
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **kw):  # ... and the disk fills up on the second file
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        t.save_latest(1, 4)
    assert {p.name: p.read_bytes() for p in folder.glob("latest_*")} == before
    assert (folder / "iter.txt").read_bytes() == iter_before
    assert not list(folder.glob("*.tmp"))


# ---- schedule ----------------------------------------------------------------------------------
def test_ttur_and_linear_decay(tmp_path):
    t = Trainer(tiny_opt(tmp_path, "--niter", "1", "--niter_decay", "2"), dataset=SynthPairs(n=2), progress=False)
    g, d = t.optimizer_G.param_groups[0], t.optimizer_D.param_groups[0]
    assert (g["lr"], d["lr"]) == (0.0001, 0.0004) and g["betas"] == (0.0, 0.9)
    seen = []
    orig = t.update_learning_rate

    def record(epoch):
        orig(epoch)
        seen.append((epoch, t.old_lr, g["lr"], d["lr"]))
    t.update_learning_rate = record
    t.run()
    assert seen[0] == (1, 0.0002, 0.0001, 0.0004)
    assert seen[1][1:] == pytest.approx((0.0001, 0.00005, 0.0002))
    assert seen[2][1:] == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    folder = tmp_path / "ck" / "run"
    assert {p.name for p in folder.glob("*_net_G.pth")} == {"latest_net_G.pth", "3_net_G.pth"}
    assert read_iter_file(folder / "iter.txt") == (4, 0)

    t2 = Trainer(tiny_opt(tmp_path, "--no_TTUR", name="nottur"), dataset=SynthPairs(n=2), progress=False)
    g, d = t2.optimizer_G.param_groups[0], t2.optimizer_D.param_groups[0]
    assert (g["lr"], d["lr"]) == (0.0002, 0.0002) and g["betas"] == (0.5, 0.999)


def test_vae_encoder_trains_with_G_and_D_steps_per_G(tmp_path):
    t = Trainer(tiny_opt(tmp_path, "--use_vae", "--D_steps_per_G", "2"), dataset=SynthPairs(), progress=False)
    assert len(t.optimizer_G.param_groups[0]["params"]) == (
        len(list(t.model.netG.parameters())) + len(list(t.model.netE.parameters())))
    data = next(iter(t.loader))
    g0 = {k: v.clone() for k, v in t.model.netG.state_dict().items()}
    d0 = {k: v.clone() for k, v in t.model.netD.state_dict().items()}
    t.train_one_step(1, data)  # an odd batch with D_steps_per_G 2: D only
    assert all(torch.equal(g0[k], v) for k, v in t.model.netG.named_parameters())
    assert not all(torch.equal(d0[k], v) for k, v in t.model.netD.named_parameters())
    assert set(t.d_losses) == {"D_Fake", "D_real"} and not t.g_losses
    t.train_one_step(2, data)
    assert set(t.g_losses) == {"KLD", "GAN", "GAN_Feat"}
    assert not all(torch.equal(g0[k], v) for k, v in t.model.netG.named_parameters())


def test_amp_bf16_on_cpu(tmp_path, monkeypatch, capsys):
    # the CPU probes of spadegan.device replaced: no AMX (AVX512-BF16 alone is slower than fp32)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    t = Trainer(tiny_opt(tmp_path, "--amp", name="nobf16"), dataset=SynthPairs(), progress=False)
    out = capsys.readouterr().out
    assert t.amp_dtype is None and "--amp ignored" in out and "AVX512-BF16 but no AMX" in out
    # with AMX (forced here: on CPUs without it this path is slow but correct), and bf16
    # measured faster (the timing replaced): bf16 autocast, weights stay fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(Trainer, "_time_generator_steps", lambda self, dtypes, rounds=4: [[2.0] * 4, [1.0] * 4])
    t = Trainer(tiny_opt(tmp_path, "--amp"), dataset=SynthPairs(), progress=False)
    assert t.amp_dtype == torch.bfloat16 and not t.scaler_G.is_enabled()
    assert "training in bfloat16" in capsys.readouterr().out
    out = t.run(max_steps=2)
    assert out["losses"] and all(np.isfinite(v) for v in out["losses"].values())
    assert all(p.dtype == torch.float32 for p in t.model.netG.parameters())  # weights stay fp32
    # a resumed run keeps the recorded choice without measuring again
    monkeypatch.setattr(Trainer, "_time_generator_steps", lambda *a, **k: pytest.fail("measured again"))
    t = Trainer(tiny_opt(tmp_path, "--amp", "--continue_train"), dataset=SynthPairs(), progress=False)
    assert t.amp_dtype == torch.bfloat16


@pytest.mark.parametrize("bf16_seconds", [1.5, 0.95], ids=["slower", "within the margin"])
def test_amp_falls_back_to_fp32_where_bf16_is_not_clearly_faster(tmp_path, monkeypatch, capsys, bf16_seconds):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(Trainer, "_time_generator_steps",
                        lambda self, dtypes, rounds=4: [[1.0] * 4, [bf16_seconds] * 4])
    t = Trainer(tiny_opt(tmp_path, "--amp"), dataset=SynthPairs(), progress=False)
    assert t.amp_dtype is None
    assert "training in fp32, which is as fast or faster here" in capsys.readouterr().out


def test_measuring_amp_leaves_the_run_unchanged(tmp_path, monkeypatch):
    """The timed generator steps restore every buffer and RNG state: a run that measured
    trains exactly like one that did not."""
    a = Trainer(tiny_opt(tmp_path, "--use_vae", name="a"), dataset=SynthPairs(), progress=False)
    times = a._time_generator_steps([None, None], rounds=2)
    assert len(times) == 2 and all(len(t) == 2 for t in times)
    a.run(max_steps=2)
    b = Trainer(tiny_opt(tmp_path, "--use_vae", name="b"), dataset=SynthPairs(), progress=False)
    b.run(max_steps=2)
    nets = ("G", "D", "E")  # the VAE noise comes from the trainer's seeded stream
    _assert_same(_weights(tmp_path / "ck" / "a", nets), _weights(tmp_path / "ck" / "b", nets))


def test_missing_vgg_weights_stop_before_anything_is_written(tmp_path, monkeypatch):
    from spadegan.train.cli import train_main
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpadeganError) as e:
        train_main(["--name", "x", "--dataset_mode", "landscapes", "--dataroot", str(tmp_path / "nothing")])
    assert "--vgg_weights" in str(e.value) and "--no_vgg_loss" in str(e.value)
    assert not (tmp_path / "checkpoints").exists()


def test_continue_train_errors_and_official_checkpoint_resume(tmp_path):
    with pytest.raises(SpadeganError, match="latest_net_G.pth"):
        Trainer(tiny_opt(tmp_path, "--continue_train"), dataset=SynthPairs(), progress=False)
    t = Trainer(tiny_opt(tmp_path, "--niter", "1", "--niter_decay", "4"), dataset=SynthPairs(), progress=False)
    t.run(max_steps=1)
    folder = tmp_path / "ck" / "run"
    # an official checkpoint folder: networks and iter.txt, no optimizer state
    (folder / OPTIM_FILE).unlink()
    (folder / "iter.txt").write_text("3\n0\n")
    r = Trainer(tiny_opt(tmp_path, "--niter", "1", "--niter_decay", "4", "--continue_train"),
                dataset=SynthPairs(), progress=False)
    assert (r.epoch, r.epoch_iter) == (3, 0)
    assert r.old_lr == pytest.approx(0.0002 * 3 / 4) and r.learning_rates["G"] == pytest.approx(0.0002 * 3 / 8)
    w = torch.load(folder / "latest_net_G.pth", weights_only=True)
    assert all(torch.equal(w[k], v) for k, v in r.model.netG.state_dict().items())


# ---- files ---------------------------------------------------------------------------------------
def test_official_output_files(tmp_path):
    opt = tiny_opt(tmp_path, "--print_freq", "2", "--display_freq", "4", "--save_latest_freq", "4",
                   "--niter", "2", "--niter_decay", "0", "--save_epoch_freq", "1")
    t = Trainer(opt, dataset=SynthPairs(), progress=True)
    t.run()
    folder = tmp_path / "ck" / "run"
    log = (folder / "loss_log.txt").read_text().splitlines()
    assert log[0].startswith("================ Training Loss (")
    pat = re.compile(r"^\(epoch: \d+, iters: \d+, time: \d+\.\d{3}\) (GAN: -?\d+\.\d{3} GAN_Feat: \d+\.\d{3} "
                     r"D_Fake: \d+\.\d{3} D_real: \d+\.\d{3} )$")
    assert len(log) == 1 + 6 and all(pat.match(line) for line in log[1:]), log
    assert log[1].startswith("(epoch: 1, iters: 2,") and log[-1].startswith("(epoch: 2, iters: 6,")
    ep, it = np.loadtxt(folder / "iter.txt", delimiter=",", dtype=int)  # as the official code reads it
    assert (ep, it) == (3, 0)
    names = {p.name for p in folder.iterdir()}
    assert {"1_net_G.pth", "1_net_D.pth", "2_net_G.pth", "latest_net_G.pth", "latest_net_D.pth",
            OPTIM_FILE, "web", "loss_log.txt"} <= names
    images = sorted(p.name for p in (folder / "web" / "images").iterdir())
    assert "epoch001_iter004_input_label.png" in images and "epoch002_iter012_real_image.png" in images
    index = (folder / "web" / "index.html").read_text()
    for name in images:
        assert f"images/{name}" in index
    assert index.index("epoch 2, iters 12") < index.index("epoch 1, iters 4")  # newest first
    if (folder / "logs").is_dir():
        assert list((folder / "logs").glob("events.out.tfevents.*"))
    # the networks are plain official-style state_dicts
    from spadegan.checkpoint import load_checkpoint
    G = load_checkpoint(folder, "G", opt=opt.replace(isTrain=False))
    assert G(torch.zeros(1, opt.semantic_nc, 32, 32)).shape == (1, 3, 32, 32)


def test_debug_runs_one_short_epoch_showing_every_iteration(tmp_path):
    from spadegan.train.trainer import DEBUG_BATCHES
    t = Trainer(tiny_opt(tmp_path, "--debug"), dataset=SynthPairs(n=12), progress=False)
    assert t.sampler.batches_per_epoch == 6 and t.total_epochs == 3
    out = t.run()
    assert out["iteration"] == DEBUG_BATCHES == 4 and out["stopped"] is None and out["epoch"] == 2
    folder = tmp_path / "ck" / "run"
    log = (folder / "loss_log.txt").read_text().splitlines()
    assert len(log) == 1 + DEBUG_BATCHES  # a loss line at every iteration (--print_freq is 1000)
    assert len(list((folder / "web" / "images").glob("*_synthesized_image.png"))) == DEBUG_BATCHES
    assert {"latest_net_G.pth", "1_net_G.pth"} <= {p.name for p in folder.iterdir()}
    assert read_iter_file(folder / "iter.txt") == (2, 0)


def test_label_maps_drawn_in_palette_colours():
    from spadegan.data.palettes import classes_for_dataset_mode
    from spadegan.visuals import label_to_numpy
    opt = parse(["--dataset_mode", "coco"], train=True)  # label_nc 182 + dontcare
    lab = torch.tensor([[[[0.0, 182.0]]]])
    rgb = label_to_numpy(lab, opt)[0, 0]
    person = next(c for c in classes_for_dataset_mode("coco", 182) if c.id == 0)
    assert tuple(rgb[0]) == tuple(person.color) and tuple(rgb[1]) == (0, 0, 0)  # dontcare black


# ---- the commands on real data -------------------------------------------------------------------
COCO = ["--dataset_mode", "coco", "--max_dataset_size", "2", "--preprocess_mode", "fixed",
        "--load_size", "64", "--crop_size", "64", "--ngf", "8", "--nThreads", "0", "--seed", "1"]


@pytest.fixture
def coco_root(shared) -> str:
    d = shared / "data" / "coco_stuff_sample"
    if not d.is_dir():
        pytest.skip(f"{d} missing")
    return str(d)


def test_train_then_test_commands_on_coco(tmp_path, monkeypatch, coco_root, capsys):
    from spadegan.train import trainer as trainer_mod
    from spadegan.train.cli import test_main, train_main
    monkeypatch.chdir(tmp_path)
    steps = []
    orig = trainer_mod.Trainer.train_one_step

    def step_then_ctrl_c(self, i, data):  # Ctrl-C during the second step
        orig(self, i, data)
        steps.append(i)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(trainer_mod.Trainer, "train_one_step", step_then_ctrl_c)
    rc = train_main(["--name", "coco_exp", "--dataroot", coco_root, *COCO, "--ndf", "8", "--batchSize", "1",
                     "--use_vae", "--no_vgg_loss", "--niter", "5", "--display_freq", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and len(steps) == 2
    assert "SIGINT received" in out and "saved 'latest'" in out and "--continue_train" in out
    folder = tmp_path / "checkpoints" / "coco_exp"
    assert {"opt.txt", "opt.pkl", "opt.json", "latest_net_G.pth", "latest_net_E.pth", "iter.txt"} <= {
        p.name for p in folder.iterdir()}
    assert re.search(r"^\s*use_vae: True\s+\[default: False\]$", (folder / "opt.txt").read_text(), re.M)

    common = ["--name", "coco_exp", "--dataroot", coco_root, *COCO, "--use_vae", "--how_many", "1"]
    assert test_main(common + ["--phase", "val"]) == 0
    res = tmp_path / "results" / "coco_exp" / "test_latest"
    for sub in ("input_label", "synthesized_image", "real_image"):
        files = list((res / "images" / sub).glob("*.png"))
        assert len(files) == 1, sub
    stem = files[0].stem
    assert f"images/synthesized_image/{stem}.png" in (res / "index.html").read_text()

    photo = str(next(Path(coco_root, "val_img").glob("*.jpg")))
    assert test_main(common + ["--style_image", photo, "--results_dir", "styled"]) == 0
    assert len(list((tmp_path / "styled" / "coco_exp" / "test_latest" / "images" / "synthesized_image").glob("*.png"))) == 1
    assert test_main(common + ["--num_samples", "2", "--results_dir", "multi"]) == 0
    multi = tmp_path / "multi" / "coco_exp" / "test_latest" / "images" / "synthesized_image"
    a, b = sorted(multi.glob("*.png"))
    assert a.name.endswith("_sample0.png") and a.read_bytes() != b.read_bytes()


def test_sigterm_to_the_process_group_saves_with_loader_workers(tmp_path, coco_root):
    # `timeout`, `kill -- -PGID` and a terminal's Ctrl-C signal every process of the group,
    # the DataLoader workers included: they must leave it to the trainer, which saves `latest`
    import subprocess
    import sys
    argv = [sys.executable, "-m", "spadegan.cli", "train", "--name", "pg", "--checkpoints_dir", str(tmp_path),
            "--dataroot", coco_root, *COCO, "--batchSize", "1", "--ndf", "8", "--no_vgg_loss", "--niter", "500",
            "--print_freq", "1", "--display_freq", "100000"]
    argv[argv.index("--nThreads") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("(epoch:"):  # a step has run: workers are up
                os.killpg(proc.pid, signal.SIGTERM)
                break
        out.append(proc.communicate(timeout=120)[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(out)
    assert proc.returncode == 0, text[-2000:]
    assert "SIGTERM received" in text and "saved 'latest'" in text
    assert (tmp_path / "pg" / "latest_net_G.pth").is_file() and read_iter_file(tmp_path / "pg" / "iter.txt")


# ---- a real learning signal ----------------------------------------------------------------------
@pytest.mark.slow
def test_overfits_a_single_pair(tmp_path, coco_root):
    from spadegan.data.datasets import create_dataset
    opt = parse(["--name", "overfit", "--checkpoints_dir", str(tmp_path), "--dataroot", coco_root, *COCO,
                 "--max_dataset_size", "1", "--no_flip", "--ndf", "8", "--batchSize", "1", "--no_vgg_loss",
                 "--norm_G", "spectralspadeinstance3x3", "--lr", "0.001", "--niter", "1000",
                 "--print_freq", "1000", "--display_freq", "1000", "--save_epoch_freq", "1000",
                 "--save_latest_freq", "1000"], train=True)
    ds = create_dataset(opt)
    t = Trainer(opt, dataset=ds, progress=False, log=False)
    item = ds[(0, 1)]
    batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
    sem, real = t.model.preprocess_input(batch, t.device)

    def l1() -> float:
        with torch.no_grad():
            return float((t.model.netG(sem) - real).abs().mean())
    before = l1()
    t.run(max_steps=25)
    after = l1()
    assert after < 0.5 * before, (before, after)
