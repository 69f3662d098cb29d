"""Spectral normalisation that stores `weight_orig`, `weight_u`, `weight_v`.

The state_dict layout (and the maths) is that of `torch.nn.utils.spectral_norm`, which the
official SPADE checkpoints were saved with: the raw weight is the parameter `weight_orig`,
the power-iteration vectors are buffers `weight_u` (out) and `weight_v` (in), and the weight
used by the layer is `weight_orig / sigma`, sigma = u . (W v). In train mode each forward
first runs one power iteration (updating u and v in place); in eval mode u and v are used
as stored. Written here (not the deprecated torch helper) so the engine can fold it and so
the behaviour is pinned by our own tests.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_EPS = 1e-12


class _SpectralNormHook:
    """Forward pre-hook that sets `module.weight` from weight_orig, u and v."""

    def __init__(self, dim: int, n_power_iterations: int):
        self.dim = dim
        self.n_power_iterations = n_power_iterations

    def weight_matrix(self, w: torch.Tensor) -> torch.Tensor:
        if self.dim != 0:
            w = w.transpose(0, self.dim)
        return w.reshape(w.size(0), -1)

    def sigma(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        """sigma = u . (W v) (a 0-d tensor, differentiable in weight_orig), after one power
        iteration when `do_power_iteration`."""
        mat = self.weight_matrix(module.weight_orig)
        u, v = module.weight_u, module.weight_v
        if do_power_iteration:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(torch.mv(mat.t(), u), dim=0, eps=_EPS))
                    u.copy_(F.normalize(torch.mv(mat, v), dim=0, eps=_EPS))
            # the clones keep autograd from seeing the next in-place update
            u, v = u.clone(memory_format=torch.contiguous_format), v.clone(memory_format=torch.contiguous_format)
        return torch.dot(u, torch.mv(mat, v))

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        return module.weight_orig / self.sigma(module, do_power_iteration)

    def __call__(self, module: nn.Module, inputs) -> None:
        # a plain attribute, recomputed every forward (like torch's hook)
        object.__setattr__(module, "weight", self.compute_weight(module, module.training))


def spectral_norm(module: nn.Module, n_power_iterations: int = 1, dim: int | None = None) -> nn.Module:
    """Add spectral normalisation to `module.weight` in place and return the module."""
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    hook = _SpectralNormHook(dim, n_power_iterations)
    weight = module.weight
    with torch.no_grad():
        mat = hook.weight_matrix(weight)
        h, w = mat.shape
        u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=_EPS)
        v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=_EPS)
    del module._parameters["weight"]
    module.register_parameter("weight_orig", weight)
    object.__setattr__(module, "weight", weight.data)
    module.register_buffer("weight_u", u)
    module.register_buffer("weight_v", v)
    module._spectral_norm_hook = module.register_forward_pre_hook(hook)
    module._spectral_norm = hook
    return module


def has_spectral_norm(module: nn.Module) -> bool:
    return hasattr(module, "_spectral_norm")


def spectral_weight(module: nn.Module) -> torch.Tensor:
    """The eval-mode normalised weight (no power iteration), detached."""
    with torch.no_grad():
        return module._spectral_norm.compute_weight(module, do_power_iteration=False).detach()


def conv2d_output_scaled(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a spectral-normed Conv2d in train mode, with 1/sigma applied to the
    output instead of the weight where the weight is the larger tensor.

    conv(x, W / sigma) + b = conv(x, W) / sigma + b: the same function and gradients up to
    float rounding (the rounding differs from the official code's, so only the fast training
    path uses it). For the wide low-resolution convs of the SPADE generator (1024 channels at
    8-32 px) the weight has 10-40x more elements than the output, and dividing it (and the
    division's backward) was a large share of those layers' cost. Other convs, eval mode and
    layers without spectral norm are called as they are. A scaled conv is not called as a
    module, so forward hooks registered on it do not run.
    """
    if not (conv.training and has_spectral_norm(conv) and isinstance(conv, nn.Conv2d)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)):
        return conv(x)
    h_out, w_out = _conv_out_size(conv, x)
    if conv.weight_orig.numel() <= x.shape[0] * conv.out_channels * h_out * w_out:
        return conv(x)
    sigma = conv._spectral_norm.sigma(conv, do_power_iteration=True)
    out = F.conv2d(x, conv.weight_orig, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    out = out / sigma
    # the bias in the output's dtype (bf16 under autocast), as F.conv2d would add it
    return out if conv.bias is None else out + conv.bias.to(out.dtype).view(1, -1, 1, 1)


def _conv_out_size(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of the conv's output for the input x."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                 zip(x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride))


def remove_spectral_norm(module: nn.Module) -> nn.Module:
    """Fold the current eval-mode normalised weight into a plain `weight` parameter."""
    w = spectral_weight(module)
    module._spectral_norm_hook.remove()
    del module._spectral_norm_hook, module._spectral_norm
    del module._parameters["weight_orig"], module._buffers["weight_u"], module._buffers["weight_v"]
    if "weight" in module.__dict__:
        del module.__dict__["weight"]
    module.weight = nn.Parameter(w)
    return module
