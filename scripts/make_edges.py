"""Make an edges -> photos paired dataset for `--label_nc 0` from a folder of photos.

Usage (the README's example, on the COCO sample photos that ship with the tests' data):

    python scripts/make_edges.py ../shared/data/coco_stuff_sample/train_img datasets/edges2photo/train --size 72
    python scripts/make_edges.py ../shared/data/coco_stuff_sample/val_img datasets/edges2photo/val --size 72

writes `<out>/photos/<stem>.jpg` (each photo resized to `--size` x `--size`) and
`<out>/edges/<stem>.png` (its edge map: an 8-bit greyscale PNG of the gradient magnitude of
the grey photo, central differences, no OpenCV needed). Label and photo pairs share the
file stem, as `--dataset_mode custom` pairs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def edge_map(photo: Image.Image, gain: float = 2.0) -> np.ndarray:
    """(H, W) uint8 edges of a photo: `gain` x the gradient magnitude of its grey image, clipped."""
    g = np.asarray(photo.convert("L"), dtype=np.float32)
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1] = g[2:] - g[:-2]
    return np.clip(gain * np.hypot(gx, gy), 0, 255).astype(np.uint8)


def make_pairs(photos: Path, out: Path, size: int) -> int:
    """Write out/photos and out/edges for every photo in `photos`; returns how many."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in PHOTO_EXTS)
    if not files:
        raise SystemExit(f"no photos ({', '.join(sorted(PHOTO_EXTS))}) in {photos}")
    (out / "photos").mkdir(parents=True, exist_ok=True)
    (out / "edges").mkdir(parents=True, exist_ok=True)
    for p in files:
        im = Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)
        im.save(out / "photos" / f"{p.stem}.jpg", quality=95)
        Image.fromarray(edge_map(im)).save(out / "edges" / f"{p.stem}.png")
    return len(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", type=Path, help="folder of photos")
    ap.add_argument("out", type=Path, help="output folder (gets photos/ and edges/)")
    ap.add_argument("--size", type=int, default=72, help="resize every photo to size x size")
    args = ap.parse_args(argv)
    n = make_pairs(args.photos, args.out, args.size)
    print(f"wrote {n} pairs to {args.out / 'edges'} and {args.out / 'photos'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
