"""The sparse SPADE (label maps as codes, gamma/beta by lookup) against the dense reference.

Same function, same gradients: a SPADE layer and a whole generator are run on the one-hot
semantics tensor (dense) and on its `LabelCodes` (sparse), and their outputs and the
gradients of every parameter and of the input are compared, for kernel sizes 1, 3 and 5,
with and without instance edges and dontcare, batch > 1, on blocky maps, on worst-case
maps (regions of 1-2 px), on a single-class map and on maps whose boundary band is sparse
enough for the lookup path (and not, for the dense fallback).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spadegan import networks
from spadegan.data.semantics import to_semantics
from spadegan.errors import SpadeganError
from spadegan.layers import SPADE
from spadegan.layers import label_codes
from spadegan.layers import spade as spade_module
from spadegan.layers.spade import sum_rows
from spadegan.layers.label_codes import LabelCodes, instance_edges, label_conv, unique_rows
from spadegan.options import parse


class _Opt:
    def __init__(self, label_nc: int, dontcare: bool, instance: bool):
        self.label_nc, self.contain_dontcare_label, self.no_instance = label_nc, dontcare, not instance


def blocky(shape: tuple[int, int, int], cell: int, values: int, seed: int) -> torch.Tensor:
    """(B, H, W) long map of cell x cell blocks of random values."""
    b, h, w = shape
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, values, (b, 1, max(1, h // cell), max(1, w // cell)), generator=g).float()
    return F.interpolate(small, size=(h, w), mode="nearest")[:, 0].long()


def maps(kind: str, shape: tuple[int, int, int], nc: int, seed: int = 0) -> torch.Tensor:
    if kind == "single":
        return torch.full(shape, nc - 1, dtype=torch.long)
    if kind == "worst":  # regions of 1-2 px: every pixel is near a boundary
        return torch.maximum(blocky(shape, 1, nc, seed), blocky(shape, 2, nc, seed + 1))
    if kind == "scene":  # a few large regions: a narrow boundary band (the lookup path)
        b, h, w = shape
        y = torch.arange(h).view(1, -1, 1).expand(b, h, w)
        x = torch.arange(w).view(1, 1, -1).expand(b, h, w)
        lab = (y > h // 3).long() + (x > (w // 2 + y // 4)).long() * 2
        return (lab + torch.arange(b).view(-1, 1, 1)) % nc
    return blocky(shape, 8, nc, seed)


def _compare_grads(ref: dict, got: dict, tol: float = 1e-4) -> None:
    assert ref.keys() == got.keys()
    scale = max(float(v.norm()) for v in ref.values())
    for k in ref:
        err = float((ref[k] - got[k]).norm())
        assert err <= tol * float(ref[k].norm()) + 1e-6 * scale, f"gradient of {k}: {err:.3g}"


def _spade_run(layer: SPADE, x: torch.Tensor, seg, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x, seg, "sparse" if isinstance(seg, LabelCodes) else "dense")
    (out * target).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    grads["input"] = x.grad.clone()
    return out.detach(), grads


def _force_path(monkeypatch, path: str) -> list:
    """Make SPADE layers take the lookup path (band or not; "lookup": tables gathered inside
    `_GatheredModulation`, "lookup_maps": gathered maps and addcmul) or, where there is a
    band, the dense fallback; returns the list that records each lookup-path call."""
    lookup = path.startswith("lookup")
    monkeypatch.setattr(spade_module, "SPARSE_THRESHOLD", float("inf") if lookup else float("-inf"))
    monkeypatch.setattr(spade_module, "GATHERED_MODULATION_MIN", 0 if path == "lookup" else float("inf"))
    calls = []
    orig = SPADE._modulation_lookup
    monkeypatch.setattr(SPADE, "_modulation_lookup", lambda *a, **k: calls.append(1) or orig(*a, **k))
    return calls


@pytest.mark.parametrize("ks", [1, 3, 5])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "instance+dontcare"])
@pytest.mark.parametrize("kind", ["blocks", "worst", "single", "scene"])
@pytest.mark.parametrize("path", ["lookup", "lookup_maps", "dense"])
def test_spade_layer_matches_dense(ks, extras, kind, path, monkeypatch):
    """Both sparse paths, forced, against the dense layer (the lookup path with a boundary band
    wherever the map has one, including worst-case maps where every pixel is in it)."""
    calls = _force_path(monkeypatch, path)
    torch.manual_seed(ks)
    opt = _Opt(6, dontcare=extras, instance=extras)
    L = opt.label_nc + int(extras)
    b, c, h, w = 2, 5, 32, 32
    label = maps(kind, (b, h, w), L)
    inst = blocky((b, h, w), 8, 3, seed=5).float() if extras else None
    sem = to_semantics(label[:, None], None if inst is None else inst[:, None], opt)
    layer = SPADE(f"spadebatch{ks}x{ks}", c, sem.shape[1])
    with torch.no_grad():  # unit-scale weights, so gamma and beta matter
        for p in layer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(b, c, 16, 16)  # the label map is resized to x, as in the generator
    target = torch.randn(b, c, 16, 16)
    codes = LabelCodes.from_label(label, inst, opt)
    ref_out, ref_g = _spade_run(layer, x, sem, target)
    out, g = _spade_run(layer, x, codes, target)
    has_band = codes.at(16, 16).band_plan(ks // 2, 1).bags.numel() > 0
    assert calls == ([1] if path.startswith("lookup") or not has_band else [])
    assert has_band == (ks > 1)  # the image border is in the band too
    assert torch.allclose(out, ref_out, atol=1e-4 * float(ref_out.abs().max()), rtol=0)
    _compare_grads(ref_g, g)


@pytest.mark.parametrize("ks", [1, 3])
@pytest.mark.parametrize("per_class", [False, True], ids=["noise per image", "noise per class"])
def test_spade_layer_with_3d_noise_matches_dense(ks, per_class, monkeypatch):
    """OASIS' 3D noise: noise channels after the semantics, constant over a class region
    (per image and class: hidden windows and band rows are not shared across images)."""
    calls = _force_path(monkeypatch, "lookup")
    torch.manual_seed(ks)
    opt = _Opt(5, dontcare=False, instance=True)
    b, c, z = 2, 4, 3
    label = maps("scene", (b, 64, 64), 5)
    inst = blocky((b, 64, 64), 32, 2, seed=5).float()
    noise = torch.randn(b, 5, z) if per_class else torch.randn(b, z)
    codes = LabelCodes.from_label(label, inst, opt).with_noise(noise)
    sem = codes.semantics()
    assert sem.shape[1] == 5 + 1 + z
    layer = SPADE(f"spadebatch{ks}x{ks}", c, sem.shape[1])
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    x, target = torch.randn(b, c, 64, 64), torch.randn(b, c, 64, 64)
    ref_out, ref_g = _spade_run(layer, x, sem, target)
    out, g = _spade_run(layer, x, codes, target)
    assert calls == [1] and (ks == 1 or codes.at(64, 64).band_plan(1, b).bags.numel())
    assert torch.allclose(out, ref_out, atol=1e-4 * float(ref_out.abs().max()), rtol=0)
    _compare_grads(ref_g, g)


@pytest.mark.parametrize("ks", [1, 3])
def test_spade_layer_under_bf16_autocast_matches_dense(ks, monkeypatch):
    """`--amp` on an AMX CPU: the lookup path's mixed bf16 (products) and fp32 (lookups)
    pieces combine, and agree with the dense layer under the same autocast to bf16 rounding."""
    calls = _force_path(monkeypatch, "lookup")
    torch.manual_seed(ks)
    opt = _Opt(5, dontcare=False, instance=False)
    label = maps("scene", (2, 32, 32), 5)
    codes = LabelCodes.from_label(label, None, opt)
    assert ks == 1 or codes.at(32, 32).band_plan(1, 1).bags.numel()  # the lookup path with a band
    layer = SPADE(f"spadebatch{ks}x{ks}", 4, 5)
    x, target = torch.randn(2, 4, 32, 32), torch.randn(2, 4, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (ref_out, _), (out, _) = (_spade_run(layer, x, seg, target) for seg in (codes.semantics(), codes))
    assert calls == [1]
    assert torch.allclose(out.float(), ref_out.float(), atol=0.05 * float(ref_out.float().abs().max()), rtol=0)


def test_lookup_path_and_dense_fallback_both_taken():
    """The automatic choice: the scene map runs the boundary-band path at 64 px (a few
    distinct windows repeat along its boundaries); the worst case, where nearly every
    window is distinct, falls back to dense."""
    opt = _Opt(5, dontcare=False, instance=False)
    scene = LabelCodes.from_label(maps("scene", (1, 64, 64), 5), None, opt)
    worst = LabelCodes.from_label(maps("worst", (1, 64, 64), 5), None, opt)
    assert 0 < scene.at(64, 64).boundary_fraction(1) < 0.3
    assert scene.at(64, 64).hidden_windows(1, 1)[0].numel() < 0.05 * 64 * 64
    assert worst.at(64, 64).boundary_fraction(1) == 1.0
    assert worst.at(64, 64).hidden_windows(1, 1)[0].numel() > 0.6 * 64 * 64
    layer = SPADE("spadeinstance3x3", 4, 5)
    calls = []
    orig = layer._modulation_lookup
    layer._modulation_lookup = lambda *a, **k: calls.append(1) or orig(*a, **k)
    layer.modulation_sparse(scene, 64, 64)
    assert calls == [1]
    layer.modulation_sparse(worst, 64, 64)
    assert calls == [1]


def _generator(norm_G: str, instance: bool, use_vae: bool = False, dtype=torch.float64):
    argv = ["--dataset_mode", "custom", "--label_dir", ".", "--image_dir", ".", "--label_nc", "7",
            "--contain_dontcare_label", "--ngf", "8", "--crop_size", "64", "--norm_G", norm_G,
            "--gpu_ids", "-1", "--no_vgg_loss"]
    argv += ["--instance_dir", "."] if instance else ["--no_instance"]
    if use_vae:
        argv.append("--use_vae")
    opt = parse(argv, train=True)
    torch.manual_seed(0)
    G = networks.define_G(opt)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if "mlp" in name or name.startswith("fc"):
                p.normal_(0, 0.3)
    return opt, G.to(dtype).train()


@pytest.mark.parametrize("norm_G,instance,use_vae", [
    ("spectralspadesyncbatch3x3", True, False),
    ("spectralspadesyncbatch1x1", False, True),
    ("spadeinstance5x5", False, False),
])
def test_generator_matches_dense_in_float64(norm_G, instance, use_vae):
    """Whole generator, forward and backward: in float64 the two agree to ~1e-12, so the
    per-parameter check holds even for gradients that are zero mathematically (biases in
    front of batch norm), where float32 rounding noise is all there is."""
    opt, G = _generator(norm_G, instance, use_vae)
    label = torch.maximum(maps("scene", (2, 64, 64), 8), blocky((2, 64, 64), 16, 8, 3))
    inst = blocky((2, 64, 64), 16, 3, seed=4).double() if instance else None
    z = torch.randn(2, opt.z_dim, dtype=torch.float64) if use_vae else None
    target = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    state = {k: v.clone() for k, v in G.state_dict().items()}
    results = []
    for impl, seg in (("dense", to_semantics(label[:, None], None if inst is None else inst[:, None], opt).double()),
                      ("sparse", LabelCodes.from_label(label, inst, opt))):
        G.spade_impl = impl
        G.load_state_dict(state)  # the same spectral-norm vectors and batch statistics
        G.zero_grad()
        out = G(seg, z=z)
        (out * target).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in G.named_parameters()}))
    (ref_out, ref_g), (out, g) = results
    assert float((out - ref_out).abs().max()) < 1e-10
    _compare_grads(ref_g, g, tol=1e-8)


@pytest.mark.parametrize("norm_G", ["spectralspadesyncbatch3x3", "spectralspadesyncbatch1x1"])
def test_sparse_generator_feeds_its_convolutions_contiguous_maps(norm_G, monkeypatch):
    """Maps made from lookups (rows per pixel) are laid out as contiguous NCHW: a channels-last
    or code-major activation makes every convolution copy its input or (channels last) its
    weights, forward and backward, which cost the sparse path ~0.7 s per ADE20K iteration."""
    opt, G = _generator(norm_G, instance=False, dtype=torch.float32)
    codes = LabelCodes.from_label(maps("scene", (2, 64, 64), 8), None, opt)
    layouts = []
    conv2d = F.conv2d

    def recording_conv2d(x, *args, **kwargs):
        layouts.append(x.is_contiguous())
        return conv2d(x, *args, **kwargs)
    monkeypatch.setattr(F, "conv2d", recording_conv2d)
    G.spade_impl = "sparse"
    G(codes).sum().backward()
    assert len(layouts) > 10 and all(layouts), layouts


@pytest.mark.parametrize("groups", [1, 2], ids=["shared constants", "constants per image"])
def test_row_sums_by_one_hot_product_and_by_scatter_match_index_add(groups, monkeypatch):
    """The backward of the sparse SPADE's gathers: every row's pixels summed, the constants'
    rows by the one-hot product, the band's by index_add, or all by the scatter fallback."""
    opt = _Opt(6, dontcare=True, instance=True)
    label, inst = maps("scene", (2, 32, 32), 7), blocky((2, 32, 32), 8, 3, seed=5).float()
    values = torch.randn(2, 5, 32, 32, dtype=torch.float64)
    level = LabelCodes.from_label(label, inst, opt).at(32, 32)
    rows = level.band_plan(1, groups).rows
    num_rows = int(rows.max()) + 1
    ref = torch.zeros(num_rows, 5, dtype=torch.float64).index_add_(0, rows, values.permute(0, 2, 3, 1).reshape(-1, 5))
    sums = level.row_sums(1, groups)
    assert sums is not None and sums.band_pixels.numel() and sums.one_hot.sum() == rows.numel() - sums.band_pixels.numel()
    assert torch.allclose(sum_rows(values, level, 1, groups, num_rows), ref, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(label_codes, "ROW_SUMS_MAX_ROWS", 0)
    level = LabelCodes.from_label(label, inst, opt).at(32, 32)
    assert level.row_sums(1, groups) is None
    assert torch.allclose(sum_rows(values, level, 1, groups, num_rows), ref, rtol=1e-12, atol=1e-12)


def test_unique_rows_finds_the_distinct_rows_and_their_first_occurrence():
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 3, (500, 4), generator=g) * torch.tensor([1, 1000, 1, 10 ** 6])
    first, inverse = unique_rows(rows)
    ref, ref_inverse = torch.unique(rows, dim=0, return_inverse=True)
    assert first.numel() == ref.shape[0] == len({tuple(r) for r in rows.tolist()})
    assert torch.equal(rows[first][inverse], rows)  # every row is its distinct row
    assert torch.equal(ref_inverse.unique(return_counts=True)[1].sort()[0],
                       inverse.unique(return_counts=True)[1].sort()[0])
    for d in range(first.numel()):  # the first occurrence
        assert int((inverse == d).nonzero()[0]) == int(first[d])


