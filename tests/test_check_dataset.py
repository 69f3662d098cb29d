"""`spadegan check-dataset` and `spadegan convert-labels`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spadegan import cli
from spadegan.data.check import check_main, convert_main
from spadegan.data.palettes import label_to_color, load_classes
from spadegan.errors import SpadeganError


def test_check_coco_sample_summary(shared, capsys):
    root = shared / "data" / "coco_stuff_sample"
    assert check_main(["--dataset_mode", "coco", "--dataroot", str(root)]) == 0
    out = capsys.readouterr().out
    assert "13 pairs" in out and "13 instance maps" in out
    assert "person" in out and "unlabeled" in out  # class names from the coco table
    assert "dontcare (255):" in out and "absent" not in out
    assert "smallest --label_nc that fits: 176" in out
    assert "OK: the dataset is ready" in out


def test_check_ade20k_sample(shared, capsys):
    root = shared / "data" / "ade20k_sample"
    assert check_main(["--dataset_mode", "ade20k", "--dataroot", str(root), "--phase", "val"]) == 0
    out = capsys.readouterr().out
    assert "3 pairs" in out and "dontcare (255): absent" in out and "wall" in out


def _tree(tmp: Path) -> tuple[Path, Path]:
    for i in range(2):
        lab = np.zeros((40, 50), np.uint8)
        lab[:, 25:] = 4
        (tmp / "lab").mkdir(exist_ok=True)
        (tmp / "img").mkdir(exist_ok=True)
        Image.fromarray(lab).save(tmp / "lab" / f"x{i}.png")
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp / "img" / f"x{i}.jpg")
    return tmp / "lab", tmp / "img"


def test_check_custom_reports_problems_and_exits_2(tmp_path, capsys):
    lab, img = _tree(tmp_path)
    bad = np.full((40, 50), 20, np.uint8)
    Image.fromarray(bad).save(lab / "x1.png")
    argv = ["--dataset_mode", "custom", "--label_dir", str(lab), "--image_dir", str(img), "--label_nc", "5"]
    with pytest.raises(SpadeganError, match=r"x1\.png: label id 20 >= label_nc 5; pass --label_nc 21"):
        check_main(argv)
    out = capsys.readouterr().out
    assert "instance" in out.splitlines()[0]  # the one-line no-instance notice
    assert "problem: " in out and "smallest --label_nc that fits: 21" in out
    assert cli.main(["check-dataset", *argv]) == 2
    assert "label id 20" in capsys.readouterr().err
    assert cli.main(["check-dataset", *argv[:-1], "21"]) == 0


def test_convert_labels_roundtrip_then_check(tmp_path, capsys):
    classes = load_classes("landscapes")
    ids = np.zeros((40, 50), np.uint8)
    ids[10:] = 7
    ids[30:, 20:] = 9
    (tmp_path / "colour").mkdir()
    Image.fromarray(label_to_color(ids, classes)).save(tmp_path / "colour" / "x0.png")
    Image.fromarray(label_to_color(ids, classes)).save(tmp_path / "colour" / "x1.png")
    _, img = _tree(tmp_path)
    custom = ["--dataset_mode", "custom", "--image_dir", str(img), "--label_nc", "10"]
    # the colour maps themselves are rejected with a pointer to convert-labels
    with pytest.raises(SpadeganError, match="colour label map.*spadegan convert-labels"):
        check_main([*custom, "--label_dir", str(tmp_path / "colour")])
    capsys.readouterr()
    assert convert_main(["--palette", "landscapes", str(tmp_path / "colour"), str(tmp_path / "ids")]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 id maps" in out and "--label_nc 10" in out
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ids" / "x0.png")), ids)
    assert check_main([*custom, "--label_dir", str(tmp_path / "ids")]) == 0
    assert "classes present: 3 (ids 0..9)" in capsys.readouterr().out


def test_convert_labels_text_palette_and_usage(tmp_path, capsys):
    pal = tmp_path / "pal.txt"
    pal.write_text("0 0 255\n0 255 0\n255 0 0\n")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:] = (0, 255, 0)
    rgb[:4] = (255, 0, 0)
    (tmp_path / "c").mkdir()
    Image.fromarray(rgb).save(tmp_path / "c" / "a.png")
    assert convert_main(["--palette", str(pal), str(tmp_path / "c"), str(tmp_path / "o")]) == 0
    assert "--label_nc 3" in capsys.readouterr().out
    got = np.asarray(Image.open(tmp_path / "o" / "a.png"))
    assert got[0, 0] == 2 and got[-1, -1] == 1
    with pytest.raises(SpadeganError, match="usage"):
        convert_main(["--palette", str(pal)])
