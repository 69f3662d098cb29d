"""Training losses: GAN (hinge | original | ls | w), feature matching, VGG perceptual, KLD;
OASIS' class-balanced N+1 loss and LabelMix (the official per-class mask and spadegan's
per-image variant)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import SpadeganError


class GANLoss(nn.Module):
    """GAN loss over a multiscale discriminator's output (lists of per-scale features).

    The last tensor of each scale is the patch prediction; per-scale losses are averaged
    per sample and then over the scales, as in the official implementation.
    """

    def __init__(self, gan_mode: str = "hinge", target_real_label: float = 1.0,
                 target_fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in ("hinge", "original", "ls", "w"):
            raise SpadeganError(f"unknown --gan_mode {gan_mode!r} (hinge, original, ls, w)")
        self.gan_mode = gan_mode
        self.real_label, self.fake_label = target_real_label, target_fake_label

    def _loss(self, x: torch.Tensor, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        if self.gan_mode == "original":
            t = torch.full_like(x, self.real_label if target_is_real else self.fake_label)
            return F.binary_cross_entropy_with_logits(x, t)
        if self.gan_mode == "ls":
            t = torch.full_like(x, self.real_label if target_is_real else self.fake_label)
            return F.mse_loss(x, t)
        if self.gan_mode == "hinge":
            if for_discriminator:
                m = torch.clamp(x - 1, max=0) if target_is_real else torch.clamp(-x - 1, max=0)
                return -m.mean()
            if not target_is_real:
                raise ValueError("the generator's hinge loss aims for real")
            return -x.mean()
        return -x.mean() if target_is_real else x.mean()  # wasserstein

    def forward(self, pred, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        if not isinstance(pred, list):
            return self._loss(pred, target_is_real, for_discriminator)
        total = 0.0
        for p in pred:
            p = p[-1] if isinstance(p, list) else p
            loss = self._loss(p, target_is_real, for_discriminator)
            bs = 1 if loss.dim() == 0 else loss.size(0)
            total = total + loss.view(bs, -1).mean(dim=1)
        return total / len(pred)


def feature_matching_loss(pred_fake, pred_real, lambda_feat: float) -> torch.Tensor:
    """L1 between D's intermediate features of fake and real, averaged over scales."""
    num_D = len(pred_fake)
    loss = pred_fake[0][0].new_zeros(1)
    for i in range(num_D):
        for j in range(len(pred_fake[i]) - 1):  # the last output is the prediction
            loss = loss + F.l1_loss(pred_fake[i][j], pred_real[i][j].detach()) * lambda_feat / num_D
    return loss


class VGGLoss(nn.Module):
    """Weighted L1 between VGG19 relu{1..5}_1 features (weights 1/32 .. 1)."""

    weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.vgg = vgg.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.vgg(x), self.vgg(y)
        loss = 0.0
        for w, a, b in zip(self.weights, fx, fy):
            loss = loss + w * F.l1_loss(a, b.detach())
        return loss


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed (the official scale; times lambda_kld outside)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


# ---- OASIS (Schönfeld et al., ICLR 2021): N+1-class segmentation loss and LabelMix --------------
def class_balance_weights(label: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Per-pixel weights (B, H, W) inverse to the batch's class frequencies.

    Class c weighs N / (K * n_c): N the number of pixels (all of them, as in OASIS), n_c
    those of class c, K the number of classes present (dontcare not counted). Every present
    class carries the same total weight, and without dontcare the weights average to 1;
    `ignore_index` (dontcare) weighs 0.
    """
    counts = torch.bincount(label.reshape(-1), minlength=num_classes).to(torch.float32)
    if ignore_index is not None:
        counts[ignore_index] = 0
    present = int((counts > 0).sum())
    coef = torch.where(counts > 0, label.numel() / (max(present, 1) * counts.clamp(min=1)),
                       torch.zeros_like(counts))
    return coef[label]


def oasis_loss(logits: torch.Tensor, label: torch.Tensor, target_is_real: bool,
               ignore_index: int | None = None) -> torch.Tensor:
    """The class-balanced N+1 cross-entropy of an OASIS discriminator's logits.

    `logits`: (B, 1 + N, H, W), channel 0 "fake", channel 1 + c class c; `label`: (B, H, W)
    class ids. Real targets are the classes, weighted by `class_balance_weights`; fake
    targets are channel 0, unweighted. Both are averaged over all pixels.
    """
    logits = logits.float()
    if not target_is_real:
        return F.cross_entropy(logits, torch.zeros_like(label))
    weights = class_balance_weights(label, logits.shape[1] - 1, ignore_index)
    return (F.cross_entropy(logits, label + 1, reduction="none") * weights).mean()


def labelmix_classes(label: torch.Tensor) -> torch.Tensor:
    """The classes the official LabelMix draws a coin for: those present anywhere in the batch
    `label` (B, H, W), ascending (`torch.unique`)."""
    return torch.unique(label)


def labelmix_class_mask(label: torch.Tensor, coins: torch.Tensor) -> torch.Tensor:
    """The official LabelMix mask (B, 1, H, W) float 0/1 (1 = real): one coin per class of
    `labelmix_classes(label)` (`coins`, same length and order), shared by the whole batch.

    The official `generate_labelmix` relabels in place, class by class in ascending order
    (`target_map[target_map == c] = coin`): once class 0 has become 1, class 1's relabeling
    takes its pixels along, so class 0 ends with class 1's coin whenever its own coin is 1 and
    class 1 is present. This keeps that behaviour; no other class is affected."""
    classes = labelmix_classes(label)
    coins = coins.to(label.device).long().reshape(-1)
    if coins.numel() != classes.numel():
        raise ValueError(f"{classes.numel()} classes in the batch, {coins.numel()} LabelMix coins")
    table = torch.zeros(int(classes.max()) + 1 if classes.numel() else 1, dtype=torch.long, device=label.device)
    table[classes] = coins
    if classes.numel() > 1 and int(classes[0]) == 0 and int(classes[1]) == 1 and int(coins[0]) == 1:
        table[0] = table[1]
    return table[label].unsqueeze(1).float()


def labelmix_mask(label: torch.Tensor, coins: torch.Tensor) -> torch.Tensor:
    """spadegan's per-image LabelMix (--labelmix_per_image): (B, 1, H, W) float 0/1, each
    class of each image taken wholly from the real (1) or the fake (0) image, as `coins`
    (B, num_classes) of 0/1 (fair coins, drawn by the caller) say."""
    b = label.shape[0]
    picked = torch.gather(coins.to(label.device).long(), 1, label.reshape(b, -1))
    return picked.view(b, 1, *label.shape[1:]).float()


def labelmix_loss(mask: torch.Tensor, d_mixed: torch.Tensor, d_fake: torch.Tensor,
                  d_real: torch.Tensor) -> torch.Tensor:
    """LabelMix consistency: D's logits on the mixed image should be the mix of its logits
    on the real and the fake image (mean squared error over logits and pixels)."""
    target = mask * d_real.float() + (1 - mask) * d_fake.float()
    return F.mse_loss(d_mixed.float(), target)
