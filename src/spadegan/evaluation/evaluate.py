"""`spadegan eval` (without --train_segmenter): the evaluation run, step by step.

See `evaluation/cli.py` for what is measured and written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import resolve_device
from ..errors import SpadeganError
from .report import (HISTORY_KEYS, class_names, epoch_checkpoints, format_table, metrics_row, samples_png,
                     weights_epoch, write_json)
from .scoring import FIDScorer, load_scorer, scorer_classes, segmentation_scores
from .split import (EvalSplit, class_mean_colours, load_networks, load_split, paint_baseline, split_options,
                    synthesize_split, train_split)


_PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


#: The landscapes segmenter shipped in the package (made with ``--train_segmenter``).
BUILTIN_SEGMENTER = _PRETRAINED / "landscapes_segmenter.pt"


def builtin_model_dir() -> Path:
    """Folder of the built-in landscapes GauGAN model (``opt.json`` + ``latest_net_G.pth``)."""
    return _PRETRAINED / "landscapes"


def resolve_model(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(G weights file, checkpoint folder, description) from --builtin / --checkpoint / --name."""
    from spadegan.checkpoint import resolve_checkpoint

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
    weights, folder = resolve_checkpoint(path, "G", args.which_epoch)
    return weights, folder, desc


def default_segmenter(eval_opt: Any, model_opt: Any) -> Path | None:
    if eval_opt.label_nc == 10 and "landscapes" in (eval_opt.dataset_mode, model_opt.dataset_mode):
        return BUILTIN_SEGMENTER if BUILTIN_SEGMENTER.is_file() else None
    return None


