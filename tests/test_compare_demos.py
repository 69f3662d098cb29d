"""scripts/compare_demos.py: two --demo galleries side by side (the docs' before / after figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_script


@pytest.fixture(scope="module")
def compare():
    return load_script("scripts/compare_demos.py")


def fake_demo(folder: Path, value: int, styles: int = 3, scenes: int = 2) -> Path:
    folder.mkdir()
    for i in range(scenes):
        names = ["label", "procedural", "stylesource", "styled"] + [f"style{k}" for k in range(styles)]
        for n in names:
            Image.fromarray(np.full((8, 6, 3), value + i, np.uint8)).save(folder / f"scene{i}_{n}.png")
    return folder


def test_rows_put_the_first_gallery_left_of_the_second(compare, tmp_path):
    old, new = fake_demo(tmp_path / "old", 10), fake_demo(tmp_path / "new", 200)
    assert compare.main([str(old), str(new), str(tmp_path / "g.png")]) == 0
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 * 8 + 2, 11 * 6 + 10 * 2, 3)
    cell = lambda i, j: grid[i * 10, j * 8, 0]  # noqa: E731 (row i, column j)
    # label, photo (new), 3 old styles, 3 new styles, style photo (new), old styled, new styled
    assert [cell(1, j) for j in range(11)] == [201, 201, 11, 11, 11, 201, 201, 201, 201, 11, 201]


def test_galleries_with_other_style_counts_are_refused(compare, tmp_path):
    old, new = fake_demo(tmp_path / "old", 10, styles=2), fake_demo(tmp_path / "new", 200)
    with pytest.raises(SystemExit, match="random styles"):
        compare.main([str(old), str(new), str(tmp_path / "g.png")])


def test_a_folder_without_scenes_is_refused(compare, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="not a --demo folder"):
        compare.main([str(tmp_path / "empty"), str(tmp_path / "empty"), str(tmp_path / "g.jpg")])
