"""Merge parallel linear branches into one conv (structural reparameterization).

Branches b_1..b_n all read the same x and are summed:

    y = Σ_i  A_i( conv(x; W_i, b_i, stride s, dilation d, groups g_i, padding p_i) )

where each A_i is a per-channel affine (BatchNorm, a layer scale, a sign) and an identity or
BatchNorm-only branch is the 1x1 delta conv δ (W[c, 0] = 1, groups = C). Folding A_i into its
conv (fold.py) leaves a sum of convs, which is one conv when they line up:

    * same stride, and the same dilation wherever the kernel is larger than 1x1;
    * aligned centres: branch i reads rows  o·s − p_i,top + j·d, so with the merged padding
      P_top = max_i p_i,top its kernel sits at row offset (P_top − p_i,top)/d of the merged
      kernel, which must be a whole number; the same for columns;
    * the same output size: p_i,top + p_i,bottom − (k_i − 1)·d is the same for every branch;
    * groups: the merged conv takes the coarsest grouping G = gcd(g_i); a branch with g_i
      groups is block-diagonal within each of the G groups (g_i a multiple of G). Only the
      conv branches' groups count: a delta (identity/BN) branch fits any grouping.

Then, with every kernel zero-embedded at its offset in the merged K_h × K_w kernel,

    W = Σ_i embed(W_i),   b = Σ_i b_i,

exactly (in real arithmetic): each output is the same sum of the same products, plus zeros.
Float64 inside, cast back to the first branch's dtype.
"""
from __future__ import annotations

import math

import torch

from ..ir import Affine, ConvSpec
from .fold import fold_affine


def identity_conv(channels: int, dtype: torch.dtype = torch.float32) -> ConvSpec:
    """x as a conv: the 1x1 depthwise delta kernel (groups = channels)."""
    return ConvSpec(torch.ones(channels, 1, 1, 1, dtype=dtype), None, groups=channels)


def branch_conv(layers: list, channels: int, dtype: torch.dtype = torch.float32) -> ConvSpec:
    """One branch, conv followed by affines (or affines alone, on x), as a single conv."""
    layers = list(layers)
    conv = layers.pop(0) if layers and isinstance(layers[0], ConvSpec) else identity_conv(channels, dtype)
    for layer in layers:
        if not isinstance(layer, Affine):
            raise ValueError(f"a branch is a conv followed by per-channel affines; found {type(layer).__name__}")
        conv = fold_affine(conv, layer)
    return conv


def _is_delta(conv: ConvSpec) -> bool:
    return conv.kernel_size == (1, 1) and conv.groups == conv.in_channels == conv.out_channels and not any(conv.padding)


def check_merge(convs: list[ConvSpec]) -> str | None:
    """None when the convs (all reading the same x) sum to one conv, else the reason not."""
    if len(convs) < 2:
        return "fewer than two branches"
    channels = {(c.in_channels, c.out_channels) for c in convs}
    if len(channels) != 1:
        return "branches differ in channels: " + ", ".join(f"{i}->{o}" for i, o in sorted(channels))
    strides = {c.stride for c in convs}
    if len(strides) != 1:
        return "branches differ in stride: " + ", ".join(f"{s[0]}x{s[1]}" for s in sorted(strides))
    dilations = {c.dilation for c in convs if c.kernel_size != (1, 1)}
    if len(dilations) > 1:
        return "branches differ in dilation"
    dilation = next(iter(dilations), (1, 1))
    for axis in (0, 1):
        top = max(c.padding[2 * axis] for c in convs)
        spans = {c.padding[2 * axis] + c.padding[2 * axis + 1] - (c.kernel_size[axis] - 1) * dilation[axis]
                 for c in convs}
        if len(spans) != 1:
            return "branches differ in output size (their paddings do not match their kernels)"
        if any((top - c.padding[2 * axis]) % dilation[axis] for c in convs):
            return "branch kernel centres do not align (padding offsets are not whole multiples of the dilation)"
    return None


def merged_groups(convs: list[ConvSpec]) -> int:
    """The coarsest grouping every branch fits in (delta branches fit any)."""
    groups = [c.groups for c in convs if not _is_delta(c)]
    return math.gcd(*groups) if groups else convs[0].groups


def merge_convs(convs: list[ConvSpec]) -> ConvSpec:
    """The one conv computing Σ_i conv_i(x) (see the module docstring)."""
    reason = check_merge(convs)
    if reason:
        raise ValueError(reason)
    dilations = {c.dilation for c in convs if c.kernel_size != (1, 1)}
    dh, dw = next(iter(dilations), (1, 1))
    top, left = max(c.padding[0] for c in convs), max(c.padding[2] for c in convs)
    offsets = [((top - c.padding[0]) // dh, (left - c.padding[2]) // dw) for c in convs]
    kh = max(oy + c.kernel_size[0] for c, (oy, _) in zip(convs, offsets))
    kw = max(ox + c.kernel_size[1] for c, (_, ox) in zip(convs, offsets))
    first = convs[0]
    span_h = first.padding[0] + first.padding[1] - (first.kernel_size[0] - 1) * dh
    span_w = first.padding[2] + first.padding[3] - (first.kernel_size[1] - 1) * dw
    padding = (top, span_h + (kh - 1) * dh - top, left, span_w + (kw - 1) * dw - left)
    groups = merged_groups(convs)
    cout, cin = first.out_channels, first.in_channels
    weight = torch.zeros(cout, cin // groups, kh, kw, dtype=torch.float64)
    bias = torch.zeros(cout, dtype=torch.float64)
    has_bias = False
    for conv, (oy, ox) in zip(convs, offsets):
        dense = _regroup(conv, groups)
        weight[:, :, oy:oy + conv.kernel_size[0], ox:ox + conv.kernel_size[1]] += dense
        if conv.bias is not None:
            bias += conv.bias.double()
            has_bias = True
    dtype = first.weight.dtype
    return ConvSpec(weight.to(dtype), bias.to(dtype) if has_bias else None, first.stride, padding, (dh, dw), groups)


def _regroup(conv: ConvSpec, groups: int) -> torch.Tensor:
    """conv's weight laid out for `groups` groups (block-diagonal within each), float64.

    Output channel o of a g-group conv reads input channels [(o // (C_out/g)) · C_in/g, …);
    with G | g those lie inside o's G-group, at offset ((o // (C_out/g)) mod (g/G)) · C_in/g."""
    g = conv.groups
    if g % groups:
        raise ValueError(f"a {g}-group conv does not fit {groups} groups")
    w = conv.weight.double()
    if g == groups:
        return w
    cout, cin_g = conv.out_channels, w.shape[1]
    out_per_group = cout // g
    blocks_per_group = g // groups
    out = torch.zeros(cout, cin_g * blocks_per_group, *w.shape[2:], dtype=torch.float64)
    for o in range(cout):
        block = (o // out_per_group) % blocks_per_group
        out[o, block * cin_g:(block + 1) * cin_g] = w[o]
    return out


def dense_weight(conv: ConvSpec) -> torch.Tensor:
    """The conv's weight as a dense (groups = 1) float64 weight, block-diagonal across groups."""
    return _regroup(conv, 1)


def scaled(conv: ConvSpec, coefficient) -> ConvSpec:
    """a · conv(x) for a scalar or per-output-channel coefficient a (a sign, a layer scale)."""
    scale = torch.as_tensor(coefficient, dtype=torch.float64)
    scale = scale.expand(conv.out_channels) if scale.dim() == 0 else scale.reshape(-1)
    return fold_affine(conv, Affine(scale, torch.zeros_like(scale)))
