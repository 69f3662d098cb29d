"""`spadegan synthesize`: label map files -> images with a checkpoint or the built-in model (`main`),
including `--demo`, a gallery (index.html) made with the built-in landscapes model.

Options the model was trained with come from the checkpoint (opt.json / opt.txt / opt.pkl);
official flags given on the command line override them. An official OASIS run folder
(`<run>/models/<tag>_EMA.pth`; `--which_epoch best`) takes OASIS' test flags instead
(`--dataset_mode coco --channels_G 64 ...`, `oasis_checkpoint.OASIS_FLAGS`) and label maps
in the dataset's own ids; `--seed` / `--num_samples` then choose its 3D noise. A checkpoint whose options file
exists but cannot be read is an error naming the file, never a silent rebuild from defaults.
A label map that cannot be read or synthesized is reported in one line and skipped.
"""

from __future__ import annotations

import argparse
import html
import secrets
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..device import resolve_device
from ..errors import SpadeganError, UnsafeFileError
from ..visuals import save_png
from .inputs import IMAGE_EXTS, open_image
from .style_bank import STYLE_PRIORS
from .synthesizer import Synthesizer, builtin_checkpoint, checkpoint_style_bank

#: the options files a checkpoint folder may hold, in the order they are read
OPTIONS_FILES = ("opt.json", "opt.pkl", "opt.txt")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spadegan synthesize",
        description="Turn label maps into images with a trained SPADE/GauGAN generator. Options the "
                    "model was trained with are read from the checkpoint folder (opt.json / opt.txt); "
                    "official flags such as --label_nc may be added to override them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (latest_net_G.pth + opt.txt) or a _net_G.pth file, "
                                        "or an official OASIS run folder (models/<tag>_EMA.pth; add its test "
                                        "flags such as --dataset_mode coco --channels_G 64 where it has no "
                                        "opt.pkl); default: the built-in landscapes model")
    p.add_argument("--which_epoch", default="latest", help="which <epoch>_net_G.pth of a folder")
    p.add_argument("--label", nargs="+", default=[], help="label map files and/or folders of them")
    p.add_argument("--instance", nargs="+", default=[],
                   help="instance maps: one per label file, or a folder with files named like the labels")
    p.add_argument("--style_image", default=None, help="VAE models: copy the style of this photo")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="VAE / OASIS models: seed of the random styles (noise)")
    p.add_argument("--num_samples", type=int, default=1, help="VAE / OASIS models: random styles per label map")
    p.add_argument("--style_prior", default="auto", choices=STYLE_PRIORS,
                   help="VAE models: where random styles come from: the checkpoint's style bank (encoded "
                        "training photos, `spadegan style-bank`), N(0, I) (normal), or auto: the bank when "
                        "there is one")
    p.add_argument("--size", type=int, default=None,
                   help="output width (height from the label's aspect ratio); default the training size")
    p.add_argument("--batch_size", type=int, default=1, help="label maps per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 on AMX CPUs and GPUs of compute capability >= 8.0, fp16 on older "
                        "GPUs, else fp32 (see spadegan.device)")
    p.add_argument("--engine", dest="engine", action="store_true", default=True,
                   help="use the fast inference engine")
    p.add_argument("--no_engine", dest="engine", action="store_false",
                   help="run the training network (the networks generator; its SPADE implementation, dense "
                        "or sparse, follows --spade_impl and the device, and the summary line names it) "
                        "instead of the fast engine")
    p.add_argument("--demo", action="store_true",
                   help="write a gallery (index.html) of procedural landscape label maps synthesized "
                        "with the built-in model (or --checkpoint, a landscapes model)")
    p.add_argument("--demo_count", type=int, default=4, help="--demo: number of label maps")
    p.add_argument("--palette_labels", action="store_true",
                   help="also write each label map in palette colours next to the result")
    return p


def _collect(paths: Sequence[str], what: str) -> tuple[list[Path], bool]:
    """Files from file/folder arguments; also whether a folder was given (for the progress bar)."""
    files: list[Path] = []
    folder = False
    for s in paths:
        p = Path(s)
        if p.is_dir():
            folder = True
            found = sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise SpadeganError(f"{what} folder {p} holds no images")
            files += found
        else:
            files.append(p)  # a missing file is reported (and skipped) when read
    return files, folder



