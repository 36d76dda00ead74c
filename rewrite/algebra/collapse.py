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

Beyond dw/pw (check_collapse_pair): any conv → dense 1x1, and dense 1x1 → any conv, the general
Fused-MBConv algebra: a linear 1x1 next to a KxK conv is one KxK conv.

Anything nonlinear between the convs (an activation) makes the collapse inexact; a per-channel
affine between them must be folded into the first conv beforehand (see fold.py).
"""
from __future__ import annotations

import torch

from ..ir import ConvSpec
from .merge import dense_weight


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


def check_collapse_pair(first: ConvSpec, second: ConvSpec) -> str | None:
    """None when first → second (nothing between) is one conv exactly, else why not.

    Either conv may be any conv as long as the other is a plain dense 1x1:
      KxK (any groups) → 1x1:   W[n, i] = Σ_m P[n, m] · A[m, i],       b = P·b_A + b_P
      1x1 → KxK (any groups):   W[o, i] = Σ_m B[o, m] · P[m, i],       b = b_B + Σ_{m,kh,kw} B[o, m]·b_P[m]
    with grouped weights expanded to dense (block-diagonal) first. A strided 1x1 after the
    KxK only subsamples (the strides multiply); a 1x1 before a KxK must not be strided, and its
    bias may not meet the KxK's zero padding (the border would see b_P where the chain saw 0)."""
    if second.in_channels != first.out_channels:
        return f"channel mismatch: the first conv gives {first.out_channels}, the second takes {second.in_channels}"
    if second.is_pointwise:
        return None
    if not first.is_pointwise:
        return f"neither conv is a plain 1x1 conv ({first.describe()} → {second.describe()})"
    if first.stride != (1, 1):
        return "strided 1x1 conv before a spatial conv"
    if first.bias is not None and bool(first.bias.any()) and any(second.padding):
        return "the 1x1 conv's bias meets the next conv's zero padding (border outputs would change)"
    return None


def collapse_pair(first: ConvSpec, second: ConvSpec) -> ConvSpec:
    """The one conv computing second(first(x)) (see check_collapse_pair)."""
    reason = check_collapse_pair(first, second)
    if reason:
        raise ValueError(reason)
    dtype = second.weight.dtype
    if second.is_pointwise:
        a, p = dense_weight(first), second.weight.double()[:, :, 0, 0]
        weight = torch.einsum("nm,mihw->nihw", p, a)
        bias = second.bias.double() if second.bias is not None else None
        if first.bias is not None:
            bias = p @ first.bias.double() + (0 if bias is None else bias)
        stride = (first.stride[0] * second.stride[0], first.stride[1] * second.stride[1])
        return ConvSpec(weight.to(dtype), None if bias is None else bias.to(dtype), stride, first.padding,
                        first.dilation, 1)
    b, p = dense_weight(second), first.weight.double()[:, :, 0, 0]
    weight = torch.einsum("omhw,mi->oihw", b, p)
    bias = second.bias.double() if second.bias is not None else None
    if first.bias is not None:
        contribution = torch.einsum("omhw,m->o", b, first.bias.double())
        bias = contribution if bias is None else bias + contribution
    return ConvSpec(weight.to(dtype), None if bias is None else bias.to(dtype), second.stride, second.padding,
                    second.dilation, 1)