def test_label_conv_and_semantics_match_the_one_hot_tensor():
    opt = _Opt(4, dontcare=True, instance=True)
    label = blocky((2, 12, 10), 3, 5, seed=1)
    inst = blocky((2, 12, 10), 4, 2, seed=2)
    codes = LabelCodes.from_label(label, inst, opt)
    sem = to_semantics(label[:, None], inst[:, None].float(), opt)
    assert torch.equal(codes.semantics(), sem)
    assert torch.equal(instance_edges(inst).float(), sem[:, -1])
    weight, bias = torch.randn(7, sem.shape[1], 3, 3), torch.randn(7)
    got = label_conv(codes.at(12, 10), weight, bias, 5, True).view(2, 12, 10, 7).permute(0, 3, 1, 2)
    assert torch.allclose(got, F.conv2d(sem, weight, bias, padding=1), atol=1e-5)
    small = codes.at(6, 5)  # resized as F.interpolate resizes the one-hot tensor
    assert torch.equal(LabelCodes(small.code, 5, True).semantics(),
                       F.interpolate(sem, size=(6, 5), mode="nearest"))


def test_bad_ids_and_missing_instance_are_clear_errors():
    opt = _Opt(4, dontcare=False, instance=False)
    with pytest.raises(SpadeganError, match=r"label id\(s\) 4 \(16 px\) not known to this model, which accepts "
                                            r"0..3 \(label_nc=4, no dontcare class\)"):
        LabelCodes.from_label(torch.full((1, 4, 4), 4), None, opt)
    with pytest.raises(SpadeganError, match="needs an instance map"):
        LabelCodes.from_label(torch.zeros(1, 4, 4), None, _Opt(4, False, True))


