"""Put two `spadegan synthesize --demo` galleries side by side (docs/builtin_model.md's
before / after figure).

Usage (how docs/builtin_model/demo_before_after.jpg was made):

    spadegan synthesize --demo --checkpoint OLD_MODEL_DIR --out /tmp/demo_old
    spadegan synthesize --demo --out /tmp/demo_new
    python scripts/compare_demos.py /tmp/demo_old /tmp/demo_new docs/builtin_model/demo_before_after.jpg

One row per demo scene: label map, procedural photo, the first gallery's random styles, the
second's, the style photo, then each gallery's result in that photo's style. Both galleries
must have been made with the same --demo_count and --seed (the same scenes and seeds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from spadegan.evaluation.report import save_grid


def scene_columns(demo: Path, scene: int) -> tuple[list[Path], Path | None]:
    """The random-style pictures of one scene, and its result in the style photo's style."""
    styles = sorted(demo.glob(f"scene{scene}_style[0-9]*.png"))
    styled = demo / f"scene{scene}_styled.png"
    return styles, (styled if styled.is_file() else None)


def row(old: Path, new: Path, scene: int) -> list[Path]:
    """The files of one row; raises SystemExit naming what differs between the galleries."""
    old_styles, old_styled = scene_columns(old, scene)
    new_styles, new_styled = scene_columns(new, scene)
    if len(old_styles) != len(new_styles) or not old_styles:
        sys.exit(f"error: scene {scene}: {len(old_styles)} random styles in {old}, {len(new_styles)} in {new}")
    files = [new / f"scene{scene}_label.png", new / f"scene{scene}_procedural.png", *old_styles, *new_styles]
    if old_styled and new_styled:
        files += [new / f"scene{scene}_stylesource.png", old_styled, new_styled]
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="the first --demo output folder (shown left)")
    p.add_argument("new", type=Path, help="the second --demo output folder (shown right)")
    p.add_argument("out", type=Path, help="picture to write (.png or .jpg)")
    a = p.parse_args(argv)
    scenes = sorted(int(f.name[5:].split("_")[0]) for f in a.new.glob("scene*_label.png"))
    if not scenes:
        sys.exit(f"error: no scene*_label.png in {a.new}: not a --demo folder")
    rows = [[np.asarray(Image.open(f).convert("RGB")) for f in row(a.old, a.new, s)] for s in scenes]
    columns = [np.stack([r[j] for r in rows]) for j in range(len(rows[0]))]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.out.suffix.lower() == ".png":
        save_grid(columns, a.out)
    else:  # the docs keep photos as JPEG
        with tempfile.TemporaryDirectory() as tmp:
            Image.open(save_grid(columns, Path(tmp) / "grid.png")).save(a.out, quality=90)
    print(f"wrote {a.out} ({len(rows)} scenes x {len(rows[0])} pictures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
