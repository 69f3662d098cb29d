"""Tests for the procedural landscapes generator (spadegan.data.landscapes)."""

import json

import numpy as np
import pytest
from PIL import Image

from spadegan.data import landscapes as L
from spadegan.data.palettes import load_classes
from spadegan.errors import SpadeganError


@pytest.fixture(scope="module")
def scenes64():
    """50 small scenes, shared by the coverage tests (about a quarter second)."""
    return [L.generate_scene(s, 64) for s in range(50)]


def test_deterministic_per_seed():
    a = L.generate_scene(7, 64)
    b = L.generate_scene(7, 64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    c = L.generate_scene(8, 64)
    assert not np.array_equal(a[1], c[1])


def test_no_global_rng_use():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    L.generate_scene(3, 48)
    assert np.random.random() == before


def test_shapes_and_dtypes():
    lab, img, style = L.generate_scene(1, 96, width=160)
    assert lab.shape == (96, 160) and lab.dtype == np.uint8
    assert img.shape == (96, 160, 3) and img.dtype == np.uint8
    assert style in L.STYLES
    assert img.std() > 5  # not a flat fill


def test_every_class_appears_and_ids_in_range(scenes64):
    seen = np.zeros(len(L.LANDSCAPE_CLASSES), bool)
    for lab, img, _ in scenes64:
        assert lab.max() < len(L.LANDSCAPE_CLASSES)
        assert img.shape == lab.shape + (3,)
        seen[np.unique(lab)] = True
    missing = [n for n, s in zip(L.LANDSCAPE_CLASSES, seen) if not s]
    assert not missing


def test_styles_vary(scenes64):
    styles = {st for _, _, st in scenes64}
    assert len(styles) >= 4


def test_colours_are_plausible(scenes64):
    """Daytime sky is blue-ish and brighter than trees; grass is not blue."""
    sky, tree, grass = [], [], []
    for lab, img, st in scenes64:
        if st != "day":
            continue
        px = img.reshape(-1, 3).astype(float)
        flat = lab.ravel()
        for cls, acc in ((L.SKY, sky), (L.TREE, tree), (L.GRASS, grass)):
            if (flat == cls).any():
                acc.append(px[flat == cls].mean(0))
    sky, tree, grass = (np.mean(a, 0) for a in (sky, tree, grass))
    assert sky[2] > sky[0] and sky.mean() > tree.mean() + 40
    assert grass[1] > grass[2]


def test_class_names_match_table():
    assert [c.name for c in load_classes("landscapes")] == L.LANDSCAPE_CLASSES


def test_generate_batch():
    labels, images, styles = L.generate_batch([1, 2, 3], size=48)
    assert labels.shape == (3, 48, 48) and images.shape == (3, 48, 48, 3)
    assert len(styles) == 3
    np.testing.assert_array_equal(labels[1], L.generate_scene(2, 48)[0])
    with pytest.raises(SpadeganError):
        L.generate_batch([], size=48)


def test_bad_arguments_raise():
    with pytest.raises(SpadeganError, match="at least 32"):
        L.generate_scene(0, 16)
    with pytest.raises(SpadeganError, match="seed"):
        L.generate_scene(-1, 64)


def test_make_landscapes_layout(tmp_path):
    out = tmp_path / "land"
    summary = L.make_landscapes(str(out), count=5, size=40, seed=10, val_count=2)
    assert summary["train"] == 3 and summary["val"] == 2
    assert sum(summary["styles"].values()) == 5
    for split, n in (("train", 3), ("val", 2)):
        imgs = sorted(p.stem for p in (out / f"{split}_img").glob("*.jpg"))
        labs = sorted(p.stem for p in (out / f"{split}_label").glob("*.png"))
        assert imgs == labs and len(imgs) == n
    assert sorted(p.stem for p in (out / "val_img").iterdir()) == ["land_000003", "land_000004"]
    lab = np.asarray(Image.open(out / "val_label" / "land_000004.png"))
    np.testing.assert_array_equal(lab, L.generate_scene(14, 40)[0])
    img = Image.open(out / "train_img" / "land_000000.jpg")
    assert img.size == (40, 40) and img.mode == "RGB"
    classes = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in classes] == L.LANDSCAPE_CLASSES


def test_make_landscapes_val_fraction_and_errors(tmp_path):
    summary = L.make_landscapes(str(tmp_path / "a"), count=4, size=32, val_fraction=0.5)
    assert (summary["train"], summary["val"]) == (2, 2)
    summary = L.make_landscapes(str(tmp_path / "b"), count=2, size=32)
    assert not (tmp_path / "b" / "val_img").exists() and summary["val"] == 0
    with pytest.raises(SpadeganError, match="val_fraction"):
        L.make_landscapes(str(tmp_path / "c"), count=4, size=32, val_fraction=1.5)
    with pytest.raises(SpadeganError, match="count"):
        L.make_landscapes(str(tmp_path / "c"), count=0)
    with pytest.raises(SpadeganError, match="size"):
        L.make_landscapes(str(tmp_path / "c"), count=1, size=8)
    assert not (tmp_path / "c").exists()  # nothing written before the checks
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpadeganError, match="not a folder"):
        L.make_landscapes(str(tmp_path / "file"), count=1, size=32)


def test_cli_main(tmp_path, capsys):
    out = tmp_path / "ds"
    assert L.main(["--out", str(out), "--count", "3", "--size", "32", "--val_count", "1"]) == 0
    assert len(list((out / "train_img").glob("*.jpg"))) == 2
    assert len(list((out / "val_label").glob("*.png"))) == 1
    assert "2 train + 1 val" in capsys.readouterr().out
