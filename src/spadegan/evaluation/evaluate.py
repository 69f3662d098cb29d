"""`spadegan eval` (without --train_segmenter): the evaluation run, step by step.

See `evaluation/cli.py` for what is measured and written.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import resolve_device
from ..errors import SpadeganError
from .report import (HISTORY_KEYS, class_names, epoch_checkpoints, format_table, metrics_row, samples_png,
                     weights_epoch, write_json)
from .cache import StatsCache, default_cache_dir, split_digest
from .paper_scoring import PaperScorer, file_ids, segmenter_class_names
from .scoring import FIDScorer, load_scorer, scorer_classes, segmentation_scores
from .split import (EvalSplit, class_mean_colours, load_networks, load_split, paint_baseline, random_style_bank,
                    split_options, synthesize_split, train_split)


_PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

#: Why mIoU and the class-colour baseline do not apply to --label_nc 0 models.
NO_CLASSES = ("the model is conditioned on label images (--label_nc 0), not class ids, so there is no "
              "label map to compare a segmentation with")


#: How FID/KID are computed (metrics.json "fid_protocol"; pinned by tests/test_fid_parity.py).
FID_PROTOCOL = ("pytorch-fid: InceptionV3 pool3 (pt_inception-2015-12-05-6726825d.pth), images resized with torch "
                "bilinear to 299x299 (align_corners=False, no antialias) and scaled to [-1, 1]; FID from float64 "
                "statistics (each row's fid_method says how the matrix square root was taken); KID as "
                "torch-fidelity: polynomial kernel (degree 3, gamma 1/2048, coef0 1), unbiased MMD^2 over "
                "random subsets (rng seed 2020)")

#: The paper accounting's scores beyond metrics_row's (see paper_scoring.paper_scores).
PAPER_EXTRA_KEYS = ("pixel_accuracy_all_pixels", "frequency_weighted_iou", "scored_pixels", "ignored_pixels")

#: The landscapes segmenter shipped in the package (made with ``--train_segmenter``).
BUILTIN_SEGMENTER = _PRETRAINED / "landscapes_segmenter.pt"


def builtin_model_dir() -> Path:
    """Folder of the built-in landscapes GauGAN model (``opt.json`` + ``latest_net_G.pth``)."""
    return _PRETRAINED / "landscapes"


def resolve_model(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(G weights file, checkpoint folder, description) from --builtin / --checkpoint / --name.

    An official OASIS run folder (or weights file) gives its `<which_epoch>_EMA.pth` (with
    --no_ema `<which_epoch>_G.pth`) and the run folder; its test flags come from `args`."""
    from ..checkpoint import resolve_checkpoint
    from ..oasis_checkpoint import is_oasis_file, is_oasis_run, open_oasis_run

    given = [x for x in (args.builtin and "--builtin", args.checkpoint and "--checkpoint",
                         args.name and "--name") if x]
    if len(given) > 1:
        raise SpadeganError(f"give only one of --builtin, --checkpoint and --name (got {', '.join(given)})")
    if args.builtin:
        folder = builtin_model_dir()
        if not (folder / "latest_net_G.pth").is_file():
            raise SpadeganError(f"the built-in landscapes model is not installed ({folder / 'latest_net_G.pth'} "
                                "is missing); evaluate your own with --name or --checkpoint")
        path, desc = folder, "built-in landscapes model"
    elif args.checkpoint:
        path, desc = Path(args.checkpoint), args.checkpoint
    elif args.name:
        path = Path(args.checkpoints_dir) / args.name
        if not path.is_dir():
            raise SpadeganError(f"no checkpoint folder {path} (from --checkpoints_dir {args.checkpoints_dir} "
                                f"--name {args.name})")
        desc = args.name
    else:
        raise SpadeganError("say which model to evaluate: --name NAME, --checkpoint DIR_OR_FILE or --builtin")
    if is_oasis_run(path):  # test.py's network: <which_epoch>_EMA.pth (--no_ema: _G.pth)
        run = open_oasis_run(path, None if is_oasis_file(path) else args.which_epoch,
                             "G" if args.no_ema and not is_oasis_file(path) else None, **_oasis_flags(args))
        return run.weights, run.run_dir, desc
    weights, folder = resolve_checkpoint(path, "G", args.which_epoch)
    return weights, folder, desc


