"""Files from strangers run nothing: a malicious opt.pkl is refused by every command and API
that reads a checkpoint folder, before its payload can run; official files still load."""

from __future__ import annotations

import argparse
import builtins
import os
import pickle
import shutil
from pathlib import Path

import pytest

import spadegan
from spadegan.cli import main as cli_main
from spadegan.errors import SpadeganError, UnsafeFileError
from spadegan.fileio import MAX_OPTIONS_BYTES, load_options_pickle
from spadegan.options import load_options_file

BUILTIN = Path(spadegan.__file__).resolve().parent / "pretrained" / "landscapes"


class _Payload:
    """Pickles as a call that creates `target` when unpickled."""

    def __init__(self, kind: str, target: Path):
        self.kind, self.target = kind, str(target)

    def __reduce__(self):
        if self.kind == "system":
            return os.system, (f"touch {self.target}",)
        if self.kind == "exec":
            return builtins.exec, (f"open({self.target!r}, 'w').close()",)
        return builtins.open, (self.target, "w")  # opening for writing creates the file


PAYLOADS = {"system": "posix.system" if os.name == "posix" else "nt.system",
            "exec": "builtins.exec", "open": "io.open"}


def evil_folder(tmp_path: Path, kind: str, whole: bool = False) -> tuple[Path, Path]:
    """A checkpoint folder with valid weights and an opt.pkl whose unpickling would create a file."""
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(BUILTIN / "latest_net_G.pth", folder / "latest_net_G.pth")
    target = tmp_path / f"pwned_{kind}"
    payload = _Payload(kind, target)
    obj = payload if whole else argparse.Namespace(name="evil", label_nc=10, ngf=payload)
    (folder / "opt.pkl").write_bytes(pickle.dumps(obj))
    return folder, target


def _refused(err: str, folder: Path, kind: str) -> None:
    assert str(folder / "opt.pkl") in err and PAYLOADS[kind] in err, err


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_load_checkpoint_and_synthesizer_refuse_a_malicious_opt_pkl(tmp_path, kind):
    from spadegan.synthesize import Synthesizer

    folder, target = evil_folder(tmp_path, kind)
    with pytest.raises(UnsafeFileError) as e:
        spadegan.load_checkpoint(folder)
    _refused(str(e.value), folder, kind)
    with pytest.raises(UnsafeFileError) as e:
        Synthesizer.from_checkpoint(folder, device="cpu")
    _refused(str(e.value), folder, kind)
    with pytest.raises(UnsafeFileError):  # the .pth file given directly: options from its folder
        spadegan.load_checkpoint(folder / "latest_net_G.pth")
    assert not target.exists()


def test_whole_pickle_payload_is_refused_too(tmp_path):
    folder, target = evil_folder(tmp_path, "system", whole=True)
    with pytest.raises(UnsafeFileError, match="posix.system|nt.system"):
        load_options_file(folder)
    assert not target.exists()


def test_commands_refuse_a_malicious_opt_pkl(tmp_path, capsys):
    folder, target = evil_folder(tmp_path, "system")
    label = tmp_path / "label.png"
    from PIL import Image
    Image.new("L", (64, 64), 3).save(label)
    assert cli_main(["synthesize", "--checkpoint", str(folder), "--label", str(label),
                     "--out", str(tmp_path / "out")]) == 2
    _refused(capsys.readouterr().err, folder, "system")
    # with official flags given, the saved options are still read first (and refused)
    assert cli_main(["synthesize", "--checkpoint", str(folder), "--label", str(label),
                     "--out", str(tmp_path / "out"), "--label_nc", "10"]) == 2
    _refused(capsys.readouterr().err, folder, "system")
    # spadegan test reads a folder's options with --load_from_opt_file
    assert cli_main(["test", "--name", "evil", "--checkpoints_dir", str(tmp_path), "--load_from_opt_file",
                     "--dataset_mode", "landscapes", "--dataroot", str(tmp_path / "data")]) == 2
    _refused(capsys.readouterr().err, folder, "system")
    assert cli_main(["eval", "--checkpoint", str(folder), "--dataroot", str(tmp_path / "data")]) == 2
    _refused(capsys.readouterr().err, folder, "system")
    assert not target.exists()


def test_paint_backend_refuses_a_malicious_opt_pkl(tmp_path):
    pytest.importorskip("fastapi")
    from spadegan.app.cli import build_backend

    folder, target = evil_folder(tmp_path, "open")
    with pytest.raises(UnsafeFileError) as e:
        build_backend(str(folder), device="cpu")
    _refused(str(e.value), folder, "open")
    assert not target.exists()


