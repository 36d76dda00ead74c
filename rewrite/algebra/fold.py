"""Fold a per-channel affine (eval-mode BatchNorm, bias, scale) into the conv before it.

    y = s ⊙ conv(x; W, b) + t  =  conv(x; W', b')   with   W'[o] = s[o]·W[o],  b' = s ⊙ b + t

Exact in real arithmetic; computed in float64 and cast back to the weight's dtype.

A per-channel affine before a conv (a BatchNorm in a pre-activation design) folds into it too:

    conv(s ⊙ x + t; W, b) = conv(x; W', b'),  W'[o, i] = W[o, i]·s[c(o, i)],
    b'[o] = b[o] + Σ_{i, kh, kw} W[o, i, kh, kw]·t[c(o, i)]

where c(o, i) = group(o)·C_in/g + i is the input channel that weight column i of output o reads.
Exact only when the conv does not pad or t = 0: the zero padding is added after the affine, so
at the border the chain sees 0 where the folded conv would see t (check_fold_affine_before).

Two affines before a padded conv (a learnable scale and bias after an activation, PP-LCNetV3's
blocks) compose into one, y = s ⊙ x + t with s = s₁s₂ and t = s₂t₁ + t₂, whose scale still crosses
the padding (0·s = 0) while its shift does not; for s ≠ 0 everywhere

    conv(pad₀(s ⊙ x + t); W, b) = conv(pad₀(x + t/s); W', b),   W'[o, i] = W[o, i]·s[c(o, i)]

so the two passes become one shift in front of the conv (fold_scale_before).

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


def compose_affines(first: Affine, second: Affine) -> Affine:
    """second(first(x)) as one affine: scale s₁s₂, shift s₂t₁ + t₂."""
    s1, t1, s2, t2 = first.scale.double(), first.shift.double(), second.scale.double(), second.shift.double()
    return Affine(s1 * s2, s2 * t1 + t2, first.axis)


def check_fold_scale_before(affine: Affine, conv: ConvSpec) -> str | None:
    """None when the affine's scale can move into the conv, leaving its shift divided by it."""
    if affine.scale.numel() != conv.in_channels:
        return f"affine has {affine.scale.numel()} channels, the conv reads {conv.in_channels}"
    if not bool(affine.scale.ne(0).all()):
        return "the affine's scale is zero on some channel, so its shift cannot be moved in front of it"
    if not bool(torch.isfinite((affine.shift.double() / affine.scale.double()).to(conv.weight.dtype)).all()):
        return "the affine's shift divided by its scale overflows the weights' dtype"
    return None


def fold_scale_before(affine: Affine, conv: ConvSpec) -> tuple[Affine, ConvSpec]:
    """(shift, conv') with conv'(pad₀(shift(x))) = conv(pad₀(affine(x))): the shift is t/s, conv' has
    the scale folded into its weights."""
    reason = check_fold_scale_before(affine, conv)
    if reason:
        raise ValueError(reason)
    scale = affine.scale.double()
    shift = Affine(torch.ones_like(scale), affine.shift.double() / scale, affine.axis)
    return shift, fold_affine_before(Affine(scale, torch.zeros_like(scale), affine.axis), conv)


def absorb_pad(pad: ZeroPad, conv: ConvSpec) -> ConvSpec:
    """The conv that computes conv(pad(x)): the pad widths add to the conv's own padding."""
    if any(p < 0 for p in pad.padding):
        raise ValueError(f"negative pad {pad.padding} crops the input; it is not a zero pad")
    return replace(conv, padding=tuple(a + b for a, b in zip(conv.padding, pad.padding)))