def _override_options(opt, extra: list[str]):
    """Apply official flags given on the command line over the checkpoint's saved options.

    Train-only flags (e.g. a copy of the training command's `--ndf 16`) are accepted and
    only matter where they change the generator; test-only ones likewise.
    """
    from ..options import FIELDS, TRAIN, parse

    if not extra:
        return opt
    given = [t[2:].split("=")[0] for t in extra if t.startswith("--")]
    unknown = [g for g in given if g not in FIELDS]
    if unknown:
        raise SpadeganError(f"spadegan synthesize: unknown flag --{unknown[0]} (see --help)")
    train = any(FIELDS[g].metadata.get("phase") == TRAIN for g in given)
    parsed = parse(extra + ([] if "gpu_ids" in given else ["--gpu_ids", "-1"]), train=train)
    if opt is None:
        return parsed.replace(isTrain=False)
    return opt.replace(**{g: getattr(parsed, g) for g in given})


def _flag_device(device: str | None, extra: list[str], opt) -> str | torch.device | None:
    """--device, else the official --gpu_ids when given (several ids: the first, saying so once)."""
    if device or opt is None or not any(t == "--gpu_ids" or t.startswith("--gpu_ids=") for t in extra):
        return device
    return resolve_device(None, opt.gpu_ids)


def _saved_options(path: Path, which_epoch: str, extra: list[str]):
    """The checkpoint's saved options for the override flags `extra` to change, or None when it
    has none (the flags then say it all). An options file that exists but cannot be read is
    an error naming it: the flags override saved options, they do not replace them."""
    from ..checkpoint import checkpoint_options
    from ..options import load_options_file

    try:
        return checkpoint_options(path, which_epoch=which_epoch)
    except UnsafeFileError:
        raise
    except SpadeganError as no_options:
        folder = path if path.is_dir() else path.parent
        files = [folder / name for name in OPTIONS_FILES if (folder / name).is_file()]
        if not files:
            return None  # no options file: the flags given must say it all
        try:
            load_options_file(files[0])
        except UnsafeFileError:
            raise
        except SpadeganError as e:
            raise SpadeganError(
                f"{e}. The flags given ({' '.join(extra)}) override the options saved in {files[0]}, "
                f"so that file must be readable: repair it, or remove it and give every training flag "
                "(--label_nc, --contain_dontcare_label, --no_instance, --ngf, ...)") from None
        raise no_options


def _take_gpu_ids(extra: list[str]) -> tuple[list[str], str | None]:
    """(`extra` without `--gpu_ids X`, X or None): the official test commands carry it."""
    rest, gpu_ids, i = [], None, 0
    while i < len(extra):
        t = extra[i]
        if t == "--gpu_ids" and i + 1 < len(extra):
            gpu_ids, i = extra[i + 1], i + 2
            continue
        if t.startswith("--gpu_ids="):
            gpu_ids = t.split("=", 1)[1]
        else:
            rest.append(t)
        i += 1
    return rest, gpu_ids


def _load_synthesizer(args: argparse.Namespace, extra: list[str]) -> Synthesizer:
    from ..checkpoint import load_checkpoint
    from ..oasis_checkpoint import is_oasis_run, parse_oasis_flags

    path = builtin_checkpoint() if args.checkpoint is None else Path(args.checkpoint)
    if is_oasis_run(path):  # an official OASIS run: its own test flags (and --gpu_ids), not SPADE's
        extra, gpu_ids = _take_gpu_ids(extra)
        device = args.device or (None if gpu_ids is None else resolve_device(None, gpu_ids))
        return Synthesizer.from_checkpoint(path, device, args.precision, args.engine, args.which_epoch,
                                           **parse_oasis_flags(extra, path))
    opt = _override_options(_saved_options(path, args.which_epoch, extra), extra) if extra else None
    device = resolve_device(_flag_device(args.device, extra, opt))  # G's implementation is for this device
    G = load_checkpoint(path, "G", opt=opt, which_epoch=args.which_epoch, impl="auto", device=device)
    bank = checkpoint_style_bank(path, G.opt, args.which_epoch, args.style_prior)
    return Synthesizer(G, device=device, precision=args.precision, use_engine=args.engine,
                       name="built-in landscapes" if args.checkpoint is None else "", checkpoint=path,
                       consume=True, which_epoch=args.which_epoch, style_bank=bank)


def _pair_instances(labels: list[Path], inst_args: list[str]) -> list[Path | None]:
    if not inst_args:
        return [None] * len(labels)
    if len(inst_args) == 1 and Path(inst_args[0]).is_dir():
        folder = Path(inst_args[0])
        by_stem = {x.stem: x for x in folder.iterdir() if x.is_file()}
        return [by_stem.get(lab.stem, folder / (lab.stem + ".png")) for lab in labels]
    files, _ = _collect(inst_args, "instance")
    if len(files) != len(labels):
        raise SpadeganError(f"--instance gives {len(files)} file(s) for {len(labels)} label map(s); "
                            "give one per label map, or a folder with files named like the labels")
    return files


def _save(img: Image.Image, path: Path) -> None:
    save_png(np.asarray(img), path)


