"""Tests for spadegan.data.palettes: class tables, colour <-> id conversion, label conversion."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spadegan.data import palettes as P
from spadegan.errors import SpadeganError

CLASSES_DIR = Path(P.__file__).parent / "classes"
TABLES = ["ade20k", "coco", "cityscapes", "landscapes"]


@pytest.mark.parametrize("name", TABLES)
def test_json_tables_well_formed(name):
    raw = json.loads((CLASSES_DIR / f"{name}.json").read_text())
    assert isinstance(raw, list)
    for e in raw:
        assert set(e) <= {"id", "name", "color", "note"}
        assert isinstance(e["name"], str) and e["name"]
        assert len(e["color"]) == 3 and all(0 <= c <= 255 for c in e["color"])
    ids = [e["id"] for e in raw]
    assert len(ids) == len(set(ids))
    names = [e["name"] for e in raw]
    assert len(names) == len(set(names))
    colors = Counter(tuple(e["color"]) for e in raw)
    repeated = {c for c, k in colors.items() if k > 1}
    if name == "cityscapes":
        # The official Cityscapes table repeats black (void ids 0-4) and pole grey.
        assert repeated == {(0, 0, 0), (153, 153, 153)}
    else:
        assert not repeated


def test_ade20k_table():
    classes = P.load_classes("ade20k")
    assert len(classes) == 151
    by_id = {c.id: c for c in classes}
    assert by_id[0].name == "other"
    assert by_id[1].name == "wall" and by_id[1].color == (120, 120, 120)
    assert by_id[3].name == "sky"
    assert by_id[150].name == "flag"


def test_cityscapes_and_coco_tables():
    city = {c.name: c for c in P.load_classes("cityscapes")}
    assert city["road"].id == 7 and city["road"].color == (128, 64, 128)
    assert [c.id for c in P.load_classes("cityscapes")] == list(range(34))
    coco = {c.id: c for c in P.load_classes("coco")}
    assert coco[0].name == "person" and coco[11].name == "street sign"
    assert coco[91].name == "banner" and coco[181].name == "wood"
    assert coco[255].name == "unlabeled"
    assert len(coco) == 183
    land = [c.name for c in P.load_classes("landscapes")]
    assert land[:3] == ["sky", "cloud", "mountain"] and len(land) == 10


def test_unknown_table_raises():
    with pytest.raises(SpadeganError, match="unknown class table"):
        P.load_classes("nope")


def test_bit_color_distinct_and_not_black():
    cols = P.bit_color(np.arange(256))
    assert len({tuple(c) for c in cols}) == 256
    assert not (cols == 0).all(axis=1).any()
    assert tuple(P.bit_color(0)) == (128, 0, 0)


@pytest.mark.parametrize("name", TABLES)
def test_round_trip(name):
    classes = P.load_classes(name)
    first_of_color = {}
    for c in classes:
        first_of_color.setdefault(c.color, c.id)
    ids = np.array(sorted(first_of_color.values()), dtype=np.uint8)
    rng = np.random.default_rng(0)
    label = rng.choice(ids, size=(17, 23)).astype(np.uint8)
    rgb = P.label_to_color(label, classes)
    assert rgb.shape == (17, 23, 3) and rgb.dtype == np.uint8
    back = P.color_to_label(rgb, classes, "x.png")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, label)


def test_palette_array_fallback_and_dontcare():
    classes = P.load_classes("landscapes")
    pal = P.palette_array(classes, 12)
    assert pal.shape == (12, 3) and pal.dtype == np.uint8
    assert tuple(pal[7]) == classes[7].color
    assert tuple(pal[11]) == tuple(P.bit_color(11))
    label = np.array([[0, 255], [40, 11]], dtype=np.uint8)
    rgb = P.label_to_color(label, pal)
    assert tuple(rgb[0, 1]) == (0, 0, 0)
    assert tuple(rgb[1, 0]) == tuple(P.bit_color(40))
    # Black has no landscapes class, so it reads back as don't-care.
    assert P.color_to_label(rgb[:1], pal)[0, 1] == 255


def test_unknown_colour_error_names_file_and_colour():
    classes = P.load_classes("landscapes")
    rgb = P.label_to_color(np.zeros((8, 8), np.uint8), classes)
    rgb[2, 5] = (1, 2, 3)
    rgb[6:8, 0:2] = (9, 9, 9)
    with pytest.raises(SpadeganError) as ei:
        P.color_to_label(rgb, classes, "labels/img_01.png")
    msg = str(ei.value)
    assert "labels/img_01.png" in msg
    assert "(1, 2, 3) x1 px" in msg and "(x=5, y=2)" in msg
    assert "(9, 9, 9) x4 px" in msg
    assert msg.index("(9, 9, 9)") < msg.index("(1, 2, 3)")  # most frequent first


def test_unknown_colour_error_lists_at_most_five():
    classes = P.load_classes("landscapes")
    rgb = np.zeros((1, 8, 3), np.uint8)
    rgb[0, :, 0] = np.arange(1, 9)
    with pytest.raises(SpadeganError, match="8 colour.*and 3 more"):
        P.color_to_label(rgb, classes, "a.png")


def test_color_to_label_rejects_grayscale():
    with pytest.raises(SpadeganError, match="g.png"):
        P.color_to_label(np.zeros((4, 4), np.uint8), P.load_classes("coco"), "g.png")


def test_duplicate_colours_resolve_to_lowest_id():
    classes = P.load_classes("cityscapes")
    rgb = np.array([[[0, 0, 0], [153, 153, 153]]], np.uint8)
    np.testing.assert_array_equal(P.color_to_label(rgb, classes), [[0, 17]])


def test_load_palette_file_text_and_json(tmp_path):
    txt = tmp_path / "pal.txt"
    txt.write_text("# my palette\n0 0 255 water\n\n10, 200, 10\n")
    classes = P.load_palette_file(txt)
    assert [(c.id, c.name, c.color) for c in classes] == [
        (0, "water", (0, 0, 255)),
        (1, "class 1", (10, 200, 10)),
    ]
    js = tmp_path / "classes.json"
    js.write_text(json.dumps([{"id": 3, "name": "a", "color": [1, 2, 3]}]))
    assert P.load_palette_file(js) == [P.ClassInfo(3, "a", (1, 2, 3))]

    idfirst = tmp_path / "ids.txt"
    idfirst.write_text("0 10 20 30\n")
    with pytest.raises(SpadeganError, match="4th number"):
        P.load_palette_file(idfirst)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n1 2 300\n")
    with pytest.raises(SpadeganError, match=r"bad.txt:2"):
        P.load_palette_file(bad)
    badjs = tmp_path / "bad.json"
    badjs.write_text(json.dumps([{"id": 0, "name": "a", "color": [1, 2]}]))
    with pytest.raises(SpadeganError, match="bad.json"):
        P.load_palette_file(badjs)
    with pytest.raises(SpadeganError, match="does not exist"):
        P.load_palette_file(tmp_path / "missing.txt")


def test_classes_for_dataset_mode():
    custom = P.classes_for_dataset_mode("custom", 4)
    assert [c.name for c in custom] == ["class 0", "class 1", "class 2", "class 3"]
    city = P.classes_for_dataset_mode("cityscapes", 35)
    assert len(city) == 35 and city[34].name == "class 34"
    assert len(P.classes_for_dataset_mode("ade20k", 150)) == 151
    with pytest.raises(SpadeganError, match="unknown dataset mode"):
        P.classes_for_dataset_mode("imagenet", 3)
    with pytest.raises(SpadeganError, match="label_nc"):
        P.classes_for_dataset_mode("custom", 0)


def test_common_classes_first():
    ordered = P.common_classes_first(P.load_classes("coco"))
    top = [c.name for c in ordered[:6]]
    assert top[0] == "sky-other"
    assert "clouds" in top and "sea" in top
    assert "sky" in P.COMMON_SCENE_CLASSES and "building" in P.COMMON_SCENE_CLASSES


def test_convert_labels(tmp_path):
    classes = P.load_classes("landscapes")
    src, dst = tmp_path / "color", tmp_path / "ids"
    src.mkdir()
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 10, size=(9, 11)).astype(np.uint8) for _ in range(3)]
    for i, lab in enumerate(labels):
        Image.fromarray(P.label_to_color(lab, classes)).save(src / f"im{i}.png")
    (tmp_path / "classes.json").write_text((CLASSES_DIR / "landscapes.json").read_text())
    for palette in ("landscapes", str(tmp_path / "classes.json")):
        assert P.convert_labels(palette, str(src), str(dst)) == 3
        for i, lab in enumerate(labels):
            out = Image.open(dst / f"im{i}.png")
            assert out.mode == "L"
            np.testing.assert_array_equal(np.asarray(out), lab)


def test_convert_labels_errors(tmp_path):
    src = tmp_path / "color"
    src.mkdir()
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(src / "bad.png")
    with pytest.raises(SpadeganError, match="bad.png"):
        P.convert_labels("landscapes", str(src), str(tmp_path / "out"))
    with pytest.raises(SpadeganError, match="does not exist"):
        P.convert_labels("landscapes", str(tmp_path / "nope"), str(tmp_path / "out"))
    # 300 colours -> ids above 255 cannot go into an 8-bit PNG.
    pal = tmp_path / "big.txt"
    cols = P.bit_color(np.arange(300))
    pal.write_text("".join(f"{r} {g} {b}\n" for r, g, b in cols))
    Image.fromarray(cols[299].reshape(1, 1, 3)).save(src / "bad.png")
    with pytest.raises(SpadeganError, match="> 255"):
        P.convert_labels(str(pal), str(src), str(tmp_path / "out"))
