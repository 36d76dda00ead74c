"""Factorize a dense conv into a depthwise/pointwise chain (exact, or SVD-truncated on request).

dw→pw with multiplier r: per input channel m, the slab S_m = W[:, m] ∈ R^{N×k²} has the SVD
S_m = U Σ Vᵀ; keeping r terms,

    dw filter  m·r+i  = sqrt(σ_i) · v_i        (k×k, reads input channel m)
    pw weight [n, m·r+i] = sqrt(σ_i) · u_i[n]

so pw(dw(x)) = Σ_m Σ_i u_i σ_i v_iᵀ ⋆ x_m = conv(x, W) when r ≥ rank(S_m) for all m. The dw conv
takes W's stride, padding and dilation; the pw conv is 1x1 stride 1 and takes W's bias.

pw→dw: per output channel n, T_n = W[n] ∈ R^{M×k²} = σ u vᵀ (rank 1):

    pw row n = sqrt(σ)·u  (M),  dw filter n = sqrt(σ)·v  (k×k)

The pw conv must have no bias (its output is zero-padded by the dw conv, and a bias would leak
into the border), so W's bias goes to the dw conv. Splitting σ evenly keeps both factors at the
same scale, which matters in fp16.

The truncation error of rank r is exactly the discarded singular values: ‖W − W_r‖_F² = Σ σ²
over the dropped terms, which `dw_pw_rank_for_budget` uses to pick r under an error budget.
"""
from __future__ import annotations

import torch

from ..ir import ConvSpec
from .rank import input_channel_slabs, output_channel_slabs


def factorize_dw_pw(conv: ConvSpec, rank: int) -> tuple[ConvSpec, ConvSpec]:
    """Dense conv → (depthwise with multiplier `rank`, pointwise). Exact iff rank ≥ the slab ranks."""
    if not conv.is_dense:
        raise ValueError("factorize_dw_pw needs a dense conv (groups=1)")
    n, m, kh, kw = conv.weight.shape
    rank = min(rank, n, kh * kw)
    u, s, vh = torch.linalg.svd(input_channel_slabs(conv.weight), full_matrices=False)
    root = s[:, :rank].sqrt()                                         # [M, r]
    dw_w = (vh[:, :rank, :] * root[..., None]).reshape(m * rank, 1, kh, kw)
    pw_w = (u[:, :, :rank] * root[:, None, :]).permute(1, 0, 2).reshape(n, m * rank, 1, 1)
    dtype = conv.weight.dtype
    dw = ConvSpec(dw_w.to(dtype), None, conv.stride, conv.padding, conv.dilation, groups=m)
    pw = ConvSpec(pw_w.to(dtype), conv.bias)
    return dw, pw


def factorize_pw_dw(conv: ConvSpec) -> tuple[ConvSpec, ConvSpec]:
    """Dense conv → (pointwise, depthwise): exact iff every output-channel slab has rank 1."""
    if not conv.is_dense:
        raise ValueError("factorize_pw_dw needs a dense conv (groups=1)")
    n, m, kh, kw = conv.weight.shape
    u, s, vh = torch.linalg.svd(output_channel_slabs(conv.weight), full_matrices=False)
    root = s[:, 0].sqrt()                                             # [N]
    pw_w = (u[:, :, 0] * root[:, None]).reshape(n, m, 1, 1)
    dw_w = (vh[:, 0, :] * root[:, None]).reshape(n, 1, kh, kw)
    dtype = conv.weight.dtype
    pw = ConvSpec(pw_w.to(dtype), None)
    dw = ConvSpec(dw_w.to(dtype), conv.bias, conv.stride, conv.padding, conv.dilation, groups=n)
    return pw, dw


def dw_pw_rank_for_budget(conv: ConvSpec, budget: float) -> tuple[int, float]:
    """Smallest uniform multiplier r whose truncation keeps ‖W − W_r‖_F / ‖W‖_F ≤ budget.

    Returns (r, the relative weight error at that r)."""
    s = torch.linalg.svdvals(input_channel_slabs(conv.weight))          # [M, min(N, k²)]
    total = (s ** 2).sum()
    if total == 0:
        return 1, 0.0
    for r in range(1, s.shape[1] + 1):
        err = ((s[:, r:] ** 2).sum() / total).sqrt().item()
        if err <= budget:
            return r, err
    return s.shape[1], 0.0