def _check_args(args: argparse.Namespace, extra: list[str]) -> None:
    if extra and not extra[0].startswith("--"):
        raise SpadeganError(f"spadegan synthesize: unexpected argument {extra[0]!r} (see --help)")
    if args.out is None:
        raise SpadeganError("spadegan synthesize: --out DIR is required (where the images are written)")
    for name in ("num_samples", "batch_size", "demo_count"):
        if getattr(args, name) < 1:
            raise SpadeganError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.demo and not args.label:
        raise SpadeganError("spadegan synthesize: give --label FILE [FILE | FOLDER ...] (or --demo)")


def _check_model_args(args: argparse.Namespace, syn: Synthesizer) -> None:
    if args.style_image and not syn.use_vae:
        raise SpadeganError("--style_image needs a model trained with --use_vae; this one was not")
    if args.style_image:
        open_image(Path(args.style_image), "style image")  # fail early on a bad path
    if not (syn.use_vae or syn.use_3d_noise) and (args.num_samples > 1):
        raise SpadeganError("--num_samples needs a model trained with --use_vae or 3D noise (OASIS); other "
                            "models are deterministic")


class _Job:
    """`spadegan synthesize` over label files: read, synthesize in batches, write, count failures.

    A label map that cannot be read or synthesized is reported (one line) and skipped; the
    others are still written.
    """

    def __init__(self, args: argparse.Namespace, syn: Synthesizer, labels: list[Path], out: Path,
                 total: int, progress: bool):
        from tqdm import tqdm

        self.args, self.syn, self.out = args, syn, out
        self.base_seed = args.seed if args.seed is not None else secrets.randbits(31)
        stems = [lab.stem for lab in labels]
        self.dup = {s for s in stems if stems.count(s) > 1}
        self.failed: list[str] = []  # one message per label map that could not be synthesized
        self.bad: set[Path] = set()
        self.written = 0
        self.bar = tqdm(total=total, desc="synthesize", unit="img", disable=not progress)
        self._last: tuple[Path | None, tuple | None] = (None, None)  # the samples of one map are consecutive

    def report(self, lab: Path | None, e: SpadeganError) -> None:
        from tqdm import tqdm

        if lab is not None:
            self.bad.add(lab)
        self.failed.append(str(e))
        tqdm.write(f"spadegan synthesize: error: {e}", file=sys.stderr)

    def read(self, batch: list[tuple[Path, Path | None, int]]) -> list[tuple]:
        """(label file, sample, label, instance ids) of the batch's readable label maps, decoded."""
        ok = []
        for lab, inst, k in batch:
            if lab in self.bad:
                self.bar.update(1)
                continue
            try:
                if self._last[0] != lab:
                    ids = self.syn.read_label(lab)
                    iid = self.syn.instance_ids(inst) if (inst is not None and self.syn.needs_instance) else None
                    self._last = (lab, (ids, iid))
                ok.append((lab, k) + self._last[1])
            except SpadeganError as e:
                self.report(lab, e)
                self.bar.update(1)
        return ok

    def run_batch(self, batch: list[tuple[Path, Path | None, int]]) -> None:
        """Synthesize and write a batch: one forward pass per output size."""
        args, syn = self.args, self.syn
        groups: dict[tuple, list] = {}
        for item in self.read(batch):
            size = syn.output_size(args.size, item[2].shape[:2] if args.size else None)
            groups.setdefault(size, []).append(item)
        for size, items in groups.items():
            try:
                imgs = syn.synthesize_decoded([ids for _, _, ids, _ in items], [iid for _, _, _, iid in items],
                                              [args.style_image] * len(items),
                                              [self.base_seed + k for _, k, _, _ in items], size)
            except SpadeganError as e:
                for lab, *_ in items:
                    self.bad.add(lab)
                self.report(None, e)
                self.bar.update(len(items))
                continue
            for (lab, k, ids, _), img in zip(items, imgs):
                self.write(lab, k, ids, img)

    def write(self, lab: Path, k: int, ids: np.ndarray, img: Image.Image) -> None:
        stem = lab.stem if lab.stem not in self.dup else f"{lab.parent.name}_{lab.stem}"
        name = f"{stem}.png" if self.args.num_samples == 1 else f"{stem}_sample{k}.png"
        _save(img, self.out / name)
        if self.args.palette_labels and k == 0:
            _save(Image.fromarray(self.syn.label_picture(ids, (img.height, img.width))),
                  self.out / f"{stem}_label.png")
        self.written += 1
        self.bar.update(1)


