"""Failures and substitutions that must not pass unnoticed (issue 21, items 4-6): fallback
palette colours, a TensorBoard that is installed but broken, the glibc malloc settings of
CPU training, a paint worker stuck in a model, and the precision `--amp` trains in."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import spadegan.device as dev
from spadegan.errors import SpadeganError, SpadeganWarning
from spadegan.options import parse


# ---- palettes ---------------------------------------------------------------------------------
def test_a_mode_without_a_palette_says_its_colours_are_generated():
    from spadegan.visuals import label_palette, label_to_numpy
    facades = parse(["--dataset_mode", "facades"], train=True)
    with pytest.warns(SpadeganWarning, match="--dataset_mode facades has no palette"):
        pal = label_palette(facades)
    custom = parse(["--dataset_mode", "custom", "--label_dir", "x", "--image_dir", "y", "--label_nc", "13"],
                   train=True)
    assert np.array_equal(pal, label_palette(custom))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only; custom and ade20k have their colours: no notice
        label_to_numpy(torch.zeros(1, 1, 4, 4), facades)
        label_palette(custom)
        label_palette(parse(["--dataset_mode", "ade20k"], train=True))


def test_palette_errors_are_not_turned_into_fallback_colours(monkeypatch):
    import spadegan.data.palettes as palettes
    from spadegan.visuals import label_palette

    def broken(mode):
        raise OSError(f"the {mode} class table cannot be read")
    monkeypatch.setattr(palettes, "load_classes", broken)
    with pytest.raises(OSError, match="ade20k class table"):
        label_palette(parse(["--dataset_mode", "ade20k"], train=True))


# ---- TensorBoard --------------------------------------------------------------------------------
def _visualizer(tmp_path, monkeypatch, fail_import=None):
    """A Visualizer whose `from torch.utils.tensorboard import ...` raises `fail_import`; the
    lines it prints."""
    import builtins

    from spadegan.train.visualizer import Visualizer
    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        if fail_import is not None and name == "torch.utils.tensorboard":
            raise fail_import
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", importing)
    lines: list[str] = []
    opt = parse(["--name", "tb", "--checkpoints_dir", str(tmp_path), "--no_html"], train=True)
    vis = Visualizer(opt, out=lines.append)
    vis.close()
    return vis, lines


def test_tensorboard_not_installed_is_said_once(tmp_path, monkeypatch):
    missing = ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard")
    vis, lines = _visualizer(tmp_path, monkeypatch, missing)
    assert lines == ["TensorBoard logging off: tensorboard is not installed (pip install 'spadegan[train]')"]


def test_a_broken_tensorboard_is_named_not_called_missing(tmp_path, monkeypatch):
    too_old = ImportError("TensorBoard logging requires TensorBoard version 1.15 or above")
    _, lines = _visualizer(tmp_path, monkeypatch, too_old)
    assert len(lines) == 1 and "not installed" not in lines[0]
    assert "cannot be imported (ImportError: TensorBoard logging requires TensorBoard version 1.15" in lines[0]
    dependency = ModuleNotFoundError("No module named 'google.protobuf'", name="google.protobuf")
    _, lines = _visualizer(tmp_path, monkeypatch, dependency)
    assert len(lines) == 1 and "ModuleNotFoundError: No module named 'google.protobuf'" in lines[0]
    with pytest.raises(TypeError, match="Descriptors cannot be created directly"):  # not an import problem
        _visualizer(tmp_path, monkeypatch, TypeError("Descriptors cannot be created directly"))


# ---- glibc malloc settings of CPU training ------------------------------------------------------
def test_training_keeps_freed_cpu_memory_only_while_it_runs(tmp_path, monkeypatch):
    """Constructing a Trainer changes nothing; run() sets glibc's malloc to keep freed blocks and
    sets glibc's defaults again when it ends (the real effect: test_device's mallinfo2 test)."""
    from test_train import SynthPairs, tiny_opt

    from spadegan.train.trainer import Trainer
    calls: list[tuple] = []
    monkeypatch.setattr(dev, "_mallopt", lambda settings: calls.append(tuple(settings)) or True)
    t = Trainer(tiny_opt(tmp_path), dataset=SynthPairs(), progress=False, log=False)
    assert calls == [] and not dev.cpu_memory_kept()
    during: list[bool] = []
    step = t.train_one_step
    monkeypatch.setattr(t, "train_one_step", lambda i, data: (during.append(dev.cpu_memory_kept()), step(i, data)))
    t.run(max_steps=1)
    assert during == [True] and not dev.cpu_memory_kept() and not t.cpu_memory_kept
    assert calls == [dev._KEEP, dev._GLIBC_DEFAULTS]
    # a failing run sets the defaults again too
    calls.clear()
    monkeypatch.setattr(t, "train_one_step", lambda i, data: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        t.run(max_steps=2)
    assert calls == [dev._KEEP, dev._GLIBC_DEFAULTS] and not dev.cpu_memory_kept()


def test_kept_cpu_memory_blocks_nest_and_respect_the_process_wide_setting(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(dev, "_mallopt", lambda settings: calls.append(tuple(settings)) or True)
    monkeypatch.setattr(dev, "_MALLOC_KEPT", {"process": False, "blocks": 0})
    with dev.keeping_freed_cpu_memory(enabled=False) as kept:
        assert not kept and calls == []
    with dev.keeping_freed_cpu_memory() as kept:
        with dev.keeping_freed_cpu_memory() as inner:
            assert kept and inner and calls == [dev._KEEP]
        assert dev.cpu_memory_kept() and calls == [dev._KEEP]  # the outer block still holds them
    assert calls == [dev._KEEP, dev._GLIBC_DEFAULTS] and not dev.cpu_memory_kept()
    calls.clear()
    assert dev.keep_freed_cpu_memory()  # for the whole process (the benchmarks): no block undoes it
    with dev.keeping_freed_cpu_memory() as kept:
        assert kept
    assert calls == [dev._KEEP] and dev.cpu_memory_kept()


# ---- the paint app's inference thread ------------------------------------------------------------
def test_paint_worker_never_runs_a_second_thread_beside_a_hung_model():
    import asyncio
    import threading
    import time

    from spadegan.app.worker import InferenceWorker
    entered, release = threading.Event(), threading.Event()

    class Hung:
        """A model that hangs in its first call until released."""

        def synthesize_batch(self, labels, seeds, styles):
            entered.set()
            release.wait(10)
            return [np.full((2, 2, 3), seed, np.uint8) for seed in seeds]

    worker = InferenceWorker(Hung(), queue_size=2, max_batch=1, batch_wait_ms=0)

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "spadegan-inference"]

    async def stuck_then_restarted():
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(worker.submit(np.zeros((2, 2), np.int64), 1, None))
        assert await loop.run_in_executor(None, entered.wait, 10)
        await loop.run_in_executor(None, worker.stop, 0.05)  # the model does not return in time
        stuck = threads()
        assert len(stuck) == 1
        with pytest.raises(SpadeganError, match="still inside a model call"):
            worker.start()
        assert threads() == stuck  # no second thread
        release.set()  # the model returns: its thread ends, and the worker may start again
        result = await first
        await loop.run_in_executor(None, stuck[0].join, 10)
        worker.start()
        again = await worker.submit(np.zeros((2, 2), np.int64), 2, None)
        return result, again

    t0 = time.monotonic()
    try:
        result, again = asyncio.run(stuck_then_restarted())
    finally:
        release.set()
        worker.stop()
    assert result.image[0, 0, 0] == 1 and again.image[0, 0, 0] == 2 and threads() == []
    assert time.monotonic() - t0 < 5


# ---- the precision --amp trains in ---------------------------------------------------------------
def _amx_cpu(monkeypatch, bf16_faster: bool | None) -> None:
    """A CPU with AMX (bf16 is the policy's choice); the timing of --amp says bf16 is faster or
    not, or (None) must not run at all."""
    from spadegan.train.trainer import Trainer
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    if bf16_faster is None:
        timing = lambda *a, **k: pytest.fail("--amp timed the precision again")  # noqa: E731
    else:
        timing = lambda self, dtypes, rounds=4: [[2.0] * 4, [1.0 if bf16_faster else 3.0] * 4]  # noqa: E731
    monkeypatch.setattr(Trainer, "_time_generator_steps", timing)


def _amp_trainer(tmp_path, *flags: str):
    from test_train import SynthPairs, tiny_opt

    from spadegan.train.trainer import Trainer
    return Trainer(tiny_opt(tmp_path, "--gpu_ids", "-1", *flags), dataset=SynthPairs(), progress=False, log=False)


def _saved_amp(tmp_path) -> str:
    import json
    return json.loads((tmp_path / "ck" / "run" / "opt.json").read_text())["amp"]


@pytest.mark.parametrize("bf16_faster", [True, False], ids=["bf16 timed faster", "fp32 timed faster"])
def test_a_resumed_run_keeps_the_precision_recorded_in_its_options(tmp_path, monkeypatch, capsys, bf16_faster):
    from spadegan.train.state import OPTIM_FILE
    chosen = "bf16" if bf16_faster else "fp32"
    _amx_cpu(monkeypatch, bf16_faster)
    t = _amp_trainer(tmp_path, "--amp")
    assert t.precision == chosen and t.opt.amp == chosen and _saved_amp(tmp_path) == chosen
    assert re.search(rf"^\s*amp: {chosen}\s+\[default: \]$", (tmp_path / "ck" / "run" / "opt.txt").read_text(), re.M)
    t.run(max_steps=1)
    (tmp_path / "ck" / "run" / OPTIM_FILE).unlink()  # the options alone say it (as for --which_epoch N)
    _amx_cpu(monkeypatch, None)  # a timing now would fail the test
    capsys.readouterr()
    t = _amp_trainer(tmp_path, "--amp", "--continue_train")
    assert t.precision == chosen and _saved_amp(tmp_path) == chosen
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--amp")]
    assert len(said) == 1 and f"training in {chosen}, the precision this run trained in so far" in said[0]
    assert "opt.json" in said[0] and "not timed again" in said[0]


def test_an_explicit_amp_precision_is_not_timed(tmp_path, monkeypatch, capsys):
    _amx_cpu(monkeypatch, None)
    t = _amp_trainer(tmp_path, "--amp", "bf16")
    assert t.amp_dtype == torch.bfloat16 and not t.scaler_G.is_enabled() and _saved_amp(tmp_path) == "bf16"
    assert capsys.readouterr().out.count("--amp: training in bf16 as --amp bf16 asks, not timed") == 1
    t.run(max_steps=1)
    # an explicit precision on resume wins over the recorded one, and says so
    t = _amp_trainer(tmp_path, "--amp", "fp32", "--continue_train")
    assert t.precision == "fp32" and "this run trained in bf16 so far" in capsys.readouterr().out
    t = _amp_trainer(tmp_path, "--amp", "fp32")
    assert t.amp_dtype is None and _saved_amp(tmp_path) == "fp32"
    # where plain --amp would choose otherwise, the line says so
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    t = _amp_trainer(tmp_path, "--amp", "bf16")
    assert t.precision == "bf16" and "plain --amp would pick fp32: this CPU" in capsys.readouterr().out
    # no --amp stays fp32 and records no precision
    t = _amp_trainer(tmp_path)
    assert t.amp_dtype is None and _saved_amp(tmp_path) == ""


def test_bad_amp_values_are_clear_errors(tmp_path, monkeypatch):
    import json

    from spadegan.options import amp_setting, options_from_dict
    with pytest.raises(SpadeganError, match="argument --amp: invalid choice: 'bf17'"):
        parse(["--amp", "bf17"], train=True)
    with pytest.raises(SpadeganError, match="--amp 'half' is not a precision"):
        options_from_dict({"amp": "half"})
    # options saved before --amp took a value
    assert (amp_setting(True), amp_setting(False), parse(["--amp"], train=True).amp) == ("auto", "", "auto")
    from spadegan.train.state import OPTIM_FILE
    _amx_cpu(monkeypatch, None)
    _amp_trainer(tmp_path, "--amp", "bf16").run(max_steps=1)
    (tmp_path / "ck" / "run" / OPTIM_FILE).unlink()
    path = tmp_path / "ck" / "run" / "opt.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps(dict(saved, amp="bf17")))
    with pytest.raises(SpadeganError, match=rf"{re.escape(str(path))}: --amp 'bf17' is not a precision"):
        _amp_trainer(tmp_path, "--amp", "--continue_train")
