"""Options: official flags and defaults, dataset-mode defaults, saving/loading, clear errors."""

from __future__ import annotations

import pickle
import shlex

import pytest

from spadegan import options
from spadegan.errors import SpadeganError

OFFICIAL_FLAGS = ("name gpu_ids checkpoints_dir model norm_G norm_D norm_E phase batchSize preprocess_mode "
                  "load_size crop_size aspect_ratio label_nc contain_dontcare_label output_nc dataroot "
                  "dataset_mode serial_batches no_flip nThreads max_dataset_size load_from_opt_file netG ngf "
                  "init_type init_variance z_dim no_instance nef use_vae num_upsampling_layers niter "
                  "niter_decay lr beta1 beta2 no_TTUR D_steps_per_G ndf lambda_feat lambda_vgg lambda_kld "
                  "no_ganFeat_loss no_vgg_loss gan_mode netD n_layers_D num_D continue_train which_epoch "
                  "display_freq print_freq save_latest_freq save_epoch_freq no_html debug tf_log").split()


def test_every_official_flag_parses():
    opt = options.parse([], train=True)
    for name in OFFICIAL_FLAGS:
        assert hasattr(opt, name), name
    test = options.parse(["--results_dir", "r", "--how_many", "3"], train=False)
    assert test.results_dir == "r" and test.how_many == 3 and not test.isTrain


def test_fixture_options_equal_official_pickle(parity_dir):
    """Parsing the fixture's flags gives exactly what the official train.py saved."""
    argv = shlex.split((parity_dir / "flags.txt").read_text())
    ours = options.parse(argv, train=True).to_dict()
    with open(parity_dir / "opt.pkl", "rb") as fh:
        theirs = vars(pickle.load(fh))
    for k, v in theirs.items():
        assert ours[k] == v, (k, ours[k], v)


def test_fixture_opt_txt_format_matches(parity_dir):
    argv = shlex.split((parity_dir / "flags.txt").read_text())
    ours = options.format_options(options.parse(argv, train=True)).splitlines()
    theirs = (parity_dir / "opt.txt").read_text().splitlines()
    ours_by_key = {line.split(":")[0].strip(): line for line in ours}
    for line in theirs:
        key = line.split(":")[0].strip()
        if key:
            assert ours_by_key[key].rstrip() == line.rstrip(), key


@pytest.mark.parametrize("mode,expected", [
    ("ade20k", dict(label_nc=150, contain_dontcare_label=True, no_instance=True, semantic_nc=151, load_size=286)),
    ("coco", dict(label_nc=182, contain_dontcare_label=True, no_instance=False, semantic_nc=184)),
    ("cityscapes", dict(label_nc=35, aspect_ratio=2.0, num_upsampling_layers="more", preprocess_mode="fixed",
                        crop_size=512, semantic_nc=36)),
    ("facades", dict(label_nc=13, no_instance=True, contain_dontcare_label=False)),
    ("landscapes", dict(label_nc=10, no_instance=True)),
])
def test_dataset_mode_defaults(mode, expected):
    opt = options.parse(["--dataset_mode", mode], train=True)
    for k, v in expected.items():
        assert getattr(opt, k) == v, k


def test_test_phase_defaults_and_ttur():
    t = options.parse(["--dataset_mode", "ade20k"], train=False)
    assert (t.load_size, t.crop_size, t.serial_batches, t.no_flip, t.phase) == (256, 256, True, True, "test")
    assert options.parse(["--no_TTUR"], train=True).beta1 == 0.5
    assert options.parse([], train=True).norm_G == "spectralspadesyncbatch3x3"
    assert options.parse(["--netG", "pix2pixhd"], train=True).norm_G == "instance"


def test_explicit_flags_beat_dataset_defaults():
    opt = options.parse(["--dataset_mode", "ade20k", "--label_nc", "20", "--crop_size", "128"], train=True)
    assert opt.label_nc == 20 and opt.crop_size == 128


@pytest.mark.parametrize("argv,train,needle", [
    (["--no_such_flag"], True, "no_such_flag"),
    (["--results_dir", "x"], True, "--results_dir is a test option"),
    (["--niter", "3"], False, "--niter is a train option"),
    (["--resnet_n_blocks", "3"], True, "--resnet_n_blocks only applies with --netG pix2pixhd"),
    (["--label_dir", "x"], True, "--label_dir only applies with --dataset_mode custom"),
    (["--norm_G", "spectralspadefoo3x3"], True, "norm_G"),
    (["--crop_size", "16"], True, "--crop_size 16 is too small"),
    (["--label_nc", "-1"], True, "--label_nc must be 0 (image labels) or more"),
    (["--netG", "pix2pixhd", "--use_vae"], True, "--use_vae needs --netG spade"),
    (["--dataset_mode", "custom"], True, "needs --label_dir and --image_dir"),
    (["--preprocess_mode", "stretch"], True, "preprocess_mode"),
    (["--gpu_ids", "0,1", "--batchSize", "3"], True, "multiple of the number of GPUs"),
])
def test_bad_flags_are_clear_errors(argv, train, needle):
    with pytest.raises(SpadeganError, match=None) as e:
        options.parse(argv, train=train)
    assert needle in str(e.value)


def test_options_are_read_only():
    opt = options.parse([], train=True)
    with pytest.raises(Exception):
        opt.label_nc = 3  # type: ignore[misc]
    assert opt.replace(label_nc=3).label_nc == 3 and opt.label_nc == 182


def test_save_and_load_round_trip(tmp_path):
    opt = options.parse(["--name", "x", "--checkpoints_dir", str(tmp_path), "--label_nc", "7",
                         "--use_vae", "--seed", "3"], train=True)
    options.save_options(opt)
    for f in ("opt.txt", "opt.pkl", "opt.json"):
        assert (tmp_path / "x" / f).is_file()
    for f in ("opt.json", "opt.pkl", "opt.txt"):
        saved = options.load_options_file(tmp_path / "x" / f)
        back = options.options_from_dict(saved, train=True)
        assert back == opt, f
    # --load_from_opt_file takes the saved values as defaults; the command line still wins
    again = options.parse(["--name", "x", "--checkpoints_dir", str(tmp_path), "--load_from_opt_file",
                           "--ngf", "32"], train=True)
    assert again.label_nc == 7 and again.use_vae and again.ngf == 32


def test_official_opt_txt_readable(parity_dir):
    saved = options.load_options_file(parity_dir / "opt.txt")
    opt = options.options_from_dict(saved)
    assert (opt.label_nc, opt.ngf, opt.semantic_nc, opt.norm_G) == (12, 16, 13, "spectralspadesyncbatch3x3")


def test_device_selection():
    assert str(options.parse(["--gpu_ids", "-1"]).torch_device) == "cpu"
    assert str(options.parse(["--device", "cpu"]).torch_device) == "cpu"
