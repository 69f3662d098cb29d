"""The top-level API a user can guess (README "Python API"), and that `import spadegan` stays light."""

from __future__ import annotations

import subprocess
import sys

import spadegan


def test_public_names():
    from spadegan.synthesize import Synthesizer

    assert spadegan.Synthesizer is Synthesizer
    assert callable(spadegan.load_checkpoint) and callable(spadegan.options.parse)
    for name in ("define_G", "define_D", "define_E"):
        assert callable(getattr(spadegan.networks, name))
    assert callable(spadegan.data.to_semantics)
    opt = spadegan.options.parse(["--gpu_ids", "-1", "--dataset_mode", "landscapes", "--ngf", "8",
                                  "--crop_size", "64", "--load_size", "64"], train=False)
    assert spadegan.networks.define_G(opt).opt is opt


def test_import_spadegan_does_not_load_the_synthesizer():
    code = ("import sys, spadegan; "
            "print(any(m in sys.modules for m in ('spadegan.synthesize', 'spadegan.engine', 'spadegan.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