def test_official_opt_pkl_still_loads(parity_dir, shared):
    saved = load_options_pickle(parity_dir / "opt.pkl")
    assert saved["label_nc"] == 12 and saved["ngf"] == 16 and saved["name"]
    assert load_options_file(parity_dir / "opt.txt")["label_nc"] == 12
    train_fixture = shared / "fixtures" / "official_train" / "ade_tiny" / "opt.pkl"
    if train_fixture.is_file():
        assert load_options_pickle(train_fixture)["label_nc"] == 12


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_our_opt_pkl_round_trips_in_every_protocol(tmp_path, protocol):
    values = dict(name="x", label_nc=5, how_many=float("inf"), seed=None, gpu_ids=[0, 1], use_vae=True)
    (tmp_path / "opt.pkl").write_bytes(pickle.dumps(argparse.Namespace(**values), protocol=protocol))
    assert load_options_pickle(tmp_path / "opt.pkl") == values


def test_non_plain_values_calls_and_oversized_files_are_refused(tmp_path):
    p = tmp_path / "opt.pkl"
    p.write_bytes(pickle.dumps(argparse.Namespace(a={1, 2})))
    with pytest.raises(UnsafeFileError, match="'a' holds a set"):
        load_options_pickle(p)
    p.write_bytes(b"\x80\x02cargparse\nNamespace\nq\x00)R.")  # a REDUCE of a class that is allowed only to be built
    with pytest.raises(UnsafeFileError, match="calls argparse.Namespace"):
        load_options_pickle(p)
    p.write_bytes(b"not a pickle")
    with pytest.raises(SpadeganError, match="cannot read options file"):
        load_options_pickle(p)
    big = tmp_path / "opt.txt"
    big.write_bytes(b"x" * (MAX_OPTIONS_BYTES + 1))
    with pytest.raises(SpadeganError, match="larger than"):
        load_options_file(big)


# ---- safetensors ---------------------------------------------------------------------------------
def test_safetensors_round_trip_and_load_checkpoint(parity_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    from spadegan.checkpoint import resolve_checkpoint
    from spadegan.data import to_semantics
    from spadegan.fileio import read_state_dict

    sd = read_state_dict(parity_dir / "latest_net_G.pth")
    folder = tmp_path / "st"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "latest_net_G.safetensors"))
    back = read_state_dict(folder / "latest_net_G.safetensors")
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # a folder with latest_net_G.safetensors works wherever latest_net_G.pth does
    shutil.copy(parity_dir / "opt.txt", folder / "opt.txt")
    G = spadegan.load_checkpoint(folder)
    inp = torch.load(parity_dir / "input.pt", weights_only=True)
    exp = torch.load(parity_dir / "expected.pt", weights_only=True)
    with torch.no_grad():
        out = G(to_semantics(inp["label"], inp["instance"], G.opt))
    assert (out - exp["G_eval"]).abs().max() <= 1e-4
    assert spadegan.load_checkpoint(folder / "latest_net_G.safetensors").opt.label_nc == 12
    # D beside a .safetensors G file, in the other format
    shutil.copy(parity_dir / "latest_net_D.pth", folder / "latest_net_D.pth")
    assert resolve_checkpoint(folder / "latest_net_G.safetensors", "D")[0] == folder / "latest_net_D.pth"
    # .pth first when both are there
    shutil.copy(parity_dir / "latest_net_G.pth", folder / "latest_net_G.pth")
    assert resolve_checkpoint(folder)[0].name == "latest_net_G.pth"


def test_unreadable_safetensors_names_the_file(tmp_path):
    from spadegan.fileio import read_state_dict

    bad = tmp_path / "latest_net_G.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(SpadeganError, match="cannot read checkpoint .*latest_net_G.safetensors"):
        read_state_dict(bad)
    with pytest.raises(SpadeganError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


# ---- images and palette files ----------------------------------------------------------------------
def test_oversized_label_image_and_palette_file_are_refused(tmp_path, monkeypatch):
    from PIL import Image

    from spadegan.data.palettes import load_palette_file
    from spadegan.fileio import MAX_OPTIONS_BYTES
    from spadegan.synthesize.inputs import open_image

    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses more than twice this
    with pytest.raises(SpadeganError, match=r"label map .*bomb.png is refused: .*decompression bomb"):
        open_image(tmp_path / "bomb.png", "label map")
    big = tmp_path / "classes.json"
    big.write_bytes(b"[" + b" " * MAX_OPTIONS_BYTES + b"]")
    with pytest.raises(SpadeganError, match=r"palette file .*classes.json is larger than"):
        load_palette_file(big)
