"""`spadegan export`: write a trained generator's engine as ONNX or TorchScript, and check it;
or its weights as .safetensors.

`--format safetensors` writes the generator's state_dict (and the style encoder E's, when the
run has one) as `.safetensors` files, which hold tensors only (no code, unlike pickles and
TorchScript), with the options as metadata (`checkpoint.save_network_safetensors`): such a
file, or a folder holding `<epoch>_net_G.safetensors`, loads wherever a `.pth` does, with its
options, and the check reloads it and compares every tensor.

The exported graph is the engine in its dense mode (`SynthesisEngine.dense_only`): the
gather-and-sum first SPADE convolution, fused gamma/beta convolutions, folded spectral
norm, no data-dependent shapes. Its inputs are class ids instead of one-hot maps:

* `label`: int64 (B, H, W) class ids, dontcare already mapped to `label_nc`;
* `instance`: float32 (B, H, W) instance ids (only for models trained with instance maps);
* `z`: float32 (B, z_dim) style code (only for VAE models);

and its output `image` is float32 (B, 3, H, W) in [-1, 1]. A generator trained on image
labels (`--label_nc 0`) has no class ids for the engine's lookups: its faithful network is
exported instead (spectral norm folded into the weights), with the input

* `label`: float32 (B, input_nc, H, W), the label image scaled to [-1, 1];

(and `z` for VAE models). Batch size and image size are fixed at export time
(`--batch_size`, `--size`). After writing, the file is loaded again
(onnxruntime for ONNX, torch.jit.load for TorchScript), run on a random label map and
compared with the faithful network; the max abs error is printed and must be <= `--tol`.

An official OASIS run (`oasis_checkpoint`: `<run>/models/<tag>_{G,EMA,D}.pth`, `--which_epoch`
default `best`, its official test flags where it has no opt.pkl / opt.txt) exports its
generator (EMA unless --no_EMA) as it is, spectral norm folded, with the inputs

* `semantics`: float32 (B, semantic_nc, H, W), the one-hot map in OASIS' channel order
  (channel 0 = dontcare, `oasis_checkpoint.oasis_label_channels`);
* `z`: float32 (B, z_dim), the 3D noise (none with --no_3dnoise): the graph draws nothing;

documented in the printed summary and in the file (ONNX metadata_props / the TorchScript
extra file `spadegan_export.json`). Its size is the run's (`--crop_size` / `--aspect_ratio`
for another). `--format safetensors` writes `<tag>_<EMA|G>.safetensors` with the official
state_dict names and the options as metadata (`oasis_checkpoint.oasis_options_metadata`);
`load_checkpoint` / `Synthesizer.from_checkpoint` read it back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import copy

from ..errors import SpadeganError
from ..layers.spectral import has_spectral_norm, remove_spectral_norm
from ..networks import at_size
from ..oasis_checkpoint import add_oasis_flags, oasis_flags
from .engine import SynthesisEngine


class ExportModule(nn.Module):
    """The engine with a fixed positional signature (label[, instance][, z]) for tracing."""

    def __init__(self, engine: SynthesisEngine, size: tuple[int, int]):
        super().__init__()
        self.engine = engine
        self.size = size
        engine.dense_only = True

    def forward(self, label: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        rest = list(rest)
        inst = rest.pop(0) if self.engine.instance else None
        z = rest.pop(0) if self.engine.use_vae else None
        return self.engine(label, inst, z, self.size)


def folded_copy(G: nn.Module) -> nn.Module:
    """An eval-mode copy of `G` with every spectral norm folded into a plain weight (G is left as it is)."""
    plain = copy.deepcopy(G).eval()
    for m in plain.modules():
        if has_spectral_norm(m):
            remove_spectral_norm(m)
    return plain


class FaithfulExportModule(nn.Module):
    """A --label_nc 0 generator for tracing: (label image[, z]) -> image, spectral norm folded."""

    def __init__(self, G: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.G = folded_copy(at_size(G, size))
        self.use_vae = bool(G.use_vae)

    def forward(self, label: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.G(label, rest[0] if self.use_vae else None)


def image_label_inputs(G: nn.Module, size: tuple[int, int], batch: int,
                       seed: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """Smooth random label images in [-1, 1] (+ z) for a --label_nc 0 generator."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand((batch, G.opt.input_nc, max(1, h // 8), max(1, w // 8)), generator=g) * 2 - 1
    names, inputs = ["label"], [torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")]
    if G.use_vae:
        names.append("z")
        inputs.append(torch.randn(batch, G.z_dim, generator=g))
    return names, inputs


def example_inputs(engine: SynthesisEngine, size: tuple[int, int], batch: int,
                   seed: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """Blocky random label (+ instance, z) inputs, like real maps, for tracing and checking."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    cells = (max(1, h // 8), max(1, w // 8))
    lab = torch.randint(0, engine.label_channels, (batch, 1) + cells, generator=g).float()
    lab = torch.nn.functional.interpolate(lab, size=size, mode="nearest")[:, 0].long()
    names, inputs = ["label"], [lab]
    if engine.instance:
        inst = torch.randint(0, 4, (batch, 1) + cells, generator=g).float()
        names.append("instance")
        inputs.append(torch.nn.functional.interpolate(inst, size=size, mode="nearest")[:, 0])
    if engine.use_vae:
        names.append("z")
        inputs.append(torch.randn(batch, engine.z_dim, generator=g))
    return names, inputs


def faithful_output(G: nn.Module, inputs: list[torch.Tensor], names: list[str]) -> torch.Tensor:
    from ..data.semantics import to_semantics
    d = dict(zip(names, inputs))
    inst = d.get("instance")
    if G.opt.image_label:
        sem = d["label"]
    else:
        sem = to_semantics(d["label"][:, None], None if inst is None else inst[:, None], G.opt)
    with torch.no_grad():
        return G(sem, d.get("z"))


def _export_module(G: nn.Module, size: int | None, batch: int
                   ) -> tuple[nn.Module, tuple[int, int], list[str], list[torch.Tensor]]:
    """(module to trace, its (H, W), input names, example inputs): the engine, or for image labels
    (no class ids for the engine's lookups) the faithful network."""
    num_up = G.opt.num_up_layers
    default = (G.sh * 2 ** num_up, G.sw * 2 ** num_up)
    hw = default
    if size is not None:
        m = 2 ** num_up
        if size % m or size < m:
            raise SpadeganError(f"--size {size} must be a multiple of {m}")
        hw = (max(m, round(size * default[0] / default[1] / m) * m), size)
    if G.opt.image_label:
        if G.use_vae and hw != default:
            raise SpadeganError(f"this VAE model's fc layer fixes the output at {default[1]}x{default[0]}; "
                                f"got --size {size}")
        return (FaithfulExportModule(G, hw).eval(), hw) + image_label_inputs(G, hw, batch)
    engine = SynthesisEngine.from_generator(G, precision="fp32")
    hw = engine.output_size(hw)
    return (ExportModule(engine, hw).eval(), hw) + example_inputs(engine, hw, batch)


def _safetensors_targets(out: Path, which_epoch: str, with_E: bool) -> tuple[Path, Path | None]:
    """(G file, E file or None) for --out: a `.safetensors` file, or a folder."""
    if out.suffix != ".safetensors":
        return out / f"{which_epoch}_net_G.safetensors", (out / f"{which_epoch}_net_E.safetensors" if with_E else None)
    if not with_E:
        return out, None
    if not out.name.endswith("_net_G.safetensors"):
        raise SpadeganError(f"--out {out}: this run has a style encoder (E), written beside G by the checkpoint "
                            "naming rule: name the file <epoch>_net_G.safetensors (E goes to <epoch>_net_E"
                            ".safetensors) or give a folder")
    return out, out.with_name(out.name[:-len("_net_G.safetensors")] + "_net_E.safetensors")


def _encoder_weights(checkpoint: Path, which_epoch: str) -> Path | None:
    from ..checkpoint import companion_weights, weights_file
    return weights_file(checkpoint, "E", which_epoch) if checkpoint.is_dir() else companion_weights(checkpoint, "E")


def export_safetensors(checkpoint: str | Path, out: str | Path, which_epoch: str = "latest",
                       check: bool = True) -> dict:
    """G (and E) as .safetensors with the options as metadata; returns {"path", "format", "files", "nets"}."""
    from ..checkpoint import load_checkpoint, network_state_dict, save_network_safetensors
    from ..device import say_once

    checkpoint = Path(checkpoint)
    nets = {"G": load_checkpoint(checkpoint, "G", which_epoch=which_epoch)}
    e_file = _encoder_weights(checkpoint, which_epoch) if nets["G"].opt.use_vae else None
    if e_file is not None:
        nets["E"] = load_checkpoint(e_file, "E", opt=nets["G"].opt)
    elif nets["G"].opt.use_vae:
        say_once(f"{checkpoint} holds no {which_epoch}_net_E weights: exporting G alone (styles then come "
                 "from random codes, not from style images)")
    g_path, e_path = _safetensors_targets(Path(out), which_epoch, "E" in nets)
    files = {"G": g_path, **({"E": e_path} if e_path is not None else {})}
    for k, path in files.items():
        save_network_safetensors(nets[k], k, path)
    if check:
        for k, path in files.items():
            back = network_state_dict(load_checkpoint(path, k))
            want = network_state_dict(nets[k])
            if back.keys() != want.keys() or any(not torch.equal(back[n], want[n]) for n in want):
                raise SpadeganError(f"{path} does not read back as the {k} it was written from; do not use it")
    return {"path": str(g_path), "format": "safetensors", "files": [str(p) for p in files.values()],
            "nets": list(files), "checked": check}


def _write_graph(module: nn.Module, inputs: list[torch.Tensor], names: list[str], fmt: str, out: Path,
                 opset: int, doc: dict[str, str] | None = None) -> None:
    """Trace `module` on `inputs` into `out` (atomically); `doc`: strings stored in the file
    (ONNX metadata_props, or the TorchScript extra file `spadegan_export.json`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warns about every shape turned into a constant: sizes are fixed on purpose
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            traced = torch.jit.trace(module, tuple(inputs), check_trace=False)
            extra = {"spadegan_export.json": json.dumps(doc, sort_keys=True)} if doc else {}
            torch.jit.save(traced, str(tmp), _extra_files=extra)
        else:
            try:
                import onnx
            except ImportError:
                raise SpadeganError("ONNX export needs the onnx package: pip install 'spadegan[export]'") from None
            torch.onnx.export(module, tuple(inputs), str(tmp), input_names=names, output_names=["image"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)
            if doc:
                model = onnx.load(str(tmp))
                for key, value in doc.items():
                    entry = model.metadata_props.add()
                    entry.key, entry.value = key, value
                onnx.save(model, str(tmp))
    tmp.replace(out)


def _run_graph(fmt: str, out: Path, names: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """(the written file's output on `inputs`, its run time in ms): torch.jit or onnxruntime."""
    t0 = time.perf_counter()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still works
            loaded = torch.jit.load(str(out))
        with torch.no_grad():
            got = loaded(*inputs)
    else:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SpadeganError("checking the ONNX file needs onnxruntime: pip install 'spadegan[export]' "
                                "(or pass --no_check)") from None
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        feeds = {n: x.numpy() for n, x in zip(names, inputs)}
        got = torch.from_numpy(sess.run(None, feeds)[0])
    return got, (time.perf_counter() - t0) * 1000


def _check_graph(result: dict, fmt: str, out: Path, names: list[str], inputs: list[torch.Tensor],
                 ref: torch.Tensor, tol: float) -> None:
    """Run the written file, record "ms" and "max_abs_err" in `result`; over `tol` is an error."""
    got, result["ms"] = _run_graph(fmt, out, names, inputs)
    err = float((got - ref).abs().max())
    result["max_abs_err"] = err
    if not err <= tol:
        raise SpadeganError(f"exported {fmt} model differs from the network by {err:.3g} (> --tol {tol}); "
                            f"the file {out} was written but should not be trusted")


def export(checkpoint: str | Path, fmt: str, out: str | Path, size: int | None = None,
           batch: int = 1, opset: int = 17, tol: float = 1e-4, check: bool = True,
           which_epoch: str | None = None, oasis_flags: dict[str, Any] | None = None) -> dict:
    """Export and check; returns {"path", "format", "max_abs_err", "ms", ...}. `which_epoch`:
    default `latest` (an official OASIS run: `best`, as its test.py). An official OASIS run
    goes to `export_oasis`; `oasis_flags` (its official test flags) apply to those alone."""
    from ..checkpoint import load_checkpoint
    from ..oasis_checkpoint import is_oasis_run

    if fmt not in ("onnx", "torchscript", "safetensors"):
        raise SpadeganError(f"--format must be onnx, torchscript or safetensors, not {fmt!r}")
    if is_oasis_run(checkpoint):
        return export_oasis(checkpoint, fmt, out, size, batch, opset, tol, check, which_epoch, oasis_flags or {})
    if oasis_flags:
        raise SpadeganError(f"{checkpoint} is not an official OASIS run, so the OASIS flag(s) "
                            f"{', '.join('--' + k for k in sorted(oasis_flags))} do not apply")
    which_epoch = which_epoch or "latest"
    if fmt == "safetensors":
        return export_safetensors(checkpoint, out, which_epoch, check)
    G = load_checkpoint(checkpoint, "G", which_epoch=which_epoch)
    if G.opt.netG != "spade":
        raise SpadeganError(f"export supports SPADE generators (--netG spade), not --netG {G.opt.netG}")
    module, hw, names, inputs = _export_module(G, size, batch)
    out = Path(out)
    _write_graph(module, inputs, names, fmt, out, opset)
    result = {"path": str(out), "format": fmt, "size": list(hw), "batch": batch, "inputs": names,
              "network": "faithful" if G.opt.image_label else "engine"}
    if check:
        ref = faithful_output(G if size is None else at_size(G, hw), inputs, names)
        _check_graph(result, fmt, out, names, inputs, ref, tol)
    return result


# ---- official OASIS runs -------------------------------------------------------------------------
class OASISExportModule(nn.Module):
    """An OASIS generator for tracing: (semantics[, z (B, z_dim)]) -> image, spectral norm folded;
    z is an input (the official forward's own random draw is not part of the graph)."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = folded_copy(G)
        self.noise = not G.oasis_opt.no_3dnoise

    def forward(self, semantics: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.G(semantics, rest[0] if self.noise else None)


def oasis_input_doc(opt: Any, batch: int) -> dict[str, str]:
    """name -> what the exported OASIS graph reads (dtype, shape, channel order), and its output."""
    from ..oasis_checkpoint import DONTCARE_ID, OASIS_DATASETS

    h, w = opt.output_size
    table = OASIS_DATASETS.get(opt.dataset_mode)
    if table is None:
        order = f"dataset_mode {opt.dataset_mode!r}: channel 0 = dontcare, the classes after it as the run was trained"
    else:
        order = (f"{opt.dataset_mode}: dataset id k -> channel k{f' + {table.shift}' if table.shift else ''} "
                 f"(ids 0..{table.max_id}), {DONTCARE_ID} (dontcare) -> channel 0"
                 + ("; id 0 shares channel 0" if table.shift == 0 else ""))
    doc = {"semantics": f"float32 ({batch}, {opt.semantic_nc}, {h}, {w}) one-hot semantics in OASIS' channel order "
                        f"({order}; spadegan.oasis_checkpoint.oasis_label_channels + oasis_semantics)"}
    if not opt.no_3dnoise:
        doc["z"] = (f"float32 ({batch}, {opt.z_dim}) 3D noise, broadcast over {h} x {w} and put before the "
                    "semantics (the official test draws torch.randn(B, z_dim)); the graph draws no noise itself")
    doc["image"] = f"output: float32 ({batch}, 3, {h}, {w}) in [-1, 1]"
    return doc


def oasis_example_inputs(opt: Any, batch: int, seed: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """Blocky random one-hot semantics (+ z) at the generator's size, for tracing and checking."""
    from ..oasis_checkpoint import oasis_semantics

    g = torch.Generator().manual_seed(seed)
    h, w = opt.output_size
    cells = torch.randint(0, opt.semantic_nc, (batch, 1, max(1, h // 8), max(1, w // 8)), generator=g).float()
    channels = torch.nn.functional.interpolate(cells, size=(h, w), mode="nearest").long()
    names, inputs = ["semantics"], [oasis_semantics(channels, opt.semantic_nc)]
    if not opt.no_3dnoise:
        names.append("z")
        inputs.append(torch.randn(batch, opt.z_dim, generator=g))
    return names, inputs


def export_oasis(checkpoint: str | Path, fmt: str, out: str | Path, size: int | None, batch: int, opset: int,
                 tol: float, check: bool, which_epoch: str | None, flags: dict[str, Any]) -> dict:
    """`export` for an official OASIS run: its generator (EMA unless --no_EMA) as an ONNX /
    TorchScript graph (see the module doc), or as .safetensors (`export_oasis_safetensors`)."""
    from ..oasis_checkpoint import load_oasis_run, oasis_options_metadata

    if size is not None:
        raise SpadeganError(f"{checkpoint} is an official OASIS run: --size does not apply; its graph has the run's "
                            "size (crop_size, aspect_ratio): pass --crop_size / --aspect_ratio for another")
    G = load_oasis_run(checkpoint, which_epoch, **flags)
    run = G.oasis_run
    if fmt == "safetensors":
        return export_oasis_safetensors(G, Path(out), check)
    opt = G.oasis_opt
    names, inputs = oasis_example_inputs(opt, batch)
    doc = oasis_input_doc(opt, batch)
    meta = {"spadegan_inputs": json.dumps(doc), **oasis_options_metadata(opt, run.network, run.which_epoch)}
    out = Path(out)
    _write_graph(OASISExportModule(G).eval(), inputs, names, fmt, out, opset, meta)
    result = {"path": str(out), "format": fmt, "size": list(opt.output_size), "batch": batch, "inputs": names,
              "network": f"oasis {run.network}", "input_doc": doc, "weights": str(run.weights)}
    if check:
        with torch.no_grad():
            ref = G(*inputs)
        _check_graph(result, fmt, out, names, inputs, ref, tol)
    return result


def export_oasis_safetensors(G: nn.Module, out: Path, check: bool) -> dict:
    """An OASIS generator's state_dict (official names) as .safetensors with its options, network
    and tag as metadata: `out` itself (a .safetensors file) or `out/<tag>_<network>.safetensors`;
    the check reads it back through `load_checkpoint` and compares every tensor."""
    from ..checkpoint import load_checkpoint
    from ..fileio import write_safetensors
    from ..oasis_checkpoint import oasis_options_metadata

    run = G.oasis_run
    path = out if out.suffix == ".safetensors" else out / f"{run.which_epoch}_{run.network}.safetensors"
    want = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    write_safetensors(path, want, oasis_options_metadata(G.oasis_opt, run.network, run.which_epoch))
    if check:
        back = load_checkpoint(path, "G").state_dict()
        if back.keys() != want.keys() or any(not torch.equal(back[n], want[n]) for n in want):
            raise SpadeganError(f"{path} does not read back as the OASIS generator {run.weights}; do not use it")
    return {"path": str(path), "format": "safetensors", "files": [str(path)], "nets": [f"OASIS {run.network}"],
            "checked": check}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spadegan export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint folder or _net_G.pth file, or an official OASIS run (folder or <tag>_EMA.pth)")
    p.add_argument("--which_epoch", default=None, help="default: latest (an official OASIS run: best)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--out", required=True,
                   help="output file (.onnx / .pt / .safetensors); for safetensors also a folder")
    p.add_argument("--size", type=int, default=None, help="output width (default: the training size)")
    p.add_argument("--batch_size", type=int, default=1, help="batch size baked into the graph")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--tol", type=float, default=1e-4, help="max abs error allowed by the check")
    p.add_argument("--no_check", action="store_true", help="skip the onnxruntime / torch.jit check")
    add_oasis_flags(p)
    args = p.parse_args(argv)
    if args.format == "safetensors" and args.size is not None:
        raise SpadeganError("--size applies to onnx and torchscript graphs; safetensors files hold the weights, "
                            "which work at any size")
    if args.batch_size < 1:
        raise SpadeganError(f"--batch_size must be at least 1, got {args.batch_size}")
    res = export(args.checkpoint, args.format, args.out, args.size, args.batch_size, args.opset,
                 args.tol, not args.no_check, args.which_epoch, oasis_flags(args))
    if res["format"] == "safetensors":
        print(f"spadegan export: wrote {', '.join(res['files'])} (safetensors: the {' and '.join(res['nets'])} "
              "weights, the options as metadata" + ("; read back identical)" if res["checked"] else ")"))
        return 0
    msg = f"spadegan export: wrote {res['path']} ({res['format']}, inputs {', '.join(res['inputs'])}, " \
          f"{res['size'][1]}x{res['size'][0]}, batch {res['batch']})"
    if res["network"] == "faithful":
        msg += " of the faithful network (the engine needs class-id label maps; this model reads label images)"
    elif res["network"].startswith("oasis"):
        msg += f" of the official OASIS generator {res['weights']}"
    if "max_abs_err" in res:
        runtime = "onnxruntime" if args.format == "onnx" else "torch.jit"
        msg += f"; {runtime} output vs the faithful network: max abs error {res['max_abs_err']:.2e}"
    print(msg)
    for name, what in res.get("input_doc", {}).items():
        print(f"  {name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
