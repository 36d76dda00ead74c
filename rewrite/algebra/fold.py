"""Fold a per-channel affine (eval-mode BatchNorm, bias, scale) into the conv before it.

    y = s ⊙ conv(x; W, b) + t  =  conv(x; W', b')   with   W'[o] = s[o]·W[o],  b' = s ⊙ b + t

Exact in real arithmetic; computed in float64 and cast back to the weight's dtype.

A per-channel affine before a conv (a BatchNorm in a pre-activation design) folds into it too:

    conv(s ⊙ x + t; W, b) = conv(x; W', b'),  W'[o, i] = W[o, i]·s[c(o, i)],
    b'[o] = b[o] + Σ_{i, kh, kw} W[o, i, kh, kw]·t[c(o, i)]

where c(o, i) = group(o)·C_in/g + i is the input channel that weight column i of output o reads.
Exact only when the conv does not pad or t = 0: the zero padding is added after the affine, so
at the border the chain sees 0 where the folded conv would see t (check_fold_affine_before).

A zero pad before a conv is absorbed into the conv's own (per-side) zero padding:

    conv(pad(x, p); W, b, padding q) = conv(x; W, b, padding p + q)

exact for any stride and dilation, since both sides read the same zero-extended input.

A per-channel affine after a concat of conv outputs along the channels folds into each conv, its
slice of the affine each (c_i: the offset of branch i's channels, C_i: their count):

    s ⊙ cat(y_1, …, y_k) + t = cat(s[c_i : c_i + C_i] ⊙ y_i + t[c_i : c_i + C_i])_i
                             = cat(conv(x_i; W_i', b_i'))_i                       (fold_affine_concat)
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..ir import Affine, Concat, ConvSpec, ZeroPad


def fold_affine(conv: ConvSpec, affine: Affine) -> ConvSpec:
    """The conv that computes affine(conv(x))."""
    if affine.scale.numel() != conv.out_channels:
        raise ValueError(f"affine has {affine.scale.numel()} channels, conv produces {conv.out_channels}")
    dtype = conv.weight.dtype
    scale, shift = affine.scale.double(), affine.shift.double()
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    return replace(conv, weight=weight.to(dtype), bias=bias.to(dtype))


def fold_affine_concat(concat: Concat, affine: Affine) -> Concat:
    """The concat of convs that computes affine(concat(convs)): each conv with its slice folded in."""
    if affine.scale.numel() != concat.out_channels:
        raise ValueError(f"affine has {affine.scale.numel()} channels, the concat produces {concat.out_channels}")
    convs, start = [], 0
    for conv in concat.convs:
        end = start + conv.out_channels
        convs.append(fold_affine(conv, Affine(affine.scale[start:end], affine.shift[start:end])))
        start = end
    return Concat(tuple(convs))


def check_fold_affine_before(affine: Affine, conv: ConvSpec) -> str | None:
    """None when affine → conv folds exactly, else why not."""
    if affine.scale.numel() != conv.in_channels:
        return f"affine has {affine.scale.numel()} channels, the conv reads {conv.in_channels}"
    if any(conv.padding) and bool(affine.shift.any()):
        return "the affine's shift meets the conv's zero padding (border outputs would change)"
    return None


def fold_affine_before(affine: Affine, conv: ConvSpec) -> ConvSpec:
    """The conv that computes conv(affine(x))."""
    reason = check_fold_affine_before(affine, conv)
    if reason:
        raise ValueError(reason)
    g, cout = conv.groups, conv.out_channels
    cin_g = conv.weight.shape[1]
    channel = (torch.arange(cout) // (cout // g)).view(-1, 1) * cin_g + torch.arange(cin_g).view(1, -1)
    scale, shift = affine.scale.double()[channel], affine.shift.double()[channel]     # [C_out, C_in/g]
    weight = conv.weight.double()
    bias = (weight * shift[:, :, None, None]).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        bias = bias + conv.bias.double()
    dtype = conv.weight.dtype
    return replace(conv, weight=(weight * scale[:, :, None, None]).to(dtype), bias=bias.to(dtype))


def absorb_pad(pad: ZeroPad, conv: ConvSpec) -> ConvSpec:
    """The conv that computes conv(pad(x)): the pad widths add to the conv's own padding."""
    if any(p < 0 for p in pad.padding):
        raise ValueError(f"negative pad {pad.padding} crops the input; it is not a zero pad")
    return replace(conv, padding=tuple(a + b for a, b in zip(conv.padding, pad.padding)))
