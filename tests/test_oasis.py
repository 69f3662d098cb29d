"""OASIS pieces on hand-made inputs: the discriminator's shape, the class-balanced N+1 loss,
LabelMix; and (further down) training with --netD oasis: 3D noise, EMA, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spadegan.losses import class_balance_weights, labelmix_loss, labelmix_mask, oasis_loss
from spadegan.networks.discriminator import OASISDiscriminator, oasis_depth
from spadegan.options import parse


def _opt(crop: int = 64, ndf: int = 8, *extra: str):
    return parse(["--dataset_mode", "landscapes", "--crop_size", str(crop), "--ndf", str(ndf),
                  "--gpu_ids", "-1", *extra], train=True)


@pytest.mark.parametrize("crop,depth", [(256, 6), (128, 5), (64, 4), (32, 3)])
def test_discriminator_predicts_n_plus_1_classes_per_pixel(crop, depth):
    opt = _opt(crop)
    assert oasis_depth(crop) == depth
    D = OASISDiscriminator(opt)
    assert len(D.down) == depth and len(D.up) == depth
    out = D(torch.randn(2, 3, crop, crop))
    assert out.shape == (2, 1 + 10, crop, crop)  # landscapes: 10 classes, + "fake"


def test_discriminator_widths_are_the_papers_at_ndf_64():
    D = OASISDiscriminator(_opt(256, 64))
    assert [b.conv2.weight_orig.shape[0] for b in D.down] == [128, 128, 256, 256, 512, 512]
    assert [b.conv2.weight_orig.shape[0] for b in D.up] == [512, 256, 256, 128, 128, 64]
    assert D.up[1].conv1.weight_orig.shape[1] == 2 * 512  # skip connection concatenated


def test_class_balance_weights():
    # 2 images of 2x2: class 0 on 6 pixels, class 1 on 1, class 3 on 1 (class 2 absent)
    label = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [3, 0]]])
    w = class_balance_weights(label, 4)
    # N / (K n_c): 8 / (3 * 6), 8 / (3 * 1)
    assert torch.allclose(w[label == 0], torch.full((6,), 8 / 18))
    assert torch.allclose(w[label == 1], torch.tensor([8 / 3]))
    assert torch.allclose(w[label == 3], torch.tensor([8 / 3]))
    assert float(w.mean()) == pytest.approx(1.0)
    # dontcare (class 3) weighs nothing and does not count as present
    w = class_balance_weights(label, 4, ignore_index=3)
    assert float(w[label == 3]) == 0
    assert torch.allclose(w[label == 1], torch.tensor([8 / 2]))  # N counts every pixel, K the others


def test_n_plus_1_loss_values():
    label = torch.tensor([[[0, 1]]])  # one image, 1x2, classes 0 and 1
    logits = torch.zeros(1, 3, 1, 2)  # channels: fake, class 0, class 1
    logits[0, 1, 0, 0] = 2.0  # pixel 0 says class 0
    logits[0, 0, 0, 1] = 1.0  # pixel 1 says fake
    lse0 = math.log(math.exp(2) + 2)
    lse1 = math.log(math.exp(1) + 2)
    # real: targets class 0 -> channel 1, class 1 -> channel 2; weights 2 / (2 * 1) = 1 each
    want_real = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    assert float(oasis_loss(logits, label, True)) == pytest.approx(want_real, rel=1e-6)
    # fake: channel 0 everywhere, unweighted
    want_fake = ((lse0 - 0.0) + (lse1 - 1.0)) / 2
    assert float(oasis_loss(logits, label, False)) == pytest.approx(want_fake, rel=1e-6)
    # class balancing: class 1 on 1 of 4 pixels weighs 4 / (2 * 1) = 2, class 0 4 / (2 * 3)
    label4 = torch.tensor([[[0, 0, 0, 1]]])
    logits4 = torch.randn(1, 3, 1, 4)
    ce = F.cross_entropy(logits4, label4 + 1, reduction="none")[0, 0]
    want = float((ce[:3].sum() * (4 / 6) + ce[3] * 2) / 4)
    assert float(oasis_loss(logits4, label4, True)) == pytest.approx(want, rel=1e-6)


def test_labelmix_mask_takes_whole_classes_and_loss_is_zero_for_a_consistent_d():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (3, 16, 16), generator=g)
    mask = labelmix_mask(label, torch.randint(0, 2, (3, 6), generator=torch.Generator().manual_seed(1)))
    assert mask.shape == (3, 1, 16, 16)
    for b in range(3):
        for c in label[b].unique():
            vals = mask[b, 0][label[b] == c].unique()
            assert vals.numel() == 1 and float(vals) in (0.0, 1.0)
    assert 0 < float(mask.mean()) < 1  # both sources used for this seed
    # a discriminator acting per pixel is consistent: D(mix) = mix of D(real), D(fake)
    real, fake = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    mixed = mask * real + (1 - mask) * fake
    conv = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        assert float(labelmix_loss(mask, conv(mixed), conv(fake), conv(real))) < 1e-10
        d_mix = conv(mixed) + 1.0  # off by 1 everywhere
        assert float(labelmix_loss(mask, d_mix, conv(fake), conv(real))) == pytest.approx(1.0, rel=1e-5)
