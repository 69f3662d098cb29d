"""An independent, functional re-statement of the official SPADE forward passes.

Written from the paper and the official behaviour, straight from a state_dict with
torch.nn.functional, sharing no code with spadegan's modules. Tests compare spadegan's
networks against it for configurations the official parity fixture does not cover.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unit_scale_(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights at unit scale (so SPADE's gamma/beta matter), random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("weight_u", "weight_v")):
                t.copy_(F.normalize(torch.randn(t.shape, generator=g), dim=0))
            elif t.dim() >= 2:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return net


def _w(sd, p, train):
    """Weight of a (possibly spectral-normed) layer; one power iteration in train mode."""
    if p + ".weight_orig" not in sd:
        return sd[p + ".weight"]
    w, u, v = sd[p + ".weight_orig"], sd[p + ".weight_u"].clone(), sd[p + ".weight_v"].clone()
    mat = w.reshape(w.shape[0], -1)
    if train:
        v = F.normalize(mat.t() @ u, dim=0, eps=1e-12)
        u = F.normalize(mat @ v, dim=0, eps=1e-12)
    return w / (u @ (mat @ v))


def _pf_norm(x, sd, p, kind, train):
    if kind == "instance":
        return F.instance_norm(x, eps=1e-5)
    if train:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = sd[p + ".running_mean"].view(1, -1, 1, 1)
        var = sd[p + ".running_var"].view(1, -1, 1, 1)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _spade(x, seg, sd, p, kind, ks, train):
    n = _pf_norm(x, sd, p + ".param_free_norm", kind, train)
    seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
    a = F.relu(F.conv2d(seg, sd[p + ".mlp_shared.0.weight"], sd[p + ".mlp_shared.0.bias"], padding=ks // 2))
    gamma = F.conv2d(a, sd[p + ".mlp_gamma.weight"], sd[p + ".mlp_gamma.bias"], padding=ks // 2)
    beta = F.conv2d(a, sd[p + ".mlp_beta.weight"], sd[p + ".mlp_beta.bias"], padding=ks // 2)
    return n + n * gamma + beta


def _block(x, seg, sd, p, kind, ks, train):
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    if p + ".norm_s.mlp_gamma.weight" in sd:
        xs = F.conv2d(_spade(x, seg, sd, p + ".norm_s", kind, ks, train), _w(sd, p + ".conv_s", train))
    else:
        xs = x
    dx = F.conv2d(lrelu(_spade(x, seg, sd, p + ".norm_0", kind, ks, train)), _w(sd, p + ".conv_0", train),
                  sd[p + ".conv_0.bias"], padding=1)
    dx = F.conv2d(lrelu(_spade(dx, seg, sd, p + ".norm_1", kind, ks, train)), _w(sd, p + ".conv_1", train),
                  sd[p + ".conv_1.bias"], padding=1)
    return xs + dx


def spade_generator(sd, seg, z, *, kind, ks, up_layers, crop_size, aspect_ratio, ngf, train=False):
    """SPADEGenerator forward from a state_dict (up_layers: normal | more | most)."""
    n_up = {"normal": 5, "more": 6, "most": 7}[up_layers]
    sw = crop_size // 2 ** n_up
    sh = round(sw / aspect_ratio)
    if sd["fc.weight"].dim() == 2:
        x = F.linear(z, sd["fc.weight"], sd["fc.bias"]).view(z.shape[0], 16 * ngf, sh, sw)
    else:
        x = F.conv2d(F.interpolate(seg, size=(sh, sw), mode="nearest"), sd["fc.weight"], sd["fc.bias"], padding=1)
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    x = _block(x, seg, sd, "head_0", kind, ks, train)
    x = _block(up(x), seg, sd, "G_middle_0", kind, ks, train)
    if up_layers != "normal":
        x = up(x)
    x = _block(x, seg, sd, "G_middle_1", kind, ks, train)
    names = ["up_0", "up_1", "up_2", "up_3"] + (["up_4"] if up_layers == "most" else [])
    for name in names:
        x = _block(up(x), seg, sd, name, kind, ks, train)
    x = F.conv2d(F.leaky_relu(x, 0.2), sd["conv_img.weight"], sd["conv_img.bias"], padding=1)
    return torch.tanh(x)


def multiscale_discriminator(sd, x, *, num_D, n_layers_D, sub_norm):
    """Per-scale lists of intermediate features (eval mode)."""
    out = []
    for d in range(num_D):
        p = f"discriminator_{d}"
        feats = []
        h = F.leaky_relu(F.conv2d(x, sd[p + ".model0.0.weight"], sd[p + ".model0.0.bias"], stride=2, padding=2), 0.2)
        feats.append(h)
        for n in range(1, n_layers_D):
            q = f"{p}.model{n}.0"
            stride = 1 if n == n_layers_D - 1 else 2
            conv_p = q + ".0" if sub_norm else q
            h = F.conv2d(h, _w(sd, conv_p, False), sd.get(conv_p + ".bias"), stride=stride, padding=2)
            if sub_norm == "instance":
                h = F.instance_norm(h, eps=1e-5)
            elif sub_norm == "batch":
                h = F.batch_norm(h, sd[q + ".1.running_mean"], sd[q + ".1.running_var"],
                                 sd[q + ".1.weight"], sd[q + ".1.bias"], False, 0.0, 1e-5)
            h = F.leaky_relu(h, 0.2)
            feats.append(h)
        last = f"{p}.model{n_layers_D}.0"
        feats.append(F.conv2d(h, sd[last + ".weight"], sd[last + ".bias"], stride=1, padding=2))
        out.append(feats)
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    return out