def _oasis_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The official OASIS test flags given to `spadegan eval`; its --dataset_mode (the eval
    split's) counts as the run's only when it names an official OASIS dataset."""
    from ..oasis_checkpoint import ARCHITECTURE_DEFAULTS, OASIS_DATASETS

    flags = {k: getattr(args, k) for k in ("aspect_ratio", *ARCHITECTURE_DEFAULTS) if getattr(args, k, None) is not None}
    if getattr(args, "dataset_mode", "") in OASIS_DATASETS:
        flags["dataset_mode"] = args.dataset_mode
    return flags


def model_options(weights: Path, args: argparse.Namespace) -> Any:
    """The evaluated model's Options: saved with the checkpoint, or for an official OASIS run
    its data side (`oasis_checkpoint.oasis_data_options`: the dataset's label convention as
    spadegan reads it, the architecture load_networks rebuilds)."""
    from ..checkpoint import checkpoint_options
    from ..oasis_checkpoint import is_oasis_file, oasis_data_options, open_oasis_run

    if is_oasis_file(weights):
        return oasis_data_options(open_oasis_run(weights, **_oasis_flags(args)).opt)
    return checkpoint_options(weights, train=False)


def default_segmenter(eval_opt: Any, model_opt: Any) -> Path | None:
    if eval_opt.label_nc == 10 and "landscapes" in (eval_opt.dataset_mode, model_opt.dataset_mode):
        return BUILTIN_SEGMENTER if BUILTIN_SEGMENTER.is_file() else None
    return None


def _check_segmenter_dataset(name: str, dataset_mode: str) -> None:
    """A paper segmenter scores its own dataset's label ids: refuse another dataset mode, and say
    what a custom folder's ids are read as."""
    from ..device import say_once
    from .paper_segmenter import SEGMENTERS

    dataset, mode = SEGMENTERS[name].dataset, SEGMENTERS[name].dataset_mode
    if dataset_mode == "custom":
        say_once(f"--segmenter {name}: the custom label maps are read as {dataset} ids "
                 "(docs/evaluation.md, 'The accounting')")
    elif dataset_mode != mode:
        raise SpadeganError(f"--segmenter {name} scores {dataset} label maps, but the eval split is "
                            f"--dataset_mode {dataset_mode}; use --dataset_mode {mode} (or custom with {dataset} ids)")


@dataclass
class _Run:
    """What one evaluation works on: the model, its options, the eval split, where to write."""

    args: argparse.Namespace
    device: torch.device
    weights: Path
    folder: Path
    desc: str
    model_opt: Any
    eval_opt: Any
    out: Path
    split: EvalSplit

    @property
    def num_classes(self) -> int:
        return self.model_opt.label_nc

    @property
    def names(self) -> list[str]:
        return class_names(self.model_opt, self.num_classes)


def _setup(args: argparse.Namespace) -> _Run:
    """The model (--name/--checkpoint/--builtin), its options, the eval split at its size."""
    device = resolve_device(args.device or None)
    weights, folder, desc = resolve_model(args)
    model_opt = model_options(weights, args).replace(device=str(device))
    eval_opt = split_options(model_opt, args, args.phase)
    out = Path(args.out) if args.out else (Path("eval_builtin") if args.builtin else folder)
    out.mkdir(parents=True, exist_ok=True)
    split = load_split(eval_opt, args.how_many, desc=f"loading {eval_opt.phase} split")
    return _Run(args, device, weights, folder, desc, model_opt, eval_opt, out, split)


class _Scorer:
    """The run's segmenter (mIoU; seg_fd/seg_kid from the same forward passes) and FID/KID.

    `info` and `sfd` are the "segmenter" and "seg_fd" entries of metrics.json.
    """

    def __init__(self, run: _Run):
        self.run, args = run, run.args
        self.model = None
        self.paper: PaperScorer | None = None
        self.cache = StatsCache(None if args.no_cache else Path(args.cache_dir) if args.cache_dir
                                else default_cache_dir())
        if args.segmenter:
            self._load_paper_segmenter()
        else:
            self._load_scorer()
        self.sfd = self._seg_fd_status(Path(args.seg_weights) if args.seg_weights else None)
        self.ref_feats: np.ndarray | None = None
        self.fid: FIDScorer | None = None

    def _load_paper_segmenter(self) -> None:
        """--segmenter: a paper's segmenter from its released files, scored the reference's way."""
        from .paper_segmenter import load as load_paper_segmenter

        run, args = self.run, self.run.args
        if run.model_opt.image_label:
            raise SpadeganError(f"--segmenter {args.segmenter}: {NO_CLASSES}")
        if args.seg_weights:
            raise SpadeganError("give either --segmenter with --segmenter_weights (a paper's segmenter) or "
                                "--seg_weights (a small segmenter / TorchScript file), not both")
        if not args.segmenter_weights:
            raise SpadeganError(f"--segmenter {args.segmenter} needs --segmenter_weights FILE [FILE] (the released "
                                "weights; docs/evaluation.md says which files)")
        _check_segmenter_dataset(args.segmenter, run.eval_opt.dataset_mode)
        multiscale = {"default": None, "on": True, "off": False}[args.segmenter_multiscale]
        segmenter = load_paper_segmenter(args.segmenter, args.segmenter_weights,
                                         args.segmenter_preprocessing or None, run.device)
        self.paper = PaperScorer(segmenter, multiscale, args.seg_resolution, args.batch_size, run.device)
        h, w = run.split.labels.shape[-2:]
        self.info = {"status": "ok", "reason": None, "weights": [str(f) for f in segmenter.files],
                     "input_size": [h, w] if args.seg_resolution == "model" else "each label map's own size",
                     "protocol": self.paper.protocol()}

    def _load_scorer(self) -> None:
        """--seg_weights (or the shipped landscapes segmenter): the small U-Net / TorchScript scorer."""
        run, args = self.run, self.run.args
        h, w = run.split.labels.shape[-2:]
        seg_path = Path(args.seg_weights) if args.seg_weights else default_segmenter(run.eval_opt, run.model_opt)
        self.info = {"status": "ok", "reason": None, "weights": str(seg_path) if seg_path else None}
        if seg_path is None:
            self.info.update(status="unavailable", reason=(
                "no --seg_weights given (for image-label models only seg_fd would use its features)"
                if run.model_opt.image_label else
                "no --seg_weights given (a segmenter for this dataset's classes; train one with "
                "`spadegan eval --train_segmenter`, or use a paper's segmenter with --segmenter); only the "
                "landscapes dataset has a shipped default"))
        else:
            self.model = load_scorer(seg_path, run.device)
            n_seg = scorer_classes(self.model)
            if n_seg is not None and n_seg != run.num_classes and not run.model_opt.image_label:
                raise SpadeganError(f"--seg_weights {seg_path} segments {n_seg} classes but the model has "
                                    f"label_nc {run.num_classes}; use a segmenter trained on this dataset")
        # Objects must appear at the scale the segmenter learned: a 64 px model's images are
        # upsampled for a segmenter trained on 128 px photos (the real photos too, so the upper
        # bound is measured the same way); predictions are compared at the model's resolution.
        seg_h = args.seg_size if args.seg_size != 0 else (getattr(self.model, "image_size", None) or (0, 0))[0]
        self.input_size = (int(seg_h), max(1, round(seg_h * w / h))) if seg_h and seg_h > 0 else None
        if self.input_size == (h, w):
            self.input_size = None
        self.info["input_size"] = list(self.input_size) if self.input_size else [h, w]

    def _seg_fd_status(self, seg_path: Path | None) -> dict[str, Any]:
        """seg_fd / seg_kid: the segmenter's pooled features, against real train photos."""
        from .segfd import FEATURE_LAYERS, SEG_FD_DESCRIPTION, feature_layers_missing

        args, eval_opt = self.run.args, self.run.eval_opt
        sfd: dict[str, Any] = {"status": "ok", "reason": None, "description": SEG_FD_DESCRIPTION,
                               "segmenter": str(seg_path) if seg_path else None, "layers": list(FEATURE_LAYERS),
                               "pooling": "per-channel spatial mean and std", "feature_dim": None,
                               "input_size": self.info.get("input_size"), "reference": None,
                               "kid_subset_size": None}
        same_photos = (eval_opt.phase == "train" if eval_opt.dataset_mode != "custom"
                       else bool(args.image_dir) and args.image_dir == args.baseline_image_dir)
        if args.no_seg_fd:
            sfd.update(status="off", reason="--no_seg_fd")
        elif self.paper is not None:
            sfd.update(status="off", reason="--segmenter: seg_fd uses the small scorer's features; the papers' "
                                            "protocol reports FID/KID (--fid_weights)")
        elif same_photos:
            # the reference would be the evaluated photos themselves: the floor would read 0
            sfd.update(status="unavailable", reason="the eval split is the train split, which seg_fd uses as "
                                                    "its reference photos; evaluate a held-out split")
        elif self.model is None:
            sfd.update(status="unavailable", reason="no segmenter: seg_fd uses the features of the one given "
                                                    "with --seg_weights" if self.run.model_opt.image_label
                       else "no segmenter (see mIoU)")
        else:
            missing = feature_layers_missing(self.model)
            if missing:
                sfd.update(status="unavailable", reason=missing)
        return sfd

    def set_reference(self, train: EvalSplit | str | None) -> None:
        """seg_fd's reference features: the first N photos of the train split (N = eval images)."""
        from .segfd import segmenter_features

        if self.sfd["status"] != "ok":
            return
        args, n = self.run.args, len(self.run.split)
        if isinstance(train, str):
            self.sfd.update(status="unavailable", reason=f"no reference photos: {train}")
            return
        if len(train) < 2:
            self.sfd.update(status="unavailable", reason=f"the train split has {len(train)} image(s); need >= 2")
            return
        ref_imgs = train.images[:n]
        self.ref_feats = segmenter_features(self.model, ref_imgs, self.run.device, args.batch_size, self.input_size,
                                            desc="seg_fd: reference train photos")
        self.sfd.update(feature_dim=int(self.ref_feats.shape[1]),
                        kid_subset_size=min(args.kid_subset_size, len(ref_imgs), n),
                        reference={"phase": "train", "num_images": len(ref_imgs),
                                   "names": [train.names[0], train.names[len(ref_imgs) - 1]]})
        if len(ref_imgs) < n:
            # FD's small-sample bias depends on both set sizes: say when they differ
            self.sfd["note"] = (f"seg_fd: the train split has only {len(ref_imgs)} photos for the reference, "
                                f"fewer than the {n} eval images")

    def seg(self, images_u8: torch.Tensor, what: str) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        """mIoU scores and, if seg_fd is on, the pooled features from the same forward passes
        (image-label models: no mIoU, only the features)."""
        from .segfd import pooled_features, segmenter_features

        if self.paper is not None:
            return self._paper_scores(images_u8, what), None
        if self.model is None:
            return None, None
        run = self.run
        if run.model_opt.image_label:
            if self.sfd["status"] != "ok":
                return None, None
            return None, segmenter_features(self.model, images_u8, run.device, run.args.batch_size,
                                            self.input_size, desc=f"seg_fd: {what}")
        ignore = run.model_opt.label_nc if run.model_opt.contain_dontcare_label else None

        def scores() -> dict[str, Any]:
            return segmentation_scores(self.model, images_u8, run.split.labels, run.num_classes, ignore, run.device,
                                       run.args.batch_size, desc=f"segmenting {what}", input_size=self.input_size)

        if self.sfd["status"] != "ok":
            return scores(), None
        with pooled_features(self.model) as collected:
            result = scores()
        return result, torch.cat(collected).double().numpy()

    def _paper_scores(self, images_u8: torch.Tensor, what: str) -> dict[str, Any]:
        """The paper segmenter's scores; the real photos' are cached (they do not depend on the model)."""
        run, paper = self.run, self.paper
        assert paper is not None
        labels = file_ids(run.split.labels, run.model_opt)
        key = None
        if what == "real":
            protocol = {k: v for k, v in self.info["protocol"].items() if k != "files"}
            key = self.cache.key("paper-seg-real", protocol=protocol,
                                 split=split_digest(run.split.images, run.split.labels),
                                 label_files=run.split.label_files if paper.resolution == "label" else None)
            cached = self.cache.record(key)
            if cached is not None:
                return cached
        result = paper.scores(images_u8, labels, run.split.label_files, desc=f"segmenting {what}")
        if key is not None:
            self.cache.put_record(key, result)
        return result

    def row(self, images_u8: torch.Tensor, what: str, fid_desc: str | None) -> dict[str, Any]:
        """The metrics row of a set of images: mIoU/accuracies, FID/KID (with `fid_desc`), seg_fd/seg_kid."""
        from .segfd import seg_distances

        seg, feats = self.seg(images_u8, what)
        fid = self.fid(images_u8, fid_desc) if fid_desc is not None else None
        dist = None
        if feats is not None and self.ref_feats is not None:
            dist = seg_distances(self.ref_feats, feats, kid_subset_size=self.run.args.kid_subset_size,
                                 seed=self.run.args.seed)
        names = segmenter_class_names(self.paper.segmenter.name) if self.paper is not None else self.run.names
        row = metrics_row(seg, fid, names, dist)
        if self.paper is not None and seg is not None:
            row.update({k: seg[k] for k in PAPER_EXTRA_KEYS})
        return row


def _baseline(run: _Run, scorer: _Scorer, train: EvalSplit | str | None) -> tuple[dict[str, Any], torch.Tensor | None]:
    """The class-mean-colour baseline's row and images (None where it is unavailable)."""
    if run.model_opt.image_label:
        return {"status": "unavailable", "reason": f"the class-mean-colour baseline needs class ids: {NO_CLASSES}"}, None
    if isinstance(train, str):
        return {"status": "unavailable", "reason": train}, None
    assert train is not None
    colours, _ = class_mean_colours(train, run.num_classes)
    images = paint_baseline(run.split.labels, colours)
    row = scorer.row(images, "baseline", "FID: baseline")
    row.update(status="ok", reason=None, train_images=len(train),
               class_colours={n: [round(float(c), 2) for c in col] for n, col in zip(run.names, colours)})
    return row, images


def _epoch_history(run: _Run, scorer: _Scorer, synthesized: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """The metrics of the evaluated checkpoint and, with --all_epochs, of every <epoch>_net_G file."""
    from tqdm.auto import tqdm

    args, weights, folder = run.args, run.weights, run.folder
    history: list[dict[str, Any]] = []
    this_epoch = weights_epoch(weights, folder)
    if this_epoch is not None:
        history.append({"epoch": this_epoch, "which_epoch": weights.name.split("_net_")[0],
                        **{k: synthesized.get(k) for k in HISTORY_KEYS}})
    if args.all_epochs:
        todo = [(e, p) for e, p in epoch_checkpoints(folder) if p != weights]
        if not todo:
            notes.append(f"--all_epochs: no <epoch>_net_G.pth files in {folder} besides the evaluated one")
        for epoch, p in tqdm(todo, desc="epochs", unit="ckpt"):
            G, E = load_networks(p, run.model_opt, run.device, args.style, not args.no_ema)
            bank = random_style_bank(p, run.model_opt, args.style, args.style_prior)
            images = synthesize_split(G, run.split, run.model_opt, run.device, args.batch_size, args.seed, E,
                                      desc=f"synthesizing (epoch {epoch})", bank=bank)
            row = scorer.row(images, f"epoch {epoch}", f"FID: epoch {epoch}")
            history.append({"epoch": float(epoch), "which_epoch": str(epoch), **{k: row.get(k) for k in HISTORY_KEYS}})
    history.sort(key=lambda r: (r["epoch"], r["which_epoch"] == "latest"))
    return history


def _plots(run: _Run, history: list[dict[str, Any]], notes: list[str]) -> dict[str, str]:
    """loss_curves.png (from the checkpoint's loss_log.txt) and metrics_vs_epoch.png."""
    from .plots import parse_loss_log, plot_loss_log, plot_metrics

    plots: dict[str, str] = {}
    log = run.folder / "loss_log.txt"
    if not log.is_file():
        notes.append(f"no {log.name} in {run.folder}; no loss plot")
    elif parse_loss_log(log):
        plots["loss_curves"] = plot_loss_log(log, run.out / "loss_curves.png")
    else:
        notes.append(f"{log} has no loss lines; no loss plot")
    if history:
        plotted = [{k: v for k, v in r.items() if k != "which_epoch"} for r in history]
        plots["metrics_vs_epoch"] = plot_metrics(plotted, run.out / "metrics_vs_epoch.png")
    return plots


def evaluate(args: argparse.Namespace) -> int:
    """`spadegan eval` without --train_segmenter: score, print the table, write metrics.json and plots."""
    t0 = time.time()
    run = _setup(args)
    split, model_opt, eval_opt = run.split, run.model_opt, run.eval_opt
    h, w = split.labels.shape[-2:]
    print(f"evaluating {run.desc} ({run.weights.name}) on {len(split)} {eval_opt.phase} pairs of "
          f"{eval_opt.dataset_mode} at {w}x{h} on {run.device}", flush=True)
    scorer = _Scorer(run)
    # the train split: the baseline's class colours (all of it) and seg_fd's reference (N photos)
    train: EvalSplit | str | None = None
    whole_train = args.baseline and not model_opt.image_label  # the baseline's class colours
    if whole_train or scorer.sfd["status"] == "ok":
        train = train_split(model_opt, args, eval_opt, 0 if whole_train else len(split))
    scorer.set_reference(train)
    scorer.fid = FIDScorer(args.fid_weights, split.images, run.device, args.batch_size, args.kid_subset_size,
                           scorer.cache)
    notes: list[str] = []
    if scorer.fid.available and len(split) < 2048:
        notes.append(f"FID from {len(split)} images per set is biased upwards; compare only runs with "
                     "the same number of images")
    if scorer.sfd.get("note"):
        notes.append(scorer.sfd["note"])
    G, E = load_networks(run.weights, model_opt, run.device, args.style, not args.no_ema)
    bank = random_style_bank(run.weights, model_opt, args.style, args.style_prior)
    fake = synthesize_split(G, split, model_opt, run.device, args.batch_size, args.seed, E, bank=bank)
    if bank is not None:
        notes.append(f"random styles drawn from {bank.describe()}; --style_prior normal for z ~ N(0, I)")
    del G, E
    metrics: dict[str, Any] = {
        "model": run.desc, "weights": str(run.weights), "which_epoch": args.which_epoch,
        "dataset": {"mode": eval_opt.dataset_mode, "dataroot": eval_opt.dataroot if eval_opt.dataset_mode != "custom"
                    else eval_opt.label_dir, "phase": eval_opt.phase, "num_images": len(split), "size": [w, h]},
        "num_classes": run.num_classes, "class_names": run.names,
        "style": args.style if model_opt.use_vae else None, "seed": args.seed,
        "random_styles": (bank.describe() if bank is not None else "z ~ N(0, I)")
        if model_opt.use_vae and args.style == "random" else None,
        "miou_status": "n/a" if model_opt.image_label else scorer.info["status"],
        "miou_reason": NO_CLASSES if model_opt.image_label else scorer.info["reason"],
        "segmenter": scorer.info, "fid_status": "ok" if scorer.fid.available else "unavailable",
        "fid_reason": scorer.fid.reason, "fid_weights": args.fid_weights or None,
        "fid_protocol": FID_PROTOCOL, "seg_fd": scorer.sfd,
        "synthesized": scorer.row(fake, "synthesized", "FID: synthesized"),
        "real": scorer.row(split.images, "real", None),
        "baseline": None, "epochs": [], "plots": {}, "notes": notes,
    }
    baseline_imgs = None
    if args.baseline:
        metrics["baseline"], baseline_imgs = _baseline(run, scorer, train)
    metrics["epochs"] = _epoch_history(run, scorer, metrics["synthesized"], notes)
    if not args.no_plots:
        metrics["plots"].update(_plots(run, metrics["epochs"], notes))
    if args.num_visuals > 0:
        metrics["plots"]["samples"] = samples_png(run.out / "samples.png", split, fake, baseline_imgs,
                                                  model_opt, args.num_visuals)
    metrics["cache"] = {"folder": str(scorer.cache.folder) if scorer.cache.folder else None,
                        "reused": scorer.cache.hits}
    metrics["seconds"] = round(time.time() - t0, 1)
    write_json(run.out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"wrote {run.out / 'metrics.json'}" + "".join(f", {p}" for p in metrics["plots"].values()), flush=True)
    return 0
