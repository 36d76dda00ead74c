"""Fold a per-channel affine (eval-mode BatchNorm, bias, scale) into the conv before it.

    y = s ⊙ conv(x; W, b) + t  =  conv(x; W', b')   with   W'[o] = s[o]·W[o],  b' = s ⊙ b + t

Exact in real arithmetic; computed in float64 and cast back to the weight's dtype.

A zero pad before a conv is absorbed into the conv's own (per-side) zero padding:

    conv(pad(x, p); W, b, padding q) = conv(x; W, b, padding p + q)

exact for any stride and dilation, since both sides read the same zero-extended input.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir import Affine, ConvSpec, ZeroPad


def fold_affine(conv: ConvSpec, affine: Affine) -> ConvSpec:
    """The conv that computes affine(conv(x))."""
    if affine.scale.numel() != conv.out_channels:
        raise ValueError(f"affine has {affine.scale.numel()} channels, conv produces {conv.out_channels}")
    dtype = conv.weight.dtype
    scale, shift = affine.scale.double(), affine.shift.double()
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    return replace(conv, weight=weight.to(dtype), bias=bias.to(dtype))


def absorb_pad(pad: ZeroPad, conv: ConvSpec) -> ConvSpec:
    """The conv that computes conv(pad(x)): the pad widths add to the conv's own padding."""
    if any(p < 0 for p in pad.padding):
        raise ValueError(f"negative pad {pad.padding} crops the input; it is not a zero pad")
    return replace(conv, padding=tuple(a + b for a, b in zip(conv.padding, pad.padding)))
