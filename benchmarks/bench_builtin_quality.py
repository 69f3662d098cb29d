"""Benchmark: the built-in landscapes model's quality on >= 600 unseen scenes, and its style diversity.

    python benchmarks/bench_builtin_quality.py --out /tmp/builtin_quality --num_threads 2
    python benchmarks/bench_builtin_quality.py --checkpoint /work/runs/checkpoints/NAME --out /tmp/q

1. **Evaluation protocol** (issue 23, item 2): for each of three disjoint seed ranges (default
   starts 100000, 200000, 300000; every seed >= 100000, far from the 0..3199 the built-in
   model and the shipped segmenter were made from) it writes a landscapes dataset with
   ``make_landscapes(count=ref + scenes, seed=start, val_count=scenes)``: scene i has seed
   start + i, the first ``ref`` (train split: seg_fd's reference photos) and the last
   ``scenes`` (val split: the scored scenes). Then it runs ``spadegan eval`` itself on the
   val split (random styles, seed 0) and reads its ``metrics.json``: one row per range and
   their mean, mIoU also as % of the real photos' (the segmenter on the real photos of the
   same scenes). No second copy of the metrics: all numbers are ``spadegan eval``'s.
2. **Style diversity** (item 3, ``spadegan.evaluation.diversity``): for ``--maps`` unseen maps
   (seeds from 400000) and ``--styles`` random styles each, the mean pairwise pixel and
   segmenter-feature distance against the renderer's own photos of the same maps in as many
   style families, how many families the random styles reach (class colour profile
   classifier fitted on seeds from 500000), and the dark-photo check.

Writes ``OUT/builtin_quality.json`` (and each range's ``metrics.json`` under ``OUT/eval_<start>``,
the datasets under ``OUT/data``, reused when present) and prints a summary. CPU-heavy; not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spadegan.errors import SpadeganError
from spadegan.synthesize.style_bank import STYLE_PRIORS

#: Seeds the built-in model and the shipped segmenter were made from (make-landscapes --count 3200 --seed 0).
TRAINING_SEEDS = range(0, 3200)
#: Every seed this protocol uses is at least this (the issue's "seeds >= 100000").
MIN_UNSEEN_SEED = 100_000
DEFAULT_STARTS = (100_000, 200_000, 300_000)
DIVERSITY_START = 400_000
CLASSIFIER_START = 500_000
#: The metrics read from each range's metrics.json rows.
ROW_KEYS = ("miou", "pixel_accuracy", "mean_accuracy", "seg_fd", "seg_kid_mean")


def seed_ranges(starts: list[int], ref: int, scenes: int) -> list[range]:
    """The seeds of each range (reference + scored scenes); checked unseen and disjoint."""
    if ref < 2 or scenes < 2:
        raise SpadeganError(f"need >= 2 reference photos and >= 2 scenes per range, got {ref} and {scenes}")
    ranges = [range(s, s + ref + scenes) for s in starts]
    check_unseen(ranges)
    return ranges


def check_unseen(ranges: list[range]) -> None:
    """Raise unless every range starts >= MIN_UNSEEN_SEED, misses TRAINING_SEEDS and the others."""
    for r in ranges:
        if r.start < MIN_UNSEEN_SEED or (r.start < TRAINING_SEEDS.stop and TRAINING_SEEDS.start < r.stop):
            raise SpadeganError(f"seeds {r.start}..{r.stop - 1} are not unseen: use seeds >= {MIN_UNSEEN_SEED} "
                                f"(training used {TRAINING_SEEDS.start}..{TRAINING_SEEDS.stop - 1})")
    ordered = sorted(ranges, key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.stop:
            raise SpadeganError(f"seed ranges {a.start}..{a.stop - 1} and {b.start}..{b.stop - 1} overlap")


def diversity_ranges(args: argparse.Namespace) -> tuple[range, range]:
    """The seeds of the diversity maps and of the family classifier's maps."""
    if args.maps < 1 or args.classifier_maps < 1:
        raise SpadeganError(f"--maps and --classifier_maps must be >= 1, got {args.maps} and {args.classifier_maps}")
    return (range(DIVERSITY_START, DIVERSITY_START + args.maps),
            range(CLASSIFIER_START, CLASSIFIER_START + args.classifier_maps))


def make_range(root: Path, seeds: range, scenes: int, size: int) -> Path:
    """The landscapes dataset of one range (reused if its summary.json matches)."""
    from spadegan.data.landscapes import make_landscapes

    folder = root / f"landscapes{size}_{seeds.start}"
    summary = folder / "summary.json"
    want = {"train": len(seeds) - scenes, "val": scenes, "size": size, "seed": seeds.start}
    if summary.is_file() and all(json.loads(summary.read_text()).get(k) == v for k, v in want.items()):
        return folder
    make_landscapes(str(folder), len(seeds), size=size, seed=seeds.start, val_count=scenes)
    return folder


def model_flags(args: argparse.Namespace) -> list[str]:
    """The ``spadegan eval`` flags naming the model (``--checkpoint X`` or ``--builtin``) and
    where its random styles come from (``--style_prior``)."""
    flags = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--builtin"]
    return flags + (["--no_ema"] if args.no_ema else []) + ["--style_prior", args.style_prior]