def evaluate(args: argparse.Namespace) -> int:
    from spadegan.checkpoint import checkpoint_options

    t0 = time.time()
    device = resolve_device(args.device or None)
    weights, folder, desc = resolve_model(args)
    model_opt = checkpoint_options(folder, train=False)
    model_opt = model_opt.replace(device=str(device))
    eval_opt = split_options(model_opt, args, args.phase)
    out = Path(args.out) if args.out else (Path("eval_builtin") if args.builtin else folder)
    out.mkdir(parents=True, exist_ok=True)

    split = load_split(eval_opt, args.how_many, desc=f"loading {eval_opt.phase} split")
    h, w = split.labels.shape[-2:]
    num_classes = model_opt.label_nc
    ignore = model_opt.label_nc if model_opt.contain_dontcare_label else None
    names = class_names(model_opt, num_classes)
    print(f"evaluating {desc} ({weights.name}) on {len(split)} {eval_opt.phase} pairs of "
          f"{eval_opt.dataset_mode} at {w}x{h} on {device}", flush=True)

    # the scorer
    seg_path: Path | None = Path(args.seg_weights) if args.seg_weights else default_segmenter(eval_opt, model_opt)
    seg_info: dict[str, Any] = {"status": "ok", "reason": None, "weights": str(seg_path) if seg_path else None}
    scorer = None
    if seg_path is None:
        seg_info.update(status="unavailable", reason=(
            "no --seg_weights given (a segmenter for this dataset's classes; train one with "
            "`spadegan eval --train_segmenter`); only the landscapes dataset has a shipped default"))
    else:
        scorer = load_scorer(seg_path, device)
        n_seg = scorer_classes(scorer)
        if n_seg is not None and n_seg != num_classes:
            raise SpadeganError(f"--seg_weights {seg_path} segments {n_seg} classes but the model has "
                                f"label_nc {num_classes}; use a segmenter trained on this dataset")
    # Objects must appear at the scale the segmenter learned: a 64 px model's images are
    # upsampled for a segmenter trained on 128 px photos (the real photos too, so the upper
    # bound is measured the same way); predictions are compared at the model's resolution.
    seg_h = args.seg_size if args.seg_size != 0 else (getattr(scorer, "image_size", None) or (0, 0))[0]
    seg_input = (int(seg_h), max(1, round(seg_h * w / h))) if seg_h and seg_h > 0 else None
    if seg_input == (h, w):
        seg_input = None
    seg_info["input_size"] = list(seg_input) if seg_input else [h, w]

    # seg_fd / seg_kid: the segmenter's pooled features, against real train photos
    from .segfd import FEATURE_LAYERS, SEG_FD_DESCRIPTION, feature_layers_missing, pooled_features

    sfd: dict[str, Any] = {"status": "ok", "reason": None, "description": SEG_FD_DESCRIPTION,
                           "segmenter": str(seg_path) if seg_path else None, "layers": list(FEATURE_LAYERS),
                           "pooling": "per-channel spatial mean and std", "feature_dim": None,
                           "input_size": seg_info["input_size"], "reference": None,
                           "kid_subset_size": None}
    same_photos = (eval_opt.phase == "train" if eval_opt.dataset_mode != "custom"
                   else bool(args.image_dir) and args.image_dir == args.baseline_image_dir)
    if args.no_seg_fd:
        sfd.update(status="off", reason="--no_seg_fd")
    elif same_photos:
        # the reference would be the evaluated photos themselves: the floor would read 0
        sfd.update(status="unavailable", reason="the eval split is the train split, which seg_fd uses as "
                                                "its reference photos; evaluate a held-out split")
    elif scorer is None:
        sfd.update(status="unavailable", reason="no segmenter (see mIoU)")
    else:
        missing = feature_layers_missing(scorer)
        if missing:
            sfd.update(status="unavailable", reason=missing)

    def seg_scores(images_u8: torch.Tensor, what: str) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        """mIoU scores and, if seg_fd is on, the pooled features from the same forward passes."""
        if scorer is None:
            return None, None

        def run() -> dict[str, Any]:
            return segmentation_scores(scorer, images_u8, split.labels, num_classes, ignore, device,
                                       args.batch_size, desc=f"segmenting {what}", input_size=seg_input)

        if sfd["status"] != "ok":
            return run(), None
        with pooled_features(scorer) as collected:
            scores_ = run()
        return scores_, torch.cat(collected).double().numpy()

    # the train split: the baseline's class colours (all of it) and seg_fd's reference (N photos)
    train: EvalSplit | str | None = None
    if args.baseline or sfd["status"] == "ok":
        train = train_split(model_opt, args, eval_opt, 0 if args.baseline else len(split))
    ref_feats: np.ndarray | None = None
    if sfd["status"] == "ok":
        if isinstance(train, str):
            sfd.update(status="unavailable", reason=f"no reference photos: {train}")
        elif len(train) < 2:
            sfd.update(status="unavailable", reason=f"the train split has {len(train)} image(s); need >= 2")
        else:
            from .segfd import segmenter_features

            ref_imgs = train.images[:len(split)]
            ref_feats = segmenter_features(scorer, ref_imgs, device, args.batch_size, seg_input,
                                           desc="seg_fd: reference train photos")
            sfd.update(feature_dim=int(ref_feats.shape[1]),
                       kid_subset_size=min(args.kid_subset_size, len(ref_imgs), len(split)),
                       reference={"phase": "train", "num_images": len(ref_imgs),
                                  "names": [train.names[0], train.names[len(ref_imgs) - 1]]})
            if len(ref_imgs) < len(split):
                # FD's small-sample bias depends on both set sizes: say when they differ
                sfd["note"] = (f"seg_fd: the train split has only {len(ref_imgs)} photos for the reference, "
                               f"fewer than the {len(split)} eval images")

    def seg_dist(feats: np.ndarray | None) -> dict[str, Any] | None:
        from .segfd import seg_distances

        if feats is None or ref_feats is None:
            return None
        return seg_distances(ref_feats, feats, kid_subset_size=args.kid_subset_size, seed=args.seed)

    fid = FIDScorer(args.fid_weights, split.images, device, args.batch_size, args.kid_subset_size)
    notes: list[str] = []
    if fid.available and len(split) < 2048:
        notes.append(f"FID from {len(split)} images per set is biased upwards; compare only runs with "
                     "the same number of images")
    if sfd.get("note"):
        notes.append(sfd["note"])

    # the model
    G, E = load_networks(weights, model_opt, device, args.style)
    fake = synthesize_split(G, split, model_opt, device, args.batch_size, args.seed, E)
    del G, E
    seg_fake, feats_fake = seg_scores(fake, "synthesized")
    seg_real, feats_real = seg_scores(split.images, "real")
    metrics: dict[str, Any] = {
        "model": desc,
        "weights": str(weights),
        "which_epoch": args.which_epoch,
        "dataset": {"mode": eval_opt.dataset_mode, "dataroot": eval_opt.dataroot if eval_opt.dataset_mode != "custom"
                    else eval_opt.label_dir, "phase": eval_opt.phase, "num_images": len(split), "size": [w, h]},
        "num_classes": num_classes,
        "class_names": names,
        "style": args.style if model_opt.use_vae else None,
        "seed": args.seed,
        "segmenter": seg_info,
        "fid_status": "ok" if fid.available else "unavailable",
        "fid_reason": fid.reason,
        "fid_weights": args.fid_weights or None,
        "seg_fd": sfd,
        "synthesized": metrics_row(seg_fake, fid(fake, "FID: synthesized"), names, seg_dist(feats_fake)),
        "real": metrics_row(seg_real, None, names, seg_dist(feats_real)),
        "baseline": None,
        "epochs": [],
        "plots": {},
        "notes": notes,
    }

    baseline_imgs = None
    if args.baseline:
        if isinstance(train, str):
            metrics["baseline"] = {"status": "unavailable", "reason": train}
        else:
            assert train is not None
            colours, counts = class_mean_colours(train, num_classes)
            baseline_imgs = paint_baseline(split.labels, colours)
            seg_b, feats_b = seg_scores(baseline_imgs, "baseline")
            row = metrics_row(seg_b, fid(baseline_imgs, "FID: baseline"), names, seg_dist(feats_b))
            row.update(status="ok", reason=None, train_images=len(train),
                       class_colours={n: [round(float(c), 2) for c in col] for n, col in zip(names, colours)})
            metrics["baseline"] = row

    # metric against epoch
    history: list[dict[str, Any]] = []
    this_epoch = weights_epoch(weights, folder)
    if this_epoch is not None:
        history.append({"epoch": this_epoch, "which_epoch": weights.name.split("_net_")[0],
                        **{k: metrics["synthesized"].get(k) for k in HISTORY_KEYS}})
    if args.all_epochs:
        from tqdm.auto import tqdm

        todo = [(e, p) for e, p in epoch_checkpoints(folder) if p != weights]
        if not todo:
            notes.append(f"--all_epochs: no <epoch>_net_G.pth files in {folder} besides the evaluated one")
        for epoch, p in tqdm(todo, desc="epochs", unit="ckpt"):
            G, E = load_networks(p, model_opt, device, args.style)
            f_e = synthesize_split(G, split, model_opt, device, args.batch_size, args.seed, E,
                                   desc=f"synthesizing (epoch {epoch})")
            seg, feats_e = seg_scores(f_e, f"epoch {epoch}")
            row_e = metrics_row(seg, fid(f_e, f"FID: epoch {epoch}"), names, seg_dist(feats_e))
            history.append({"epoch": float(epoch), "which_epoch": str(epoch),
                            **{k: row_e.get(k) for k in HISTORY_KEYS}})
    history.sort(key=lambda r: (r["epoch"], r["which_epoch"] == "latest"))
    metrics["epochs"] = history

    if not args.no_plots:
        log = folder / "loss_log.txt"
        if log.is_file():
            from .plots import parse_loss_log, plot_loss_log

            if parse_loss_log(log):
                metrics["plots"]["loss_curves"] = plot_loss_log(log, out / "loss_curves.png")
            else:
                notes.append(f"{log} has no loss lines; no loss plot")
        else:
            notes.append(f"no {log.name} in {folder}; no loss plot")
        if history:
            from .plots import plot_metrics

            plotted = [{k: v for k, v in r.items() if k != "which_epoch"} for r in history]
            metrics["plots"]["metrics_vs_epoch"] = plot_metrics(plotted, out / "metrics_vs_epoch.png")
    if args.num_visuals > 0:
        metrics["plots"]["samples"] = samples_png(out / "samples.png", split, fake, baseline_imgs,
                                                   model_opt, args.num_visuals)
    metrics["seconds"] = round(time.time() - t0, 1)
    write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'}" + "".join(f", {p}" for p in metrics["plots"].values()), flush=True)
    return 0