@pytest.mark.parametrize("instance", [False, True], ids=["plain", "instance edges"])
def test_discriminator_from_codes_matches_the_one_hot_input_in_float64(instance):
    """D's first conv by lookups of the codes and the image's own conv, and the coarser
    scales from the average-pooled one-hot map built from the codes: the same features and
    gradients as D on cat(semantics, image), for three scales and an odd-sized map."""
    from spadegan.networks.discriminator import LabelAndImage, MultiscaleDiscriminator, pooled_one_hot
    argv = ["--dataset_mode", "custom", "--label_dir", ".", "--image_dir", ".", "--label_nc", "5",
            "--contain_dontcare_label", "--ndf", "8", "--gpu_ids", "-1", "--crop_size", "32", "--num_D", "3"]
    argv += ["--instance_dir", "."] if instance else ["--no_instance"]
    opt = parse(argv, train=True)
    torch.manual_seed(0)
    D = networks.define_D(opt).double()
    state = {k: v.clone() for k, v in D.state_dict().items()}
    D_codes = networks.define_D(opt, reads_codes=True).double()  # the same weights, read from codes
    label = blocky((2, 31, 33), 4, 6, seed=1)
    inst = blocky((2, 31, 33), 8, 3, seed=2) if instance else None
    codes = LabelCodes.from_label(label, inst, opt)
    sem = codes.semantics(torch.float64)
    assert torch.allclose(pooled_one_hot(codes, torch.float64), MultiscaleDiscriminator.downsample(sem), atol=1e-15)
    results = []
    for D, make in ((D, lambda img: torch.cat([sem, img], 1)), (D_codes, lambda img: LabelAndImage(img, codes))):
        D.load_state_dict(state)  # the same spectral-norm vectors
        D.zero_grad()
        image = torch.randn(2, 3, 31, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        image.requires_grad_(True)
        out = D(make(image))
        sum((t * t).sum() for scale in out for t in scale).backward()
        grads = {n: p.grad.clone() for n, p in D.named_parameters()}
        grads["image"] = image.grad.clone()
        results.append(([t.detach() for scale in out for t in scale], grads))
    (ref_out, ref_g), (out, g) = results
    assert len(ref_out) == len(out) == 3 * (opt.n_layers_D + 1)
    assert max(float((a - b).abs().max()) for a, b in zip(ref_out, out)) < 1e-10
    _compare_grads(ref_g, g, tol=1e-10)


@pytest.mark.parametrize("label_nc,ndf,lookup", [(150, 32, True), (12, 8, False), (10, 16, False)])
def test_sparse_training_reads_d_input_as_codes_only_where_that_pays(label_nc, ndf, lookup):
    """D's first conv by lookup costs about the same whatever the label count, its dense conv
    grows with it: many classes (ADE20K) read codes, few (the landscapes) the one-hot tensor;
    both give D's outputs on cat(semantics, image)."""
    from spadegan.networks.discriminator import LabelAndImage, first_conv_lookup_pays
    from spadegan.train.model import Pix2PixModel
    argv = ["--dataset_mode", "custom", "--label_dir", ".", "--image_dir", ".", "--label_nc", str(label_nc),
            "--contain_dontcare_label", "--no_instance", "--ngf", "8", "--ndf", str(ndf), "--crop_size", "32",
            "--gpu_ids", "-1", "--no_vgg_loss", "--spade_impl", "sparse"]
    opt = parse(argv, train=True)
    assert first_conv_lookup_pays(label_nc + 1, ndf) == lookup
    torch.manual_seed(0)
    model = Pix2PixModel(opt)
    label = blocky((1, 32, 32), 8, label_nc + 1, seed=1).float()[:, None]
    codes, real = model.preprocess_input({"label": label, "image": torch.rand(1, 3, 32, 32) * 2 - 1,
                                          "instance": torch.zeros(())}, torch.device("cpu"))
    seen = []
    model.netD.eval()  # no power iteration between the two calls
    model.netD.register_forward_pre_hook(lambda m, inp: seen.append(isinstance(inp[0], LabelAndImage)))
    fake = torch.rand_like(real)
    pred_fake, _ = model.discriminate(codes, fake, real, model.netD)
    assert seen == [lookup] and model.netD.reads_codes == lookup
    dense_D = networks.define_D(opt).eval()
    dense_D.load_state_dict(model.netD.state_dict())
    ref = dense_D(torch.cat([codes.semantics(), fake], 1))
    assert torch.allclose(pred_fake[0][-1], ref[0][-1], atol=1e-5)


def test_implementation_is_chosen_explicitly_and_a_mismatched_input_is_an_error(monkeypatch):
    """The SPADE implementation is the network's (define_G(impl=...), recorded as spade_impl),
    not the input's type: the other form is a SpadeganError, and spectral norm's order of
    operations follows the implementation (the dense reference keeps the official one)."""
    from spadegan.layers import blocks
    opt, _ = _generator("spectralspadesyncbatch3x3", instance=False)
    label = maps("scene", (1, 64, 64), 8)
    codes, sem = LabelCodes.from_label(label, None, opt), to_semantics(label[:, None], None, opt)
    dense, sparse = networks.define_G(opt, impl="dense"), networks.define_G(opt, impl="sparse")
    # --spade_impl auto depends on the device, which building does not know: the dense reference
    assert (dense.spade_impl, sparse.spade_impl, networks.define_G(opt).spade_impl) == ("dense", "sparse", "dense")
    assert networks.define_G(opt.replace(spade_impl="sparse")).spade_impl == "sparse"
    with pytest.raises(SpadeganError, match="dense SPADE .* not LabelCodes"):
        dense(codes)
    with pytest.raises(SpadeganError, match="sparse SPADE .* not Tensor"):
        sparse(sem)
    with pytest.raises(SpadeganError, match="not LabelCodes"):
        SPADE("spadebatch3x3", 4, 8)(torch.randn(1, 4, 8, 8), codes)
    with pytest.raises(SpadeganError, match="one of dense, sparse, not 'fast'"):
        networks.define_G(opt, impl="fast")
    with pytest.raises(SpadeganError, match="impl=.auto. depends on the device .*impl=spade_impl_for"):
        networks.define_G(opt, impl="auto")
    scaled = []
    orig = blocks.conv2d_output_scaled
    monkeypatch.setattr(blocks, "conv2d_output_scaled", lambda conv, x: scaled.append(1) or orig(conv, x))
    dense.train()(sem)
    assert scaled == []  # the official order: conv(x) with the normalised weight
    sparse.train()(codes)
    assert len(scaled) == 2 * 7 + 4  # every conv of every block (and conv_s in up_0..up_3, where fin != fout)


def test_discriminator_input_form_is_recorded_when_built_and_a_mismatch_is_an_error():
    """D's input form is its own (define_D(opt, reads_codes=...), recorded as D.reads_codes on
    every scale), not the input's type: the other form is a SpadeganError naming both."""
    from spadegan.networks.discriminator import LabelAndImage
    argv = ["--dataset_mode", "custom", "--label_dir", ".", "--image_dir", ".", "--label_nc", "5",
            "--no_instance", "--ndf", "8", "--crop_size", "32", "--gpu_ids", "-1"]
    opt = parse(argv, train=True)
    codes = LabelCodes.from_label(blocky((1, 32, 32), 8, 5, seed=1), None, opt)
    image = torch.rand(1, 3, 32, 32)
    dense, lookup = networks.define_D(opt), networks.define_D(opt, reads_codes=True)
    assert not dense.reads_codes and lookup.reads_codes
    assert all(d.reads_codes for d in lookup.children()) and not any(d.reads_codes for d in dense.children())
    with pytest.raises(SpadeganError, match="reads_codes=False: it reads cat.* not LabelAndImage"):
        dense(LabelAndImage(image, codes))
    with pytest.raises(SpadeganError, match="reads_codes=True: it reads LabelAndImage.* not Tensor"):
        lookup(torch.cat([codes.semantics(), image], 1))
    with pytest.raises(SpadeganError, match="reads_codes=False"):  # one scale on its own too
        next(dense.children())(LabelAndImage(image, codes))
    assert len(dense(torch.cat([codes.semantics(), image], 1))) == len(lookup(LabelAndImage(image, codes)))
    with pytest.raises(SpadeganError, match="multiscale discriminator of class ids, not --netD oasis"):
        networks.define_D(opt.replace(netD="oasis"), reads_codes=True)


def test_training_model_decides_the_implementation_once_when_built():
    from spadegan.train.model import Pix2PixModel
    argv = ["--dataset_mode", "custom", "--label_dir", ".", "--image_dir", ".", "--label_nc", "5",
            "--no_instance", "--ngf", "8", "--ndf", "8", "--crop_size", "32", "--gpu_ids", "-1", "--no_vgg_loss"]
    opt = parse(argv, train=True)  # --spade_impl auto: sparse on the CPU, dense on CUDA
    cpu, cuda = Pix2PixModel(opt), Pix2PixModel(opt, device=torch.device("cuda"))
    assert (cpu.sparse, cpu.netG.spade_impl) == (True, "sparse")
    assert (cuda.sparse, cuda.netG.spade_impl) == (False, "dense")
    dense = Pix2PixModel(opt.replace(spade_impl="dense"))
    assert (dense.sparse, dense.netG.spade_impl) == (False, "dense")
    label = blocky((1, 32, 32), 8, 5, seed=1).float()[:, None]
    codes, _ = cuda.preprocess_input({"label": label, "image": torch.rand(1, 3, 32, 32), "instance": torch.zeros(())},
                                     torch.device("cpu"))
    assert not cuda.sparse and isinstance(cuda.g_input(codes), torch.Tensor)  # preprocessing changes nothing


@pytest.mark.parametrize("ks", [3, 5])
def test_band_values_in_chunks_of_taps_match_one_product(ks):
    """`band_values(max_bytes=...)` (the engine's bound on the per-tap product) sums the same
    per-tap rows as the single product, whatever the chunk."""
    from spadegan.layers.spade import band_values
    opt = _Opt(6, dontcare=True, instance=True)
    level = LabelCodes.from_label(maps("scene", (2, 32, 32), 7), blocky((2, 32, 32), 8, 3, seed=5).float(),
                                  opt).at(32, 32)
    plan = level.band_plan(ks // 2, 1)
    assert plan.bags.numel()
    g = torch.Generator().manual_seed(0)
    hidden_const = torch.randn(level.V, 16, generator=g, dtype=torch.float64)
    hidden_q = torch.randn(plan.hidden_pixels.numel(), 16, generator=g, dtype=torch.float64)
    w_taps = torch.randn(16, ks * ks, 10, generator=g, dtype=torch.float64)
    bias = torch.randn(10, generator=g, dtype=torch.float64)
    whole = band_values(plan, hidden_const, hidden_q, w_taps, bias)
    rows = plan.const_rows.numel() + plan.hidden_pixels.numel() + 1
    for taps in (1, 2, ks * ks - 1):
        part = band_values(plan, hidden_const, hidden_q, w_taps, bias, max_bytes=taps * rows * 10 * 8)
        assert torch.allclose(part, whole, rtol=1e-12, atol=1e-12), taps
