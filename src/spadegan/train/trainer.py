"""The GauGAN training loop: the official step, schedule and files, made resumable.

`Trainer` drives `Pix2PixModel` (model.py: G, D, E and the losses) through the official
schedule: per batch i, a generator step when i % D_steps_per_G == 0, then a discriminator
step on G's detached output, with fake and real fed to D as one batch; Adam with TTUR
(G lr/2, D lr*2, betas 0/0.9) or --no_TTUR; linear decay to zero over --niter_decay epochs
(the official `update_learning_rate`, applied at each epoch end).

Counting follows the official IterationCounter: `iters` / `total_steps` are *samples*
(they grow by batchSize per step), so --print_freq, --display_freq and --save_latest_freq
are in samples too, which equals iterations at batchSize 1.

What spadegan adds:
- exact resume (--continue_train): `latest_optim.pth` holds the optimizers, the AMP grad
  scalers, the position (epoch, samples into the epoch), the learning rate and every RNG
  state; the data order of an epoch is a function of (seed, epoch) and each sample's
  augmentation is seeded by (seed, epoch, index), so a run resumed mid-epoch skips the
  consumed batches of the same permutation and ends bit-identical to an uninterrupted one;
- checkpoints are written as a set through temp files + rename, so a crash mid-save keeps
  the previous `latest` intact; Ctrl-C / SIGTERM finish the current step, save `latest` and
  return normally;
- --amp with the precision policy of `spadegan.device` (bf16 autocast on AMX CPUs and CUDA
  GPUs of compute capability >= 8.0, fp16 + GradScaler on older GPUs, fp32 with a warning
  elsewhere), or `--amp bf16|fp16|fp32` as asked; the precision is saved as `amp` with the
  options and a resumed run keeps it; --seed, one device (`opt.torch_device`), DistributedDataParallel under torchrun
  or the `--gpu_ids 0,1,...` launcher (`launch.py`);
- --ema_decay: a moving average of G (`ema.py`), saved as `<epoch>_net_EMA.pth` with fresh
  batch-norm statistics, and continued exactly on resume.

--netG oasis (the published OASIS model, implied by --netD oasis) trains as the official
train.py: G step, D step (three D passes), then the official EMA of every state entry; the
EMA's batch-norm statistics are re-estimated on the live average (51 train-mode forwards of
shuffled training batches, `_refresh_ema`) before every print, display and save, as the
official code does before its prints, FID and saves. The batches and noise of that pass come
from generators seeded by (seed, iteration), and a save the schedule did not plan (max_steps,
Ctrl-C) refreshes a copy, so resuming stays exact. --lr_g / --lr_d set G's and D's learning
rates (OASIS: 1e-4 / 4e-4). `--continue_train` from an official OASIS run folder
(`<checkpoints_dir>/<name>/models/<which_epoch>_{G,D,EMA}.pth`) fine-tunes the released
weights (fresh optimizers, from epoch 1).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .. import networks
from ..checkpoint import load_network_weights, network_state_dict, weights_file
from ..data.datasets import create_dataset
from ..data.loader import handling_stop_signals
from ..device import PRECISIONS, dtype_name, keeping_freed_cpu_memory, precision_policy
from ..errors import SpadeganError
from ..fileio import load_torch_file, read_state_dict, save_file_set
from ..oasis_checkpoint import is_oasis_run, load_oasis_state_dict
from ..options import Options, amp_setting, load_options_file, save_options
from .distributed import (DistInfo, all_reduce_mean, any_rank, barrier, broadcast_object,
                          use_cpu_sync_batchnorm)
from .ema import OFFICIAL_STAT_FORWARDS, STAT_BATCHES, GeneratorEMA
from .model import Pix2PixModel
from .sampling import SeededItems, make_train_loader
from .state import (OPTIM_FILE, STATE_FORMAT, mix_seed, read_iter_file, rng_state, seed_everything,
                    set_rng_state, write_iter_file)
from .visualizer import Visualizer


def make_adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam as the official code uses it, with the fused kernel where PyTorch has one.

    The same algorithm in one kernel instead of a loop over the ~100M parameters of an
    ngf-64 generator (the measured difference: benchmarks/README.md, training).
    """
    betas = (float(betas[0]), float(betas[1]))
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError, TypeError):  # older torch or a device without the kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


#: --debug: batches per epoch (the official help: "only do one epoch and displays at each iteration").
DEBUG_BATCHES = 4
#: --amp on a CPU keeps bf16 only when its timed generator step is at most this fraction of fp32's
AMP_MIN_GAIN = 0.9