def main(argv: list[str] | None = None) -> int:
    """`spadegan synthesize`: see `--help`. Returns 0, or 1 when some label maps failed."""
    args, extra = _parser().parse_known_args(argv)
    _check_args(args, extra)
    out = Path(args.out)
    if args.demo:
        return _demo(args, extra, out)
    labels, folder = _collect(args.label, "label")
    instances = _pair_instances(labels, args.instance)
    syn = _load_synthesizer(args, extra)
    _check_model_args(args, syn)
    out.mkdir(parents=True, exist_ok=True)
    # jobs: (label file, instance, sample index)
    jobs = [(lab, inst, k) for lab, inst in zip(labels, instances) for k in range(args.num_samples)]
    job = _Job(args, syn, labels, out, total=len(jobs), progress=folder or len(jobs) > 1)
    for i in range(0, len(jobs), args.batch_size):
        job.run_batch(jobs[i:i + args.batch_size])
    job.bar.close()
    print(f"spadegan synthesize: wrote {job.written} image(s) to {out}"
          + (f" with {syn.network}" if syn.engine is None else "")
          + (f" (seeds from {job.base_seed})" if (syn.use_vae or syn.use_3d_noise) and not args.style_image else "")
          + (f"; {len(job.bad) or len(job.failed)} label map(s) failed (see above)" if job.failed else ""))
    return 1 if job.failed else 0


# ---- --demo -------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace, extra: list[str], out: Path) -> int:
    from tqdm import tqdm

    from ..data.landscapes import generate_scene
    from ..data.palettes import label_to_color, load_classes

    syn = _load_synthesizer(args, extra)
    classes = load_classes("landscapes")
    if syn.label_channels < 10:
        raise SpadeganError("--demo draws procedural landscapes; it needs a landscapes model "
                            "(the built-in one, or --checkpoint of a model trained with "
                            "--dataset_mode landscapes)")
    out.mkdir(parents=True, exist_ok=True)
    h, w = syn.height, syn.width
    n_styles = 3 if syn.use_vae else 1
    base_seed = args.seed if args.seed is not None else 0
    rows = []
    for i in tqdm(range(args.demo_count), desc="demo", unit="scene"):
        label, photo, style_name = generate_scene(1000 + i, size=h, width=w)
        _save(Image.fromarray(label_to_color(label, classes)), out / f"scene{i}_label.png")
        _save(Image.fromarray(photo), out / f"scene{i}_procedural.png")
        seeds = [base_seed + 7919 * i + k for k in range(n_styles)]
        imgs = syn.synthesize_batch([label] * n_styles, seeds=seeds)
        cells = []
        for k, img in enumerate(imgs):
            _save(img, out / f"scene{i}_style{k}.png")
            cells.append((f"scene{i}_style{k}.png", f"random style, seed {seeds[k]}" if syn.use_vae else "result"))
        if syn.use_vae:  # the style of another scene's procedural photo
            _, other, other_style = generate_scene(2000 + i, size=h, width=w)
            _save(Image.fromarray(other), out / f"scene{i}_stylesource.png")
            img = syn.synthesize(label, style=other, seed=base_seed + i)
            _save(img, out / f"scene{i}_styled.png")
            cells.append((f"scene{i}_stylesource.png", f"style photo ({other_style})"))
            cells.append((f"scene{i}_styled.png", "result in that style"))
        rows.append((i, style_name, cells))
    _write_index(out, syn, rows, classes)
    print(f"spadegan synthesize: demo gallery with {len(rows)} scenes in {out / 'index.html'}")
    return 0


def _write_index(out: Path, syn: Synthesizer, rows: list, classes: list) -> None:
    from ..fileio import atomic_write_bytes

    legend = "".join(
        f'<span class="sw" style="background:rgb{tuple(c.color)}"></span>{html.escape(c.name)} '
        for c in classes)
    body = []
    for i, style_name, cells in rows:
        tds = [f'<td><img src="scene{i}_label.png"><br>label map</td>',
               f'<td><img src="scene{i}_procedural.png"><br>procedural photo ({html.escape(style_name)})</td>']
        tds += [f'<td><img src="{html.escape(f)}"><br>{html.escape(cap)}</td>' for f, cap in cells]
        body.append("<tr>" + "".join(tds) + "</tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>spadegan demo</title>
<style>body{{font-family:sans-serif;margin:1em}} td{{text-align:center;font-size:12px;padding:4px}}
img{{width:{syn.width}px;image-rendering:pixelated}} .sw{{display:inline-block;width:12px;height:12px;margin:0 3px 0 10px}}</style>
</head><body>
<h1>spadegan demo: {html.escape(syn.name)}</h1>
<p>Label maps drawn by the procedural landscapes generator, synthesized by the model
({syn.width}x{syn.height}, {'VAE: several random styles and one copied from a photo' if syn.use_vae else 'one image per map'},
{html.escape(syn.network)} on {syn.device}).</p>
<p>{legend}</p>
<table>{''.join(body)}</table>
</body></html>
"""
    atomic_write_bytes(out / "index.html", page.encode())
