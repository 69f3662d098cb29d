"""Datasets, transforms and the training loader: layouts, preprocess modes, alignment, validation errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadegan import options
from spadegan.data import transforms as T
from spadegan.data.datasets import create_dataset, resolve_dataset_options
from spadegan.data.validate import validate_dataset
from spadegan.errors import SpadeganError

SMALL = ["--load_size", "72", "--crop_size", "64", "--seed", "3"]


def parse(*argv: str, train: bool = True) -> options.Options:
    return options.parse(list(argv), train=train)


def coco_opt(shared: Path, *extra: str, train: bool = True) -> options.Options:
    return parse("--dataset_mode", "coco", "--dataroot", str(shared / "data" / "coco_stuff_sample"),
                 *SMALL, *extra, train=train)


def custom_opt(label_dir: Path, image_dir: Path, *extra: str) -> options.Options:
    return parse("--dataset_mode", "custom", "--label_dir", str(label_dir), "--image_dir", str(image_dir),
                 *SMALL, *extra)


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def make_custom(tmp: Path, n: int = 2, size=(80, 64), label_value: int = 1) -> tuple[Path, Path]:
    """A custom tree of n small pairs: label ids < 13, RGB photos."""
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        lab = np.full((h, w), label_value, np.uint8)
        lab[: h // 2] = 2
        save(lab, tmp / "label" / f"p{i}.png")
        save(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), tmp / "img" / f"p{i}.png")
    return tmp / "label", tmp / "img"


# ---- layouts -------------------------------------------------------------------------------
def test_coco_layout_items(shared):
    opt = coco_opt(shared)
    ds = create_dataset(opt)
    assert len(ds) == 13
    item = ds[0]
    assert item["label"].shape == (1, 64, 64) and item["label"].dtype == torch.float32
    assert item["instance"].shape == (1, 64, 64) and item["instance"].dtype == torch.float32
    assert item["image"].shape == (3, 64, 64)
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["path"].endswith(".jpg")
    assert Path(ds.samples[0].label).stem == Path(ds.samples[0].image).stem == Path(ds.samples[0].instance).stem
    # test phase reads val_*
    assert len(create_dataset(coco_opt(shared, train=False))) == 8


def test_coco_dontcare_maps_to_label_nc_and_nearest_adds_no_ids(shared):
    opt = coco_opt(shared)
    ds = create_dataset(opt)
    for i in range(3):
        raw = set(np.unique(np.asarray(Image.open(ds.samples[i].label))).tolist())
        got = set(torch.unique(ds[i]["label"]).long().tolist())
        expected = {182 if v == 255 else v for v in raw}
        assert 255 not in got
        assert got <= expected  # nearest neighbour: no new ids from resizing
    assert any(182 in set(torch.unique(ds[i]["label"]).long().tolist()) for i in range(len(ds)))


def test_coco_portraits_and_no_instance(shared, tmp_path):
    root = tmp_path / "coco"
    src = shared / "data" / "coco_stuff_sample"
    for sub in ("train_img", "train_label", "train_inst"):
        (root / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir())[:2]:
            shutil.copy(f, root / sub / f.name)
        (root / f"{sub}_portrait").mkdir()
        f = sorted((src / sub).iterdir())[2]
        shutil.copy(f, root / f"{sub}_portrait" / f.name)
    base = ["--dataset_mode", "coco", "--dataroot", str(root), *SMALL]
    assert len(create_dataset(parse(*base))) == 3
    assert len(create_dataset(parse(*base, "--coco_no_portraits"))) == 2
    ds = create_dataset(parse(*base, "--no_instance"))
    assert ds[0]["instance"].numel() == 1 and float(ds[0]["instance"]) == 0
    shutil.rmtree(root / "train_inst")
    with pytest.raises(SpadeganError, match="train_inst.*--no_instance"):
        create_dataset(parse(*base))


def test_ade20k_layout_ids_used_as_they_are(shared):
    root = str(shared / "data" / "ade20k_sample")
    for phase in ("val", "test"):
        opt = parse("--dataset_mode", "ade20k", "--dataroot", root, "--phase", phase,
                    "--preprocess_mode", "crop", "--crop_size", "64", "--seed", "1")
        ds = create_dataset(opt)
        assert len(ds) == 3 and all("_val_" in s.label and s.label.endswith(".png") for s in ds.samples)
        assert opt.no_instance
        for i in range(3):
            raw = np.asarray(Image.open(ds.samples[i].label))
            p = T.get_params(opt, (raw.shape[1], raw.shape[0]), ds.rng(i, 0))
            x, y = p.crop_pos
            window = raw[y:y + 64, x:x + 64].astype(np.float32)
            if p.flip:
                window = window[:, ::-1]
            got = ds[i]["label"][0].numpy()
            np.testing.assert_array_equal(got, window)  # no "label - 1", 0 stays 0
    with pytest.raises(SpadeganError, match="--phase val"):
        create_dataset(parse("--dataset_mode", "ade20k", "--dataroot", root))


def test_ade20k_last_id_fits_with_dontcare(tmp_path):
    # ids 0..150 with label_nc 150 + dontcare: 150 is a class (official convention)
    lab = np.zeros((40, 40), np.uint8)
    lab[:10] = 150
    save(lab, tmp_path / "annotations" / "ADE_train_00000001.png")
    save(np.zeros((40, 40, 3), np.uint8), tmp_path / "images" / "ADE_train_00000001.jpg")
    opt = parse("--dataset_mode", "ade20k", "--dataroot", str(tmp_path), "--crop_size", "32",
                "--load_size", "40")
    validate_dataset(opt, create_dataset(opt), progress=False)
    lab[:5] = 151
    save(lab, tmp_path / "annotations" / "ADE_train_00000001.png")
    with pytest.raises(SpadeganError, match=r"ADE_train_00000001.png: label id 151.*--label_nc 151"):
        validate_dataset(opt, create_dataset(opt), progress=False)


def make_cityscapes(root: Path, phase: str = "train", n: int = 2) -> None:
    for i in range(n):
        stem = f"aachen_{i:06d}_000019"
        lab = np.full((48, 96), 7, np.uint8)
        lab[:, :48] = 26
        inst = np.full((48, 96), 7, np.uint16)
        inst[:, :48] = 26001 + i
        inst[:24, :48] = 26003
        save(lab, root / "gtFine" / phase / "aachen" / f"{stem}_gtFine_labelIds.png")
        # 16-bit PNG, as the real *_instanceIds.png (PIL opens it as I;16 or I)
        save(inst, root / "gtFine" / phase / "aachen" / f"{stem}_gtFine_instanceIds.png")
        save(np.zeros((48, 96, 3), np.uint8), root / "gtFine" / phase / "aachen" / f"{stem}_gtFine_color.png")
        save(np.full((48, 96, 3), 100, np.uint8), root / "leftImg8bit" / phase / "aachen" / f"{stem}_leftImg8bit.png")


def test_cityscapes_layout_32bit_instance_ids(tmp_path):
    make_cityscapes(tmp_path, "val")
    opt = parse("--dataset_mode", "cityscapes", "--dataroot", str(tmp_path), "--crop_size", "128",
                "--phase", "test", train=False)
    ds = create_dataset(opt)
    assert len(ds) == 2
    assert ds.samples[0].label.endswith("_labelIds.png") and ds.samples[0].instance.endswith("_instanceIds.png")
    item = ds[0]
    assert item["label"].shape == (1, 64, 128)  # fixed: crop_size x crop_size / aspect_ratio 2
    assert set(torch.unique(item["instance"]).long().tolist()) == {7, 26001, 26003}
    assert set(torch.unique(item["label"]).long().tolist()) == {7, 26}
    validate_dataset(opt, ds, progress=False)


def test_instance_map_mode_I_kept_exactly():
    opt = parse("--preprocess_mode", "none", "--crop_size", "64").replace(isTrain=False)
    arr = np.full((32, 64), 70000, np.int32)
    arr[:, 32:] = 123456
    t = T.transform_label(Image.fromarray(arr), opt, T.TransformParams((0, 0), False))
    assert set(t.long().unique().tolist()) == {70000, 123456}


def test_facades_layout(tmp_path):
    make_custom(tmp_path / "raw")
    (tmp_path / "facades").mkdir()
    shutil.copytree(tmp_path / "raw" / "label", tmp_path / "facades" / "train_label")
    shutil.copytree(tmp_path / "raw" / "img", tmp_path / "facades" / "train_img")
    opt = parse("--dataset_mode", "facades", "--dataroot", str(tmp_path / "facades"), *SMALL)
    ds = create_dataset(opt)
    assert len(ds) == 2 and opt.no_instance
    assert ds[1]["image"].shape == (3, 64, 64)
    validate_dataset(opt, ds, progress=False)
    with pytest.raises(SpadeganError, match="val_label"):
        create_dataset(opt.replace(phase="val"))


def test_landscapes_layout_and_missing_root(tmp_path):
    from spadegan.data.landscapes import generate_scene

    for i in range(2):
        lab, img, _ = generate_scene(i, 64)
        save(lab, tmp_path / "land" / "train_label" / f"land_{i:06d}.png")
        save(img, tmp_path / "land" / "train_img" / f"land_{i:06d}.jpg", quality=95)
    opt = parse("--dataset_mode", "landscapes", "--dataroot", str(tmp_path / "land"), "--load_size", "64",
                "--crop_size", "64")
    ds = create_dataset(opt)
    assert len(ds) == 2 and int(ds[0]["label"].max()) < 10
    validate_dataset(opt, ds, progress=False)
    with pytest.raises(SpadeganError, match="make-landscapes"):
        create_dataset(opt.replace(dataroot=str(tmp_path / "nowhere")))


# ---- custom mode and its instance notice ---------------------------------------------------
def test_custom_without_instance_dir_trains_without_instances(tmp_path, capsys):
    label_dir, image_dir = make_custom(tmp_path)
    opt = custom_opt(label_dir, image_dir, "--label_nc", "300", "--contain_dontcare_label")
    assert not opt.no_instance
    resolved = resolve_dataset_options(opt)
    out = capsys.readouterr().out
    assert resolved.no_instance and out.count("\n") == 1 and "instance" in out
    assert resolve_dataset_options(resolved) is resolved and capsys.readouterr().out == ""
    ds = create_dataset(resolved)
    assert float(ds[0]["instance"]) == 0 and capsys.readouterr().out == ""
    # with --instance_dir the instance maps are used
    inst_dir = tmp_path / "inst"
    shutil.copytree(label_dir, inst_dir)
    opt2 = custom_opt(label_dir, image_dir, "--instance_dir", str(inst_dir))
    assert resolve_dataset_options(opt2) is opt2
    assert create_dataset(opt2)[0]["instance"].shape == (1, 64, 64)


def test_custom_from_coco_sample(shared, tmp_path):
    src = shared / "data" / "coco_stuff_sample"
    for sub in ("train_label", "train_img"):
        (tmp_path / sub).mkdir()
        for f in sorted((src / sub).iterdir())[:3]:
            shutil.copy(f, tmp_path / sub / f.name)
    opt = resolve_dataset_options(custom_opt(tmp_path / "train_label", tmp_path / "train_img",
                                             "--label_nc", "182", "--contain_dontcare_label"))
    ds = create_dataset(opt)
    report = validate_dataset(opt, ds, progress=False)
    assert report.pairs == 3 and report.dontcare_pixels > 0
    assert int(ds[0]["label"].max()) <= 182
    assert len(create_dataset(opt.replace(max_dataset_size=2))) == 2


# ---- preprocess modes ----------------------------------------------------------------------
EXPECTED_SIZES = {  # input 100x75, load_size 72, crop_size 48, aspect_ratio 2
    "resize_and_crop": (48, 48),
    "crop": (48, 48),
    "scale_width": (72, 54),
    "scale_width_and_crop": (48, 48),
    "scale_shortside": (96, 72),
    "scale_shortside_and_crop": (48, 48),
    "fixed": (48, 24),
    "none": (96, 64),  # each side rounded to a multiple of 32
}


@pytest.mark.parametrize("mode", sorted(EXPECTED_SIZES))
def test_preprocess_mode_sizes(mode):
    opt = parse("--preprocess_mode", mode, "--load_size", "72", "--crop_size", "48",
                "--aspect_ratio", "2", "--netG", "pix2pixhd")
    rng = np.random.default_rng(0)
    p = T.get_params(opt, (100, 75), rng)
    assert T.output_size(opt, (100, 75)) == EXPECTED_SIZES[mode]
    lab = T.transform_label(Image.fromarray(np.zeros((75, 100), np.uint8)), opt, p)
    img = T.transform_image(Image.fromarray(np.zeros((75, 100, 3), np.uint8)), opt, p)
    w, h = EXPECTED_SIZES[mode]
    assert lab.shape == (1, h, w) and img.shape == (3, h, w)
    assert float(img.min()) == -1.0


def test_preprocess_mode_through_dataset(tmp_path):
    label_dir, image_dir = make_custom(tmp_path, n=1, size=(100, 75))
    for mode, (w, h) in EXPECTED_SIZES.items():
        opt = resolve_dataset_options(parse(
            "--dataset_mode", "custom", "--label_dir", str(label_dir), "--image_dir", str(image_dir),
            "--preprocess_mode", mode, "--load_size", "72", "--crop_size", "48", "--aspect_ratio", "2",
            "--netG", "pix2pixhd"))
        item = create_dataset(opt)[0]
        assert item["label"].shape == (1, h, w) and item["image"].shape == (3, h, w), mode


def position_tree(tmp: Path) -> tuple[Path, Path, Path]:
    """One 100x80 pair whose label, instance and photo all encode the pixel position."""
    h, w = 80, 100
    y, x = np.mgrid[:h, :w]
    save((x // 10 + 10 * (y // 10)).astype(np.uint8), tmp / "label" / "a.png")
    save(x.astype(np.uint8), tmp / "inst" / "a.png")
    save(np.stack([x * 2, y * 3, np.zeros_like(x)], -1).astype(np.uint8), tmp / "img" / "a.png")
    return tmp / "label", tmp / "img", tmp / "inst"


def test_identical_crop_and_flip_for_label_instance_photo(tmp_path):
    label_dir, image_dir, inst_dir = position_tree(tmp_path)
    opt = custom_opt(label_dir, image_dir, "--instance_dir", str(inst_dir), "--preprocess_mode", "crop",
                     "--label_nc", "80")
    ds = create_dataset(opt)
    flips = set()
    for epoch in range(12):
        item = ds[(0, epoch)]
        rgb = np.rint((item["image"].numpy() + 1) * 127.5).astype(int)
        px, py = rgb[0] // 2, rgb[1] // 3
        np.testing.assert_array_equal(item["label"][0].numpy(), px // 10 + 10 * (py // 10))
        np.testing.assert_array_equal(item["instance"][0].numpy(), px)
        flips.add(bool(px[0, 0] > px[0, -1]))
    assert flips == {True, False}  # both flip states were exercised
    # --no_flip: never mirrored
    ds = create_dataset(opt.replace(no_flip=True))
    for epoch in range(6):
        inst = ds[(0, epoch)]["instance"][0].numpy()
        assert inst[0, 0] < inst[0, -1]


def test_aligned_after_resizing(tmp_path):
    label_dir, image_dir, inst_dir = position_tree(tmp_path)
    opt = custom_opt(label_dir, image_dir, "--instance_dir", str(inst_dir), "--label_nc", "80",
                     "--preprocess_mode", "scale_width_and_crop", "--load_size", "128", "--crop_size", "64")
    ds = create_dataset(opt)
    raw_ids = set(np.unique(np.asarray(Image.open(label_dir / "a.png"))).tolist())
    for epoch in range(6):
        item = ds[(0, epoch)]
        assert set(item["label"].long().unique().tolist()) <= raw_ids
        x_from_photo = (item["image"][0].numpy() + 1) * 127.5 / 2
        x_from_inst = item["instance"][0].numpy()
        # nearest vs bicubic sampling of the same geometry: within a pixel or two of the source
        assert np.abs(x_from_photo - x_from_inst)[:, 2:-2].max() <= 2.0
        assert np.abs(x_from_inst // 10 - item["label"][0].numpy() % 10).max() == 0


# ---- determinism and loaders ---------------------------------------------------------------
def test_items_deterministic_for_a_seed(shared):
    a, b = create_dataset(coco_opt(shared)), create_dataset(coco_opt(shared))
    for i in range(3):
        for k in ("label", "instance", "image"):
            assert torch.equal(a[i][k], b[i][k])
    c = create_dataset(coco_opt(shared).replace(seed=4))
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(4))
    assert any(not torch.equal(a[(i, 0)]["image"], a[(i, 1)]["image"]) for i in range(4))


def batches(sampler, loader, epoch: int, start: int = 0) -> list:
    sampler.set_epoch(epoch, start)
    return [(b["path"], b["image"].clone(), b["label"].clone()) for b in loader]


def test_train_loader_workers_match_serial_loading(shared):
    from spadegan.train.sampling import make_train_loader
    opt = coco_opt(shared, "--batchSize", "4")
    ds = create_dataset(opt)
    sampler, loader = make_train_loader(ds, opt, seed=3)
    ref = [batches(sampler, loader, e) for e in (1, 2)]
    assert len(ref[0]) == 3  # 13 pairs, batch 4, last incomplete batch dropped in training
    assert [p for b in ref[0] for p in b[0]] != [p for b in ref[1] for p in b[0]]  # reshuffled
    sampler2, loader2 = make_train_loader(ds, opt.replace(nThreads=2), seed=3)
    for e in (1, 2):
        for (p1, i1, l1), (p2, i2, l2) in zip(ref[e - 1], batches(sampler2, loader2, e)):
            assert p1 == p2 and torch.equal(i1, i2) and torch.equal(l1, l2)
    # set_epoch replays an epoch exactly, also from the middle (resume)
    assert [b[0] for b in batches(sampler, loader, 2)] == [b[0] for b in ref[1]]
    assert [b[0] for b in batches(sampler, loader, 2, start=1)] == [b[0] for b in ref[1][1:]]
    assert not loader.pin_memory  # CPU


def test_serial_batches_keep_the_file_order(shared):
    from spadegan.train.sampling import make_train_loader
    opt = coco_opt(shared, "--batchSize", "4", "--serial_batches")
    sampler, loader = make_train_loader(create_dataset(opt), opt, seed=3)
    paths = [p for b in batches(sampler, loader, 1) for p in b[0]]
    assert len(paths) == 12 and paths == [s.image for s in create_dataset(opt).samples][:12]


def test_distributed_ranks_split_global_batches(shared):
    from spadegan.train.distributed import DistInfo
    from spadegan.train.sampling import make_train_loader
    opt = coco_opt(shared, "--batchSize", "4", "--max_dataset_size", "12")
    ds = create_dataset(opt)
    single = [sorted(b[0]) for b in batches(*make_train_loader(ds, opt, seed=3), epoch=1)]
    ranks = [batches(*make_train_loader(ds, opt, 3, DistInfo(rank=r, world_size=2)), epoch=1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 3
    for k in range(3):
        assert len(ranks[0][k][0]) == 2
        assert sorted(ranks[0][k][0] + ranks[1][k][0]) == single[k]


def test_too_small_for_a_batch(tmp_path):
    from spadegan.train.sampling import make_train_loader
    label_dir, image_dir = make_custom(tmp_path, n=2)
    opt = resolve_dataset_options(custom_opt(label_dir, image_dir, "--batchSize", "4"))
    with pytest.raises(SpadeganError, match="2 sample.*--batchSize 4"):
        make_train_loader(create_dataset(opt), opt, seed=0)


# ---- bad input -----------------------------------------------------------------------------
def check(opt):
    return validate_dataset(opt, create_dataset(resolve_dataset_options(opt)), progress=False)


def test_label_id_above_label_nc(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    lab = np.zeros((64, 80), np.uint8)
    lab[0, 0] = 183
    lab[1, 1] = 255
    save(lab, label_dir / "p1.png")
    opt = custom_opt(label_dir, image_dir, "--label_nc", "182", "--contain_dontcare_label")
    with pytest.raises(SpadeganError, match=r"p1\.png: label id 183 >= label_nc 182; pass --label_nc 184"):
        check(opt)
    report = check(opt.replace(label_nc=184))
    assert report.max_id == 183 and report.min_label_nc == 184 and report.dontcare_pixels == 1


def test_dontcare_without_flag(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    lab = np.zeros((64, 80), np.uint8)
    lab[5:, 5:] = 255
    save(lab, label_dir / "p0.png")
    opt = custom_opt(label_dir, image_dir)
    with pytest.raises(SpadeganError, match=r"p0\.png: label id 255 .*--contain_dontcare_label"):
        check(opt)
    ds = create_dataset(resolve_dataset_options(opt.replace(contain_dontcare_label=True)))
    assert 13 in set(ds[0]["label"].long().unique().tolist())


def test_pair_names_differ(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    (image_dir / "p1.png").rename(image_dir / "other.png")
    opt = custom_opt(label_dir, image_dir)
    with pytest.raises(SpadeganError, match=r"p1\.png.*other\.png.*--no_pairing_check"):
        check(opt)
    ds = create_dataset(resolve_dataset_options(opt.replace(no_pairing_check=True)))
    assert [Path(s.image).name for s in ds.samples] == ["other.png", "p0.png"]
    (image_dir / "other.png").unlink()
    with pytest.raises(SpadeganError, match="2 label maps but 1 photos"):
        create_dataset(resolve_dataset_options(opt.replace(no_pairing_check=True)))


def test_sizes_differ(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    save(np.zeros((64, 96, 3), np.uint8), image_dir / "p0.png")
    with pytest.raises(SpadeganError, match=r"p0\.png is 80x64 but its photo .*p0\.png is 96x64"):
        check(custom_opt(label_dir, image_dir))


def test_missing_and_empty_folders(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    with pytest.raises(SpadeganError, match=r"--label_dir folder .*nope does not exist"):
        create_dataset(resolve_dataset_options(custom_opt(tmp_path / "nope", image_dir)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SpadeganError, match=r"--image_dir folder .*empty holds no images"):
        create_dataset(resolve_dataset_options(custom_opt(label_dir, tmp_path / "empty")))
    with pytest.raises(SpadeganError, match=r"--dataroot .*nowhere does not exist"):
        create_dataset(parse("--dataset_mode", "coco", "--dataroot", str(tmp_path / "nowhere")))


def test_corrupt_images(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    data = (label_dir / "p0.png").read_bytes()
    (label_dir / "p0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpadeganError, match=r"p0\.png: cannot read image"):
        check(custom_opt(label_dir, image_dir))
    label_dir, image_dir = make_custom(tmp_path / "b")
    (image_dir / "p1.png").unlink()
    save(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8), image_dir / "p1.jpg")
    data = (image_dir / "p1.jpg").read_bytes()
    (image_dir / "p1.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SpadeganError, match=r"p1\.jpg: cannot read image .*truncated"):
        check(custom_opt(label_dir, image_dir))
    (label_dir / "p0.png").write_bytes(b"")
    with pytest.raises(SpadeganError, match=r"p0\.png: cannot read image"):
        check(custom_opt(label_dir, image_dir))


def test_colour_label_map_points_to_convert_labels(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    colour = np.zeros((64, 80, 3), np.uint8)
    colour[:, :40] = (128, 64, 128)
    save(colour, label_dir / "p0.png")
    with pytest.raises(SpadeganError, match=r"p0\.png: looks like a colour label map.*spadegan convert-labels"):
        check(custom_opt(label_dir, image_dir))
    # an RGB file whose channels are equal is a grey id map: accepted
    grey = np.repeat(np.full((64, 80, 1), 3, np.uint8), 3, axis=2)
    save(grey, label_dir / "p0.png")
    report = check(custom_opt(label_dir, image_dir))
    assert report.ok and 3 in report.label_pixels


def test_grayscale_and_rgba_photos_are_converted(tmp_path):
    label_dir, image_dir = make_custom(tmp_path)
    save(np.full((64, 80), 200, np.uint8), image_dir / "p0.png")
    save(np.full((64, 80, 4), 50, np.uint8), image_dir / "p1.png")
    opt = resolve_dataset_options(custom_opt(label_dir, image_dir))
    ds = create_dataset(opt)
    report = validate_dataset(opt, ds, progress=False)
    assert report.ok and "converted to RGB" in report.warnings[0]
    assert ds[0]["image"].shape == ds[1]["image"].shape == (3, 64, 64)
    assert torch.allclose(ds[0]["image"], torch.full((3, 64, 64), 200 / 127.5 - 1))
