"""Collapse a linear depthwise/pointwise chain into one dense conv (Fused-MBConv reversal).

dw→pw: depthwise D ∈ R^{M·r×1×k×k} (groups M, bias b_d), pointwise P ∈ R^{N×M·r} (bias b_p):

    W[n, m] = Σ_{i<r} P[n, m·r+i] · D[m·r+i],    b = b_p + P · b_d

The dense conv takes D's padding and dilation; a strided pw (1x1, no padding) only subsamples,
so the strides multiply: floor(floor(A/s₁)/s₂) = floor(A/(s₁s₂)).
Exact even with padding, because b_d is added after the dw conv's zero padding.

pw→dw: pointwise P ∈ R^{E×M} (bias b_p), depthwise D ∈ R^{E·r×1×k×k} (groups E, bias b_d):

    W[e·r+i, m] = D[e·r+i] · P[e, m],    b = b_d + b_p[e] · Σ D[e·r+i]

The bias term is exact only when the dw conv does not pad: with padding, the border windows
see zeros where the chain saw b_p, so that case is declined.

Anything nonlinear between the convs (an activation) makes the collapse inexact; a per-channel
affine between them must be folded into the first conv beforehand (see fold.py).
"""
from __future__ import annotations

import torch

from ..ir import ConvSpec


def check_collapse_dw_pw(dw: ConvSpec, pw: ConvSpec) -> str | None:
    """None when dw→pw collapses exactly, else the reason it does not."""
    if not dw.is_depthwise:
        return f"first conv is not depthwise ({dw.describe()})"
    if not pw.is_pointwise:
        return f"second conv is not a plain 1x1 conv ({pw.describe()})"
    if pw.in_channels != dw.out_channels:
        return f"channel mismatch: dw gives {dw.out_channels}, pw takes {pw.in_channels}"
    return None


def collapse_dw_pw(dw: ConvSpec, pw: ConvSpec) -> ConvSpec:
    reason = check_collapse_dw_pw(dw, pw)
    if reason:
        raise ValueError(reason)
    m, r = dw.in_channels, dw.multiplier
    kh, kw = dw.kernel_size
    n = pw.out_channels
    d = dw.weight.double().reshape(m, r, kh, kw)
    p = pw.weight.double().reshape(n, m, r)
    weight = torch.einsum("nmi,mihw->nmhw", p, d)
    bias = pw.bias.double() if pw.bias is not None else None
    if dw.bias is not None:
        contribution = p.reshape(n, m * r) @ dw.bias.double()
        bias = contribution if bias is None else bias + contribution
    stride = (dw.stride[0] * pw.stride[0], dw.stride[1] * pw.stride[1])
    dtype = pw.weight.dtype
    return ConvSpec(weight.to(dtype), None if bias is None else bias.to(dtype), stride, dw.padding, dw.dilation, 1)


def check_collapse_pw_dw(pw: ConvSpec, dw: ConvSpec) -> str | None:
    """None when pw→dw collapses exactly, else the reason it does not."""
    if not pw.is_pointwise:
        return f"first conv is not a plain 1x1 conv ({pw.describe()})"
    if pw.stride != (1, 1):
        return "strided 1x1 conv before a depthwise conv"
    if not dw.is_depthwise:
        return f"second conv is not depthwise ({dw.describe()})"
    if dw.in_channels != pw.out_channels:
        return f"channel mismatch: pw gives {pw.out_channels}, dw takes {dw.in_channels}"
    if pw.bias is not None and bool(pw.bias.any()) and any(dw.padding):
        return "pw bias meets the dw conv's zero padding (border outputs would change)"
    return None


def collapse_pw_dw(pw: ConvSpec, dw: ConvSpec) -> ConvSpec:
    reason = check_collapse_pw_dw(pw, dw)
    if reason:
        raise ValueError(reason)
    e, r = dw.in_channels, dw.multiplier
    kh, kw = dw.kernel_size
    m = pw.in_channels
    d = dw.weight.double().reshape(e, r, kh, kw)
    p = pw.weight.double().reshape(e, m)
    weight = torch.einsum("eihw,em->eimhw", d, p).reshape(e * r, m, kh, kw)
    bias = dw.bias.double() if dw.bias is not None else None
    if pw.bias is not None:
        contribution = (pw.bias.double()[:, None] * d.sum(dim=(2, 3))).reshape(e * r)
        bias = contribution if bias is None else bias + contribution
    dtype = dw.weight.dtype
    return ConvSpec(weight.to(dtype), None if bias is None else bias.to(dtype), dw.stride, dw.padding, dw.dilation, 1)
