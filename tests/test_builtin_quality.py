"""The built-in model's evaluation protocol (benchmarks/bench_builtin_quality.py) and the
style-diversity measure (spadegan.evaluation.diversity): unseen, disjoint seed ranges; the
measure's zero and scale; the family classifier; the look hook of the renderer; the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spadegan.data.landscapes import STYLES, generate_scene
from spadegan.errors import SpadeganError
from spadegan.evaluation import diversity as div

from conftest import load_script



@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_builtin_quality.py")


def test_default_ranges_are_unseen_and_disjoint(bench):
    ranges = bench.seed_ranges(list(bench.DEFAULT_STARTS), 200, 200)
    assert sum(len(r) - 200 for r in ranges) >= 600  # scored scenes
    seen = set(bench.TRAINING_SEEDS)
    used = [set(r) for r in ranges] + [set(r) for r in bench.diversity_ranges(bench.build_parser().parse_args([]))]
    for i, a in enumerate(used):
        assert min(a) >= 100_000 and not a & seen
        for b in used[i + 1:]:
            assert not a & b
    # make_landscapes gives scene i the seed start + i: the range is exactly the seeds written
    assert [r.start for r in ranges] == list(bench.DEFAULT_STARTS) and all(len(r) == 400 for r in ranges)


@pytest.mark.parametrize("starts", [[100_000, 100_300], [99_999], [0], [2_000]])
def test_overlapping_or_seen_ranges_are_refused(bench, starts):
    with pytest.raises(SpadeganError):
        bench.seed_ranges(starts, 200, 200)


def test_pairwise_distance_zero_for_identical_positive_for_different():
    same = torch.full((3, 4, 3, 8, 8), 77, dtype=torch.uint8)
    assert div.pixel_diversity(same) == 0.0
    diff = same.clone()
    diff[:, 1] = 0
    diff[:, 0] = 255
    # per map: pairs (0,1): 1, (0,2) and (0,3): 178/255, (1,2) and (1,3): 77/255, (2,3): 0
    expect = (1 + 2 * 178 / 255 + 2 * 77 / 255) / 6
    assert div.pixel_diversity(diff) == pytest.approx(expect)
    feats = np.random.default_rng(0).standard_normal((5, 3, 7))
    assert div.feature_diversity(np.repeat(feats[:, :1], 3, axis=1)) == 0.0
    assert div.feature_diversity(feats) > 0.5
    with pytest.raises(SpadeganError):
        div.pixel_diversity(same[:, :1])  # one style per map: no pairs


def test_look_paints_the_same_map_and_default_is_unchanged():
    lab, img, style = generate_scene(100_003, 64)
    for look in STYLES:
        lab2, img2, style2 = generate_scene(100_003, 64, look=look)
        assert (lab2 == lab).all() and style2 == style
        assert (img2 == img).all() == (look == style)
    with pytest.raises(SpadeganError):
        generate_scene(1, 64, look="noon")


def test_family_classifier_recovers_the_renderers_families():
    clf, info = div.fit_family_classifier(list(range(500_000, 500_004)), 64)
    assert info["fit_images"] == 4 * len(STYLES)
    labels, photos, truth = [], [], []
    for s in range(700_000, 700_036):  # each seed's own family, not forced
        lab, img, style = generate_scene(s, 64)
        labels.append(torch.from_numpy(lab).long())
        photos.append(torch.from_numpy(img).permute(2, 0, 1))
        truth.append(style)
    means, present = div.class_colour_profiles(torch.stack(photos), torch.stack(labels), 10)
    pred = clf.predict(means, present)
    assert len(set(truth)) >= 5
    assert np.mean([a == b for a, b in zip(pred, truth)]) >= 0.9
    assert div.reach(pred)["families_reached"] == len(set(pred))


def test_bench_json_has_the_fields(bench, tmp_path):
    out = tmp_path / "q"
    bench.main(["--out", str(out), "--scenes", "6", "--ref", "6", "--maps", "3", "--styles", "2",
                "--classifier_maps", "1", "--num_threads", "1"])
    res = json.loads((out / "builtin_quality.json").read_text())
    rows = res["protocol"]["ranges"]
    assert len(rows) == 3 and [r["seeds"][0] for r in rows] == [100_006, 200_006, 300_006]
    for r in rows + [res["protocol"]["mean"]]:
        for who in ("synthesized", "real"):
            assert {"miou", "seg_fd", "seg_kid_mean"} <= set(r[who])
        assert r["miou_pct_of_real"] == pytest.approx(100 * r["synthesized"]["miou"] / r["real"]["miou"])
    assert res["protocol"]["mean"]["scenes"] == 18
    d = res["diversity"]
    for who in ("model", "real"):
        assert d[who]["pixel"] > 0 and d[who]["features"] > 0
        assert 1 <= d[who]["family_reach"]["families_reached"] <= 6
    rnd = d["real_random"]
    assert len(rnd["draws"]) == div.RANDOM_FAMILY_DRAWS
    assert rnd["pixel"] == pytest.approx(np.mean([x["pixel"] for x in rnd["draws"]]))
    assert d["ratio_to_real_random"]["pixel"] == pytest.approx(d["model"]["pixel"] / rnd["pixel"])
    assert set(d["dark_photo"]) >= {"encoded", "night_photos", "day_photos", "random_style"}
    assert 0 < d["dark_photo"]["encoded"]["brightness"] < 1 and "cpu" in res
    assert Path(d["samples_png"]).is_file()


def test_independent_families_repeat_and_score_below_distinct_ones():
    # random styles are independent draws: two of one family are the same render (distance 0),
    # so the level they can reach is below K distinct families' (the measure's "real" row)
    distinct, independent = div.family_looks(40, 4, 0), div.family_looks(40, 4, 1, distinct=False)
    assert all(len(set(row)) == 4 for row in distinct)
    repeats = [i for i, row in enumerate(independent) if len(set(row)) < 4]
    assert repeats
    seeds = list(range(400_000, 400_040))
    _, photos = div.render_looks(seeds, independent, 32)
    i = repeats[0]
    row = independent[i]
    a, b = next((x, y) for x in range(4) for y in range(x + 1, 4) if row[x] == row[y])
    assert torch.equal(photos[i, a], photos[i, b])
    _, distinct_photos = div.render_looks(seeds, distinct, 32)
    assert div.pixel_diversity(photos) < div.pixel_diversity(distinct_photos)


def test_near_identical_share_counts_pairs_under_the_threshold():
    imgs = torch.zeros((2, 3, 3, 4, 4), dtype=torch.uint8)
    imgs[0, 2] = 255  # map 0: pairs (0,1) equal, (0,2) and (1,2) differ by 1
    imgs[1, 1] = 5    # map 1: every pair differs by at most 5/255 < 0.05
    assert div.near_identical_share(imgs) == pytest.approx(4 / 6)


def test_training_seeds_are_refused_whatever_the_floor(bench, monkeypatch):
    monkeypatch.setattr(bench, "MIN_UNSEEN_SEED", 0)
    with pytest.raises(SpadeganError):
        bench.seed_ranges([3_000], 100, 100)  # 3000..3199: the training run's val scenes
    assert bench.seed_ranges([3_200], 100, 100)[0].start == 3_200


def test_bad_style_count_is_refused_before_any_work(bench, tmp_path):
    with pytest.raises(SpadeganError):
        bench.main(["--out", str(tmp_path / "q"), "--styles", "7"])
    assert not (tmp_path / "q" / "data").exists()


def test_no_ema_scores_the_last_weights_in_both_parts(bench, monkeypatch, tmp_path):
    args = bench.build_parser().parse_args(["--checkpoint", "run/latest_net_G.pth", "--no_ema"])
    assert bench.model_flags(args) == ["--checkpoint", "run/latest_net_G.pth", "--no_ema", "--style_prior", "auto"]
    assert "--no_ema" not in bench.model_flags(bench.build_parser().parse_args([]))
    seen = {}

    class Stop(Exception):
        pass

    def fake_load(weights, opt, device, style, ema=True):
        seen["ema"] = ema
        raise Stop

    from spadegan.evaluation import evaluate, split  # evaluate first: it binds load_networks when imported
    assert evaluate.load_networks is split.load_networks
    monkeypatch.setattr(split, "load_networks", fake_load)
    args = bench.build_parser().parse_args(["--no_ema", "--out", str(tmp_path)])  # the built-in model's folder
    with pytest.raises(Stop):
        bench.diversity(args)
    assert seen == {"ema": False}