def eval_range(args: argparse.Namespace, dataroot: Path, out: Path) -> dict[str, Any]:
    """Run ``spadegan eval`` on one range's val split; its rows (synthesized, real) and run facts."""
    from spadegan.evaluation.cli import main as eval_main

    argv = [*model_flags(args), "--dataroot", str(dataroot), "--dataset_mode", "landscapes", "--out", str(out),
            "--no_plots", "--num_visuals", "0", "--seed", str(args.seed), "--batch_size", str(args.batch_size),
            "--no_cache"]
    if args.num_threads:
        argv += ["--num_threads", str(args.num_threads)]
    eval_main(argv)
    m = json.loads((out / "metrics.json").read_text())
    row = {w: {k: m[w][k] for k in ROW_KEYS} for w in ("synthesized", "real")}
    row["miou_pct_of_real"] = 100 * row["synthesized"]["miou"] / row["real"]["miou"]
    row.update(scenes=m["dataset"]["num_images"], reference=m["seg_fd"]["reference"], command="spadegan eval " +
               " ".join(argv), seconds=m["seconds"])
    return row


def mean_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over ranges of every number of the rows (mIoU % of real: of the mean mIoUs)."""
    out: dict[str, Any] = {w: {k: sum(r[w][k] for r in rows) / len(rows) for k in ROW_KEYS}
                           for w in ("synthesized", "real")}
    out["miou_pct_of_real"] = 100 * out["synthesized"]["miou"] / out["real"]["miou"]  # of the means
    out["scenes"] = sum(r["scenes"] for r in rows)
    return out


def diversity(args: argparse.Namespace) -> dict[str, Any]:
    """The style-diversity measure and the dark-photo check on unseen maps."""
    from spadegan.checkpoint import checkpoint_options, resolve_checkpoint
    from spadegan.evaluation import diversity as div
    from spadegan.evaluation.evaluate import BUILTIN_SEGMENTER, builtin_model_dir
    from spadegan.evaluation.scoring import load_scorer
    from spadegan.evaluation.split import load_networks, random_style_bank

    device = torch.device("cpu")
    path = Path(args.checkpoint) if args.checkpoint else builtin_model_dir()
    weights, _ = resolve_checkpoint(path, "G", "latest")
    opt = checkpoint_options(weights, train=False).replace(device="cpu")
    G, E = load_networks(weights, opt, device, "encode", ema=not args.no_ema)
    seg = load_scorer(BUILTIN_SEGMENTER, device)
    size = opt.crop_size
    seg_h = (getattr(seg, "image_size", None) or (size, size))[0]
    input_size = None if seg_h == size else (seg_h, seg_h)
    seeds, clf_seeds = (list(r) for r in diversity_ranges(args))
    clf, clf_info = div.fit_family_classifier(clf_seeds, size)
    bank = random_style_bank(weights, opt, "random", args.style_prior)
    report, fake = div.style_diversity(G, opt, seg, seeds, args.styles, size, clf, device, args.batch_size,
                                       input_size, args.seed, bank)
    report["classifier"] = clf_info
    report["dark_photo"], encoded = div.dark_photo_check(G, E, opt, seg, seeds, size, device, args.batch_size,
                                                         input_size, random_styles=fake[:, 0].contiguous(),
                                                         seed=args.seed)
    if args.samples > 0:
        report["samples_png"] = samples_png(Path(args.out) / "diversity_samples.png", seeds[:args.samples],
                                            fake[:args.samples], encoded[:args.samples], opt, args)
    return report


def samples_png(path: Path, seeds: list[int], fake: torch.Tensor, encoded: torch.Tensor, opt: Any,
                args: argparse.Namespace) -> str:
    """One row per map: label map, the renderer's K families, the model's K random styles, the
    map's night photo and the model's result with it as the style."""
    from spadegan.evaluation import diversity as div
    from spadegan.evaluation.report import save_grid
    from spadegan.visuals import label_palette

    n, k = fake.shape[:2]
    labels, real = div.render_looks(seeds, div.family_looks(args.maps, k, args.seed)[:n], opt.crop_size)
    _, night = div.render_looks(seeds, [["night"]] * n, opt.crop_size)
    pal = label_palette(opt)
    cells = [pal[labels.clamp(0, pal.shape[0] - 1).numpy()]]
    cells += [real[:, j].permute(0, 2, 3, 1).numpy() for j in range(k)]
    cells += [fake[:, j].permute(0, 2, 3, 1).numpy() for j in range(k)]
    cells += [night[:, 0].permute(0, 2, 3, 1).numpy(), encoded.permute(0, 2, 3, 1).numpy()]
    return save_grid(cells, path)


def cpu_name() -> str:
    """The CPU's model name (``lscpu``), recorded with every number."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The printed summary: one line per range, the mean, the diversity and the night-photo check."""
    lines = []
    for r in result.get("protocol", {}).get("ranges", []):
        s, real = r["synthesized"], r["real"]
        lines.append(f"seeds {r['seeds'][0]}..{r['seeds'][1]} ({r['scenes']} scenes): seg_fd {s['seg_fd']:.3f} "
                     f"(real {real['seg_fd']:.3f}), seg_kid x1e3 {1e3 * s['seg_kid_mean']:.2f}, mIoU "
                     f"{100 * s['miou']:.1f} (real {100 * real['miou']:.1f}, {r['miou_pct_of_real']:.1f} %)")
    if "protocol" in result:
        m = result["protocol"]["mean"]
        lines.append(f"mean over {m['scenes']} scenes: seg_fd {m['synthesized']['seg_fd']:.3f} (real "
                     f"{m['real']['seg_fd']:.3f}), mIoU {100 * m['synthesized']['miou']:.1f} "
                     f"({m['miou_pct_of_real']:.1f} % of real)")
    if "diversity" in result:
        d = result["diversity"]
        mod, real, rnd, fam = d["model"], d["real"], d["real_random"], d["model"]["family_reach"]
        lines.append(f"diversity ({d['maps']} maps x {d['styles_per_map']} styles): pixel {mod['pixel']:.4f} "
                     f"(real {real['pixel']:.4f}; random families {rnd['pixel']:.4f}), features "
                     f"{mod['features']:.3f} (real {real['features']:.3f}; random families {rnd['features']:.3f}), "
                     f"near-identical pairs {100 * mod['near_identical_pairs']:.0f} % (real "
                     f"{100 * real['near_identical_pairs']:.0f} %; random families "
                     f"{100 * rnd['near_identical_pairs']:.0f} %); families reached {fam['families_reached']}"
                     f"/{fam['of']} {fam['histogram']}")
        k = d["dark_photo"]
        lines.append(f"night photo as style: brightness {k['encoded']['brightness']:.3f} (night photos "
                     f"{k['night_photos']['brightness']:.3f}, day {k['day_photos']['brightness']:.3f}), mIoU "
                     f"{100 * k['encoded']['miou']:.1f} (night photos {100 * k['night_photos']['miou']:.1f}, "
                     f"random styles {100 * k['random_style']['miou']:.1f})")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="", help="a checkpoint folder or <epoch>_net_G.pth (default: built-in)")
    ap.add_argument("--style_prior", choices=STYLE_PRIORS, default="auto",
                    help="random styles from the model's style bank, N(0, I), or auto: the bank when it has one")
    ap.add_argument("--no_ema", action="store_true",
                    help="runs kept with --ema_decay: score G's last weights instead of their moving average")
    ap.add_argument("--out", default="builtin_quality", help="output folder")
    ap.add_argument("--starts", type=int, nargs="+", default=list(DEFAULT_STARTS), help="first seed of each range")
    ap.add_argument("--scenes", type=int, default=200, help="scored scenes per range")
    ap.add_argument("--ref", type=int, default=200, help="seg_fd reference photos per range")
    ap.add_argument("--size", type=int, default=128, help="scene size (the model's crop_size)")
    ap.add_argument("--maps", type=int, default=50, help="diversity: maps")
    ap.add_argument("--styles", type=int, default=4, help="diversity: random styles per map (2..6)")
    ap.add_argument("--classifier_maps", type=int, default=20, help="family classifier: maps x 6 families")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random styles")
    ap.add_argument("--samples", type=int, default=6,
                    help="diversity_samples.png rows: label, renderer's families, model's styles, night photo, "
                         "model with it as the style (0 = none)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--skip_protocol", action="store_true")
    ap.add_argument("--skip_diversity", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the protocol and the diversity measure; write and return the JSON's content."""
    from spadegan.evaluation.diversity import check_styles_per_map

    args = build_parser().parse_args(argv)
    if not args.skip_diversity:  # before any work
        check_styles_per_map(args.styles)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ranges = seed_ranges(args.starts, args.ref, args.scenes)
    check_unseen(ranges + list(diversity_ranges(args)))  # every seed used, unseen and used once
    result: dict[str, Any] = {"model": args.checkpoint or "built-in", "cpu": cpu_name(),
                              "torch_threads": torch.get_num_threads(), "argv": sys.argv[1:] if argv is None else argv,
                              "training_seeds": [TRAINING_SEEDS.start, TRAINING_SEEDS.stop - 1]}
    if not args.skip_protocol:
        rows = []
        for r in ranges:
            root = make_range(out / "data", r, args.scenes, args.size)
            row = eval_range(args, root, out / f"eval_{r.start}")
            row["seeds"] = [r.start + args.ref, r.stop - 1]
            row["reference_seeds"] = [r.start, r.start + args.ref - 1]
            rows.append(row)
        result["protocol"] = {"ranges": rows, "mean": mean_rows(rows)}
    if not args.skip_diversity:
        result["diversity"] = diversity(args)
    result["seconds"] = round(time.time() - t0, 1)
    (out / "builtin_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(summary_lines(result)))
    print(f"wrote {out / 'builtin_quality.json'} ({result['seconds']} s on {result['cpu']})")
    return result


if __name__ == "__main__":
    main()