# ---- the trainer ----------------------------------------------------------------------------------
class Trainer:
    """Builds everything from Options and runs the official training loop.

    `dataset` defaults to `spadegan.data.datasets.create_dataset(opt)`; `dist` describes the
    DDP process (default: one process on `opt.torch_device`); `vgg` overrides the VGG19
    (benchmarks pass random weights). `run(max_steps)` trains until the last epoch, a
    signal, or `max_steps` iterations in total (then saves `latest`, as on Ctrl-C).
    """

    def __init__(self, opt: Options, dataset: Dataset | None = None, dist: DistInfo | None = None,
                 vgg: nn.Module | None = None, progress: bool = True, log: bool = True):
        if not opt.isTrain:
            raise SpadeganError("Trainer needs training options (parse(argv, train=True))")
        self.opt = opt
        self.dist = dist or DistInfo(device=opt.torch_device)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        self.log = log and self.is_main
        if opt.batchSize % self.dist.world_size:
            raise SpadeganError(f"--batchSize {opt.batchSize} is the global batch and must be a multiple of "
                                f"the number of processes ({self.dist.world_size})")
        self.expr_dir = opt.expr_dir
        self.cpu_memory_kept = False  # during run() on a CPU: glibc keeps freed blocks for reuse
        # the VGG weights first: a missing file must stop training before anything is written
        if not opt.no_vgg_loss and vgg is None:
            vgg = networks.load_vgg19(opt.vgg_weights or None, required=True)
        resume_pos = self._read_resume()  # before seeding: a resumed run's state holds its seed
        self._seed()
        self.model = self._build_model(vgg)
        self.optimizer_G, self.optimizer_D = self._build_optimizers()
        self.old_lr = opt.lr
        self._setup_amp()
        self.dataset = dataset if dataset is not None else create_dataset(opt)
        self.sampler, self.loader = make_train_loader(self.dataset, opt, self.seed, self.dist)
        self.dataset_size = self.sampler.batches_per_epoch * opt.batchSize  # samples per epoch
        self._set_position(resume_pos)
        self._settle_precision()
        self._record_options()
        self.g_losses: dict[str, torch.Tensor] = {}
        self.d_losses: dict[str, torch.Tensor] = {}
        self.generated: torch.Tensor | None = None
        self._stop_signal: int | None = None
        self.visualizer = None
        self._last_time = self._last_postfix = 0.0  # for the time per sample and the progress bar

    # ---- setup pieces ---------------------------------------------------------------------------
    def _read_resume(self) -> tuple[int, int] | None:
        """With --continue_train: `self.resume_state` (latest_optim.pth), or for official
        checkpoints without it the position (epoch, samples into it) from iter.txt."""
        self.resume_state: dict[str, Any] | None = None
        self.official_run = None
        if not self.opt.continue_train:
            return None
        if self._official_oasis_run():
            return (1, 0)
        self._check_resume_files()
        self.resume_state = self._read_optim_state()
        return self._position_without_state() if self.resume_state is None else None

    def _official_oasis_run(self) -> bool:
        """--netG oasis --continue_train where checkpoints_dir/name is an official OASIS run (a
        `models/` folder, no spadegan `<which_epoch>_net_G.pth`): `self.official_run` = its
        `models/` folder, whose `<which_epoch>_{G,D,EMA}.pth` the networks load."""
        opt = self.opt
        if opt.netG != "oasis" or weights_file(self.expr_dir, "G", opt.which_epoch) is not None \
                or not is_oasis_run(self.expr_dir):
            return False
        models = self.expr_dir / "models"
        missing = [f"{opt.which_epoch}_{k}.pth" for k in ("G", "D") + (("EMA",) if opt.ema_decay > 0 else ())
                   if not (models / f"{opt.which_epoch}_{k}.pth").is_file()]
        if missing:
            have = ", ".join(sorted(p.name for p in models.glob("*.pth"))[:8]) or "no .pth files"
            raise SpadeganError(f"--continue_train: {', '.join(missing)} not found in the official OASIS run "
                                f"{models} ({have}); --which_epoch names the tag (best, latest or an iteration)")
        self.official_run = models
        if self.is_main:
            print(f"fine-tuning the official OASIS run {models} ({opt.which_epoch}_G/D"
                  f"{'/EMA' if opt.ema_decay > 0 else ''}.pth): fresh optimizers, from epoch 1", flush=True)
        return True

    def _load_official(self, net: nn.Module, network: str) -> None:
        """Load `<which_epoch>_<network>.pth` of the official run into `net` (strict; D keys by
        `official_d_key`)."""
        path = self.official_run / f"{self.opt.which_epoch}_{network}.pth"
        sd = read_state_dict(path, f"OASIS {network} weights")
        load_oasis_state_dict(net, sd, path, network, self.model.netG.oasis_opt, "these training options")

    def _seed(self) -> None:
        """The run's seed: --seed, else the resumed run's, else a fresh one (shared by all ranks)."""
        if self.opt.seed is not None:
            seed = int(self.opt.seed)
        elif self.resume_state is not None:
            seed = int(self.resume_state["seed"])
        else:
            seed = int.from_bytes(os.urandom(7), "little")
        self.seed = int(broadcast_object(seed, self.dist))
        seed_everything(self.seed)
        self.noise_gen = torch.Generator().manual_seed(mix_seed(self.seed, 3))

    def _build_model(self, vgg: nn.Module | None) -> Pix2PixModel:
        """Networks and losses (resumed weights loaded), on the device, DDP-wrapped for several processes."""
        world = self.dist.world_size
        self.model = Pix2PixModel(self.opt, vgg, kld_scale=float(world), noise=self._noise, coins=self._coins)
        if self.official_run is not None:
            self._load_official(self.model.netG, "G")
            self._load_official(self.model.netD, "D")
        elif self.opt.continue_train:
            self._load_networks()
        self.model.to(self.device)
        self.ema = self._build_ema()
        if world > 1:
            self._wrap_ddp()
        self.model.train()
        if self.model.criterionVGG is not None:
            self.model.criterionVGG.eval()
        return self.model

    def _build_ema(self) -> GeneratorEMA | None:
        """--ema_decay: the average of G; resumed from the training state, else from
        `<which_epoch>_net_EMA.pth`, else started at G's weights."""
        if self.opt.ema_decay <= 0:
            return None
        ema = GeneratorEMA(self.model.netG, self.opt.ema_decay, official=self.opt.netG == "oasis")
        self._ema_refreshed_at = -1  # the iteration of the live average's last statistics pass
        if self.resume_state is not None and "ema" in self.resume_state:
            ema.load_state_dict(self.resume_state["ema"])
        elif self.official_run is not None:
            self._load_official(ema.net, "EMA")
        elif self.opt.continue_train:
            path = weights_file(self.expr_dir, "EMA", self.opt.which_epoch)
            if path is not None:
                load_network_weights(ema.net, path, self.opt, "G")
            elif self.is_main:
                print(f"note: no {self.opt.which_epoch}_net_EMA.pth: the moving average of G starts "
                      "again from G's weights", flush=True)
        return ema

    def _build_optimizers(self) -> tuple[torch.optim.Adam, torch.optim.Adam]:
        """Adam for G (with E, which trains with G) and for D; TTUR learning rates unless --no_TTUR."""
        opt = self.opt
        G_params = list(self.model.netG.parameters())
        if opt.use_vae:
            G_params += list(self.model.netE.parameters())
        G_lr, D_lr = self._lrs(opt.lr)
        return (make_adam(G_params, G_lr, (opt.beta1, opt.beta2)),
                make_adam(list(self.model.netD.parameters()), D_lr, (opt.beta1, opt.beta2)))

    def _set_position(self, resume_pos: tuple[int, int] | None) -> None:
        """Epoch, samples into it, iteration and learning rate: fresh, resumed, or from iter.txt."""
        self.total_epochs = self.opt.niter + self.opt.niter_decay
        self.epoch, self.epoch_iter, self.iteration = 1, 0, 0
        if self.resume_state is not None:
            self._apply_optim_state(self.resume_state)
            self._resume_schedule()
        elif resume_pos is not None:
            self.epoch, self.epoch_iter = resume_pos
            self.iteration = ((self.epoch - 1) * self.sampler.batches_per_epoch
                              + self.epoch_iter // self.opt.batchSize)
            self._set_lr(self._lr_at_epoch_start(self.epoch))
        self.total_steps = (self.epoch - 1) * self.dataset_size + self.epoch_iter

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        """VAE noise for this rank's slice of the *global* batch (so DDP matches 1 process)."""
        b = shape[0]
        full = torch.randn((b * self.dist.world_size,) + tuple(shape[1:]), generator=self.noise_gen)
        return full[self.dist.rank * b:(self.dist.rank + 1) * b]

    def _coins(self, n: int) -> torch.Tensor:
        """n LabelMix coins (int64 0/1) from the seeded stream; as many draws every time (one per
        class D knows), so the stream advances alike on every rank and in a resumed run."""
        size = max(n, int(self.model.netD.classifier.out_channels) - 1)
        return torch.randint(0, 2, (size,), generator=self.noise_gen)[:n]

    def _nets(self) -> dict[str, nn.Module]:
        nets = {"G": self.model.netG, "D": self.model.netD}
        if self.opt.use_vae:
            nets["E"] = self.model.netE
        return nets

    def _check_resume_files(self) -> None:
        which = self.opt.which_epoch
        missing = [f"{which}_net_{k}.pth" for k in (["G", "D"] + (["E"] if self.opt.use_vae else []))
                   if weights_file(self.expr_dir, k, which) is None]
        if missing:
            raise SpadeganError(f"--continue_train: {', '.join(missing)} not found in {self.expr_dir}; "
                                "check --name / --checkpoints_dir / --which_epoch, or drop --continue_train "
                                "to start a new run")

    def _read_optim_state(self) -> dict[str, Any] | None:
        path = self.expr_dir / OPTIM_FILE
        if self.opt.which_epoch != "latest" or not path.is_file():
            return None
        st = load_torch_file(path, "training state", "; delete it to resume with fresh optimizer "
                             "state from the network files")
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
            raise SpadeganError(f"{path} is not a spadegan training state (format {STATE_FORMAT})")
        return st

    def _position_without_state(self) -> tuple[int, int]:
        """Official checkpoints (no optimizer file): position from iter.txt / --which_epoch."""
        which = self.opt.which_epoch
        if which != "latest":
            try:
                pos = (int(which) + 1, 0)
            except ValueError:
                raise SpadeganError(f"--which_epoch {which!r}: use 'latest' or an epoch number") from None
        else:
            pos = read_iter_file(self.expr_dir / "iter.txt") or (1, 0)
        if self.is_main:
            print(f"resuming from {which}_net_*.pth at epoch {pos[0]}, iters {pos[1]}: no {OPTIM_FILE}, "
                  "so the optimizers start fresh (the networks, position and learning rate are restored)")
        return pos

    def _load_networks(self) -> None:
        for k, net in self._nets().items():
            load_network_weights(net, weights_file(self.expr_dir, k, self.opt.which_epoch), self.opt, k)

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP
        if self.device.type == "cpu":
            for net in self._nets().values():
                use_cpu_sync_batchnorm(net)
        kw: dict[str, Any] = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
        self.model.G = DDP(self.model.netG, **kw)
        self.model.D = DDP(self.model.netD, **kw)
        if self.opt.use_vae:
            self.model.E = DDP(self.model.netE, **kw)

    def _setup_amp(self) -> None:
        """The run's precision (`_choose_precision`): its autocast dtype and, for fp16, the
        loss scalers. A CPU's bf16 under plain --amp is timed later (`_settle_precision`)."""
        name, self._amp_message = broadcast_object(self._choose_precision(), self.dist)
        self.amp_dtype: torch.dtype | None = None if name == "fp32" else PRECISIONS[name]
        dev = "cuda" if self.device.type == "cuda" else "cpu"
        self.scaler_G = torch.amp.GradScaler(dev, enabled=name == "fp16")
        self.scaler_D = torch.amp.GradScaler(dev, enabled=name == "fp16")

    def _choose_precision(self) -> tuple[str, str | None]:
        """(precision, the line saying so) for the run; line None: plain --amp on a CPU
        offering bf16, which a timing decides. Under plain --amp a resumed run keeps the
        precision it recorded (not timed again); --amp bf16|fp16|fp32 is that precision; no
        --amp is fp32 (said only where the run trained otherwise so far)."""
        asked, recorded = self.opt.amp, self._recorded_precision()
        if recorded is not None and asked not in ("auto", recorded[0]) and self.is_main:
            print(f"note: this run trained in {recorded[0]} so far ({recorded[1]}); it goes on in "
                  f"{asked or 'fp32'} as {'--amp ' + asked if asked else 'no --amp'} asks (plain --amp keeps "
                  f"{recorded[0]})", flush=True)
        if not asked:
            return "fp32", ""
        if recorded is not None and asked == "auto":
            return recorded[0], (f"--amp: training in {recorded[0]}, the precision this run trained in so far "
                                 f"({recorded[1]}); not timed again (--amp bf16|fp16|fp32 chooses one)")
        policy = precision_policy(self.device)
        if asked != "auto":
            differs = "" if asked == policy.name else f"; plain --amp would pick {policy.name}: {policy.reason}"
            return asked, f"--amp: training in {asked} as --amp {asked} asks, not timed{differs}"
        if policy.name == "fp32":
            return "fp32", f"warning: --amp ignored: {policy.reason}; training in fp32"
        if self.device.type == "cpu":
            return policy.name, None
        return policy.name, f"--amp: training in {policy.name}: {policy.reason}"

    def _recorded_precision(self) -> tuple[str, str] | None:
        """With --continue_train: (the precision the run trained in, where that is recorded):
        latest_optim.pth's, else the amp of the options saved beside the checkpoints (no --amp
        there: fp32); None when neither says (a fresh run, official checkpoints)."""
        if not self.opt.continue_train or self.official_run is not None:
            return None
        if self.resume_state is not None and "amp_dtype" in self.resume_state:
            saved = self.resume_state["amp_dtype"]
            names = {None: "fp32", "bfloat16": "bf16", "float16": "fp16"}
            if saved not in names:
                raise SpadeganError(f"{self.expr_dir / OPTIM_FILE}: amp_dtype {saved!r} is not a precision "
                                    f"({', '.join(map(repr, names))}); delete it to resume with fresh optimizers")
            return names[saved], str(self.expr_dir / OPTIM_FILE)
        path = next((self.expr_dir / n for n in ("opt.json", "opt.pkl", "opt.txt")
                     if (self.expr_dir / n).is_file()), None)
        if path is None:
            return None
        saved = load_options_file(path)
        if "amp" not in saved:
            return None
        try:
            amp = amp_setting(saved["amp"])
        except SpadeganError as e:
            raise SpadeganError(f"{path}: {e}") from None
        if amp == "auto":  # written before the precision was recorded
            return None
        return amp or "fp32", f"amp in {path}"

    def autocast(self, dtype: torch.dtype | None | str = "run"):
        """The run's autocast (or `dtype`'s: None for fp32)."""
        dtype = self.amp_dtype if dtype == "run" else dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _settle_precision(self) -> None:
        """Plain --amp on a CPU offering bf16: keep it only if it measures faster than fp32 for
        this model; every other choice is said as it was made (`_choose_precision`).

        AMX makes bf16 matrix products fast, but on small networks the conversions cost more
        than they save (the built-in model's 64 px configuration is slower in bf16). bf16 must
        be clearly faster (`AMP_MIN_GAIN`): a near tie is within timing noise, and the D step,
        not timed, may gain less, so fp32 (exact, the reference) keeps it. Three
        timed generator steps (forward + backward, no update) of each, after one warm-up,
        decide; every buffer (batch-norm statistics, spectral-norm vectors) and RNG state is
        restored afterwards, so the run is as if nothing happened. Two runs on a busy machine
        can decide differently: `--amp bf16` or `--amp fp32` does not time."""
        if self._amp_message is None:
            with keeping_freed_cpu_memory():  # as training runs
                times = self._time_generator_steps([None, self.amp_dtype])
            fp32_s, amp_s = (min(t[1:]) for t in times)  # [0]: warm-up
            keep = broadcast_object(amp_s < AMP_MIN_GAIN * fp32_s, self.dist)
            name = dtype_name(self.amp_dtype)
            self._say(f"--amp: a generator step in {name} takes {1000 * amp_s:.0f} ms against "
                      f"{1000 * fp32_s:.0f} ms in fp32: "
                      + ("training in " + name if keep else "training in fp32, which is as fast or faster here"))
            if not keep:
                self.amp_dtype = None
        elif self._amp_message:
            self._say(self._amp_message)

    def _record_options(self) -> None:
        """The options saved beside the checkpoints (opt.txt, opt.json, opt.pkl), --amp as the
        precision chosen (`amp: bf16`), which a --continue_train keeps without timing again."""
        if self.opt.amp:
            self.opt = self.opt.replace(amp=self.precision)
        if self.is_main:  # an official OASIS run's own opt.pkl / opt.txt stay: spadegan's go to opt.json
            save_options(self.opt, formats=("json",) if self.official_run is not None else None)

    @property
    def precision(self) -> str:
        """The run's precision: "bf16", "fp16" or "fp32"."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def _time_generator_steps(self, dtypes: list, rounds: int = 4) -> list[list[float]]:
        """Seconds of `rounds` G steps (no optimizer update) per autocast dtype, interleaved;
        the networks' buffers and every RNG state are restored afterwards."""
        nets = list(self._nets().values())
        buffers = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets]
        rng = rng_state({"noise": self.noise_gen})
        codes, real = self.model.preprocess_input(next(iter(self._fixed_batches(1))), self.device)
        times: list[list[float]] = [[] for _ in dtypes]
        for _ in range(rounds):
            for i, dtype in enumerate(dtypes):
                t0 = time.perf_counter()
                with self.autocast(dtype):
                    losses, _ = self.model.compute_generator_loss(codes, real)
                sum(losses.values()).mean().backward()
                times[i].append(time.perf_counter() - t0)
                self.optimizer_G.zero_grad(set_to_none=True)
        for net, saved in zip(nets, buffers):
            net.load_state_dict(saved)
        set_rng_state(rng, {"noise": self.noise_gen})
        return times

    # ---- learning rate (the official update_learning_rate) -----------------------------------------
    def _lrs(self, lr: float) -> tuple[float, float]:
        """(G's, D's) learning rate at --lr's current value `lr`: TTUR's lr/2, lr*2 (or lr, lr
        with --no_TTUR); --lr_g / --lr_d where given, scaled by lr / --lr (the decay)."""
        opt = self.opt
        G_lr, D_lr = (lr, lr) if opt.no_TTUR else (lr / 2, lr * 2)
        scale = lr / opt.lr if opt.lr else 0.0
        return (opt.lr_g * scale if opt.lr_g > 0 else G_lr), (opt.lr_d * scale if opt.lr_d > 0 else D_lr)

    def _set_lr(self, new_lr: float) -> None:
        lr_G, lr_D = self._lrs(new_lr)
        for g in self.optimizer_D.param_groups:
            g["lr"] = lr_D
        for g in self.optimizer_G.param_groups:
            g["lr"] = lr_G
        self.old_lr = new_lr

    def _resume_schedule(self) -> None:
        """After a resume: the learning rate the current --lr / --niter / --niter_decay give at the
        resumed epoch. The saved one when those flags are unchanged (the same arithmetic); when
        they changed (a longer --niter_decay to train on) the saved one would keep decaying, past
        zero, so the schedule's is used and said."""
        lr = self._lr_at_epoch_start(self.epoch)
        if lr != self.old_lr and self.is_main:
            print(f"note: --lr {self.opt.lr:g} --niter {self.opt.niter} --niter_decay {self.opt.niter_decay} "
                  f"give learning rate {lr:g} at epoch {self.epoch}; the run was at {self.old_lr:g} (its "
                  "schedule changed), so training goes on at the new schedule's rate", flush=True)
        self._set_lr(lr)

    def _lr_at_epoch_start(self, epoch: int) -> float:
        lr = self.opt.lr
        for e in range(1, epoch):  # replay the decays (same float arithmetic as the official loop)
            if e > self.opt.niter:
                lr = lr - self.opt.lr / self.opt.niter_decay
        return lr

    def update_learning_rate(self, epoch: int) -> None:
        """At the end of `epoch`: linear decay by lr/niter_decay per epoch after --niter."""
        if epoch > self.opt.niter:
            new_lr = self.old_lr - self.opt.lr / self.opt.niter_decay
        else:
            new_lr = self.old_lr
        if new_lr != self.old_lr:
            old = self.old_lr
            self._set_lr(new_lr)
            self._say("update learning rate: %f -> %f" % (old, new_lr))

    @property
    def learning_rates(self) -> dict[str, float]:
        return {"G": self.optimizer_G.param_groups[0]["lr"], "D": self.optimizer_D.param_groups[0]["lr"]}

    # ---- the step --------------------------------------------------------------------------------------
    def run_generator_one_step(self, sem: torch.Tensor, real: torch.Tensor) -> None:
        self.optimizer_G.zero_grad(set_to_none=True)
        with self.autocast():
            g_losses, generated = self.model.compute_generator_loss(sem, real)
        g_loss = sum(g_losses.values()).mean()
        self.scaler_G.scale(g_loss).backward()
        self.scaler_G.step(self.optimizer_G)
        self.scaler_G.update()
        if self.ema is not None and not self.ema.official:
            self.ema.update(self.model.netG)
        self.g_losses = {k: v.detach() for k, v in g_losses.items()}
        self.generated = generated.detach()

    def run_discriminator_one_step(self, sem: torch.Tensor, real: torch.Tensor) -> None:
        self.optimizer_D.zero_grad(set_to_none=True)
        with self.autocast():
            d_losses = self.model.compute_discriminator_loss(sem, real)
        d_loss = sum(d_losses.values()).mean()
        self.scaler_D.scale(d_loss).backward()
        self.scaler_D.step(self.optimizer_D)
        self.scaler_D.update()
        self.d_losses = {k: v.detach() for k, v in d_losses.items()}

    def train_one_step(self, i: int, data: Mapping[str, Any]) -> None:
        """Batch `i` of the epoch: G step when i % D_steps_per_G == 0, then a D step."""
        sem, real = self.model.preprocess_input(data, self.device)
        if i % self.opt.D_steps_per_G == 0:
            self.run_generator_one_step(sem, real)
        self.run_discriminator_one_step(sem, real)
        if self.ema is not None and self.ema.official:  # the official update_EMA, after the D step
            self.ema.update(self.model.netG)

    def latest_losses(self) -> dict[str, float]:
        """The latest G and D losses as floats (averaged over processes under DDP)."""
        losses = {**self.g_losses, **self.d_losses}
        if not losses:
            return {}
        vec = torch.stack([v.detach().float().mean() for v in losses.values()])
        vec = all_reduce_mean(vec, self.dist)
        return {k: float(x) for k, x in zip(losses, vec.cpu())}

    # ---- saving and resuming ---------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything besides the networks that an exact resume needs."""
        return {
            "format": STATE_FORMAT, "epoch": self.epoch, "epoch_iter": self.epoch_iter,
            "iteration": self.iteration, "total_steps": self.total_steps, "old_lr": self.old_lr,
            "seed": self.seed, "world_size": self.dist.world_size, "batchSize": self.opt.batchSize,
            "optimizer_G": self.optimizer_G.state_dict(), "optimizer_D": self.optimizer_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "rng": rng_state({"noise": self.noise_gen}),
            "amp_dtype": dtype_name(self.amp_dtype) if self.amp_dtype else None,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def _apply_optim_state(self, st: Mapping[str, Any]) -> None:
        try:
            self.optimizer_G.load_state_dict(st["optimizer_G"])
            self.optimizer_D.load_state_dict(st["optimizer_D"])
        except (ValueError, KeyError) as e:
            raise SpadeganError(f"{self.expr_dir / OPTIM_FILE} does not fit these networks ({e}); were the "
                                "options changed? Delete it to resume with fresh optimizers") from None
        if st.get("scaler_G"):
            self.scaler_G.load_state_dict(st["scaler_G"])
        if st.get("scaler_D"):
            self.scaler_D.load_state_dict(st["scaler_D"])
        self.epoch, self.epoch_iter = int(st["epoch"]), int(st["epoch_iter"])
        self.iteration = int(st["iteration"])
        self.old_lr = float(st["old_lr"])
        if int(st.get("batchSize", self.opt.batchSize)) != self.opt.batchSize and self.is_main:
            print(f"note: resuming with --batchSize {self.opt.batchSize} (was {st.get('batchSize')}); "
                  "the position within the epoch is kept in samples")
        set_rng_state(st["rng"], {"noise": self.noise_gen})

    def save(self, which: str | int, with_state: bool = False) -> None:
        """Write `<which>_net_{G,D,E}.pth` (+ latest_optim.pth) as one all-or-nothing set (rank 0)."""
        if not self.is_main:
            return
        items = [(self.expr_dir / f"{which}_net_{k}.pth", network_state_dict(net)) for k, net in self._nets().items()]
        if self.ema is not None:
            ema = self._ema_for_synthesis() if not self.ema.official else self._refresh_ema(live=False)
            items.append((self.expr_dir / f"{which}_net_EMA.pth", network_state_dict(ema)))
        if with_state:
            items.append((self.expr_dir / OPTIM_FILE, self.training_state()))
        save_file_set(items)

    def _ema_for_synthesis(self) -> nn.Module:
        """The average with batch-norm statistics of its own, measured on the first
        STAT_BATCHES batches of the data in index order (the same at every save, and drawing
        nothing from the training RNG streams, so saving never changes the run)."""
        batches = self._fixed_batches(STAT_BATCHES)
        noise = torch.Generator().manual_seed(mix_seed(self.seed, 5))

        def run(net: nn.Module, data: Mapping[str, Any]) -> None:
            codes, real = self.model.preprocess_input(data, self.device)
            z = None
            if self.opt.use_vae or self.opt.use_3d_noise:  # random styles / noise
                z = torch.randn(real.shape[0], self.opt.z_dim, generator=noise).to(real)
            net(self.model.g_input(codes), z=z)
        return self.ema.for_synthesis(self.model.netG, batches, run)

    def _refresh_ema(self, live: bool = True, batches: Iterable[Mapping[str, Any]] | None = None,
                     noise: Callable[[int], torch.Tensor] | None = None) -> nn.Module:
        """The official statistics pass (`GeneratorEMA.refresh_statistics`) on the live average
        (`live`), once per iteration; with live=False, a save the schedule did not plan, on a copy
        unless the live average was refreshed at this iteration. `batches`: default
        OFFICIAL_STAT_FORWARDS shuffled training batches; their order, augmentation and noise come
        from generators seeded by (seed, iteration), drawing nothing from the training streams.
        `noise(b)`: the (b, z_dim) 3D noise of a forward (default from that generator)."""
        if self._ema_refreshed_at == self.iteration:
            return self.ema.net
        seed = mix_seed(self.seed, 7, self.iteration)
        gen = torch.Generator().manual_seed(seed)
        noise = noise or (lambda b: torch.randn(b, self.opt.z_dim, generator=gen))

        def run(net: nn.Module, data: Mapping[str, Any]) -> None:
            codes, real = self.model.preprocess_input(data, self.device)
            z = noise(real.shape[0]).to(real) if self.opt.use_3d_noise else None
            net(self.model.g_input(codes), z=z)
        if batches is None:
            batches = self._shuffled_batches(OFFICIAL_STAT_FORWARDS, torch.Generator().manual_seed(seed + 1))
        net = self.ema.refresh_statistics(batches, run, net=None if live else self.ema.copy(self.model.netG))
        if live:
            self._ema_refreshed_at = self.iteration
        return net

    def _shuffled_batches(self, count: int, gen: torch.Generator) -> Iterator[Mapping[str, Any]]:
        """Up to `count` batches of this process's size, a permutation of the data by `gen`
        (this rank's slice of each global batch), with this epoch's augmentation."""
        items = SeededItems(self.dataset, self.seed)
        local = self.opt.batchSize // self.dist.world_size
        order = torch.randperm(len(self.dataset), generator=gen).tolist()
        count = min(count, len(order) // self.opt.batchSize)
        for i in range(count):
            start = i * self.opt.batchSize + self.dist.rank * local
            yield torch.utils.data.default_collate([items[(order[start + j], self.epoch)] for j in range(local)])

    def _fixed_batches(self, count: int) -> Iterator[Mapping[str, Any]]:
        """Up to `count` batches of this process's size, the data in index order with epoch-0
        augmentation: the same every time, and drawing nothing from the training RNG streams."""
        items = SeededItems(self.dataset, self.seed)
        local = self.opt.batchSize // self.dist.world_size
        count = min(count, len(self.dataset) // local)
        return (torch.utils.data.default_collate([items[(i * local + j, 0)] for j in range(local)])
                for i in range(count))

    def save_latest(self, epoch: int, epoch_iter: int) -> None:
        """`latest` networks + training state + iter.txt for position (epoch, epoch_iter)."""
        self.save("latest", with_state=True)
        if self.is_main:
            write_iter_file(self.expr_dir / "iter.txt", epoch, epoch_iter)

    # ---- signals ---------------------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to stop after the current step (what Ctrl-C does)."""
        self._stop_signal = signum

    def _signal_handlers(self):
        def handler(signum, frame):
            if self._stop_signal is not None:  # a second Ctrl-C: stop now, without saving
                raise KeyboardInterrupt
            self._stop_signal = signum
            self._say(f"\n{signal.Signals(signum).name} received: finishing the current step, then saving "
                      "'latest' (press Ctrl-C again to quit without saving)")
        return handling_stop_signals(handler)

    # ---- the loop --------------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if not self.is_main:
            return
        if getattr(self, "_bar", None) is not None:
            self._bar.write(msg)
        else:
            print(msg, flush=True)

    def _needs(self, freq: int) -> bool:
        return (self.total_steps % max(1, freq)) < self.opt.batchSize

    def run(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train; returns {'iteration', 'epoch', 'epoch_iter', 'stopped', 'losses'}.

        Stops after the last epoch, on SIGINT/SIGTERM (after the current step, saving
        `latest`), or when `max_steps` iterations (batches, counted over resumes) are done
        (also saving `latest`). With --debug: only the epoch it starts in, of at most
        DEBUG_BATCHES batches, printing the losses and saving samples at every iteration.
        """
        from tqdm import tqdm
        nb = self.sampler.batches_per_epoch
        last_epoch = self.epoch if self.opt.debug else self.total_epochs
        self.visualizer = Visualizer(self.opt, enabled=self.log, out=self._say)
        self._bar = tqdm(total=self.total_epochs * nb, initial=min(self.iteration, self.total_epochs * nb),
                         disable=not self.progress, dynamic_ncols=True, unit="it", desc="train")
        self.visualizer.out = self._bar.write if self.progress else None
        self._last_postfix = 0.0
        stopped: str | None = None
        try:
            # CPU training reallocates the same large tensors every step: keep freed memory for reuse
            with self._signal_handlers(), keeping_freed_cpu_memory(self.device.type == "cpu") as kept:
                self.cpu_memory_kept = kept
                if kept:
                    self._say("CPU memory: freed blocks are kept for reuse while training (glibc malloc "
                              "settings, set back to glibc's defaults when it ends), which saves the page "
                              "faults of every step's large tensors; the process keeps its peak memory")
                for epoch in range(self.epoch, last_epoch + 1):
                    stopped = self._run_epoch(epoch, last_epoch, max_steps)
                    if stopped:
                        break
                else:
                    self._say("Training was successfully finished.")
        finally:
            self.cpu_memory_kept = False
            self._bar.close()
            self._bar = None
            self.visualizer.close()
            barrier(self.dist)
        return {"iteration": self.iteration, "epoch": self.epoch, "epoch_iter": self.epoch_iter,
                "stopped": stopped, "losses": self.latest_losses()}

    def _run_epoch(self, epoch: int, last_epoch: int, max_steps: int | None) -> str | None:
        """One epoch from where it stands, then the official end-of-epoch lr update and saves.

        Returns why training stops early ("signal", "max_steps"), or None to go on.
        """
        opt = self.opt
        self.epoch = epoch
        epoch_start = time.time()
        start_batch = self.epoch_iter // opt.batchSize
        self.sampler.set_epoch(epoch, start_batch)
        self._last_time = time.time()
        stopped: str | None = None
        for i, data in enumerate(self.loader, start=start_batch):
            self.train_one_step(i, data)
            self._after_step(epoch, data)
            want = self._stop_signal is not None or (max_steps is not None and self.iteration >= max_steps)
            if any_rank(want, self.dist):
                stopped = "signal" if self._stop_signal is not None else "max_steps"
                break
            if opt.debug and i + 1 - start_batch >= DEBUG_BATCHES:
                break
        if stopped:
            self.save_latest(epoch, self.epoch_iter)
            if stopped == "signal":
                self._say(f"stopped at epoch {epoch}, iters {self.epoch_iter} (iteration "
                          f"{self.iteration}); saved 'latest' in {self.expr_dir}. "
                          "Resume with the same command plus --continue_train")
            return stopped
        # end of the epoch (the official order: lr update, then epoch saves)
        self.update_learning_rate(epoch)
        self.epoch, self.epoch_iter = epoch + 1, 0
        self._say("End of epoch %d / %d \t Time Taken: %d sec" % (epoch, self.total_epochs,
                                                                  time.time() - epoch_start))
        if epoch % opt.save_epoch_freq == 0 or epoch == last_epoch:
            if self.ema is not None and self.ema.official:
                self._refresh_ema()  # a planned save: the official statistics pass on the live average
            self._say("saving the model at the end of epoch %d, iters %d" % (epoch, self.total_steps))
            self.save_latest(epoch + 1, 0)
            self.save(epoch)
        if max_steps is not None and self.iteration >= max_steps and epoch < last_epoch:
            self.save_latest(epoch + 1, 0)
            return "max_steps"
        return None

    def _after_step(self, epoch: int, data: Mapping[str, Any]) -> None:
        """Count the step, then print / plot / display / save `latest` when their frequency says."""
        opt = self.opt
        now = time.time()
        time_per_sample = (now - self._last_time) / opt.batchSize
        self._last_time = now
        self.epoch_iter += opt.batchSize
        self.total_steps += opt.batchSize
        self.iteration += 1
        self._bar.update(1)
        if self.ema is not None and self.ema.official and (
                opt.debug or any(self._needs(f) for f in (opt.print_freq, opt.display_freq, opt.save_latest_freq))):
            self._refresh_ema()  # the official statistics pass before prints, images and saves
        if self.progress and (now - self._last_postfix > 1.0 or self._needs(opt.print_freq)):
            self._last_postfix = now
            self._bar.set_postfix_str(self._postfix(epoch), refresh=False)
        if self._needs(opt.print_freq) or opt.debug:
            losses = self.latest_losses()
            self.visualizer.print_current_errors(epoch, self.epoch_iter, losses, time_per_sample)
            self.visualizer.plot_current_errors(losses, self.total_steps, self.learning_rates)
        if (self._needs(opt.display_freq) or opt.debug) and self.generated is not None:
            self.visualizer.display_current_results(
                {"input_label": data["label"], "synthesized_image": self.generated,
                 "real_image": data["image"]}, epoch, self.total_steps)
        if self._needs(opt.save_latest_freq):
            self._say("saving the latest model (epoch %d, total_steps %d)" % (epoch, self.total_steps))
            self.save_latest(epoch, self.epoch_iter)

    def _postfix(self, epoch: int) -> str:
        losses = {**self.g_losses, **self.d_losses}
        parts = [f"ep {epoch}/{self.total_epochs}"] + [f"{k} {float(v.float().mean()):.3f}" for k, v in losses.items()]
        return " ".join(parts)

