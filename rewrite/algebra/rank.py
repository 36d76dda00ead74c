"""The rank test: is a dense KxK conv exactly a depthwise/pointwise chain?

For a dense weight W ∈ R^{N×M×k×k} (groups = 1):

* dw→pw with multiplier r exists iff every *input-channel slab* S_m = W[:, m] ∈ R^{N×k²} has
  rank ≤ r:  S_m = Σ_{i<r} u_{m,i} v_{m,i}ᵀ gives depthwise filters v_{m,i} (k×k) and pointwise
  weights u_{m,i} (N), because conv(x, W)[n] = Σ_m Σ_i u_{m,i}[n] · (v_{m,i} ⋆ x_m).
* pw→dw exists iff every *output-channel slab* T_n = W[n] ∈ R^{M×k²} has rank 1:
  T_n = p_n d_nᵀ gives pointwise row p_n (M) and depthwise filter d_n, because
  conv(x, W)[n] = d_n ⋆ (Σ_m p_n[m] x_m).

Numerical rank counts singular values above `tol · σ_max(W)`, σ_max taken over all slabs of
the layer so an all-zero slab has rank 0 and the threshold follows the layer's scale. The
tolerance follows the weight dtype: a weight built as a low-rank product and rounded to that
dtype must still test as low-rank, a generic weight must not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ir import ConvSpec

RANK_RTOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,   # ~80 ulp: fp32 rounding of an exact low-rank product stays far below
    torch.float16: 5e-3,   # ~5 ulp
    torch.bfloat16: 4e-2,  # ~5 ulp
}


def rank_tolerance(dtype: torch.dtype) -> float:
    if dtype not in RANK_RTOL:
        raise TypeError(f"rank test needs a float weight, got {dtype}")
    return RANK_RTOL[dtype]


def input_channel_slabs(weight: torch.Tensor) -> torch.Tensor:
    """[M, N, k·k]: slab m is W[:, m] flattened over the kernel window."""
    n, m, kh, kw = weight.shape
    return weight.double().permute(1, 0, 2, 3).reshape(m, n, kh * kw)


def output_channel_slabs(weight: torch.Tensor) -> torch.Tensor:
    """[N, M, k·k]: slab n is W[n] flattened over the kernel window."""
    n, m, kh, kw = weight.shape
    return weight.double().reshape(n, m, kh * kw)


def slab_singular_values(slabs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(slabs)


def numerical_ranks(singular_values: torch.Tensor, tol: float) -> torch.Tensor:
    """Per slab, the number of singular values above tol · (largest singular value of all slabs)."""
    scale = singular_values.max()
    if scale == 0:
        return torch.zeros(singular_values.shape[0], dtype=torch.long)
    return (singular_values > tol * scale).sum(dim=-1)


@dataclass(frozen=True)
class RankReport:
    """What the rank test found for one dense conv."""

    dw_pw_rank: int      # max over input channels of rank(W[:, m]); the multiplier dw→pw needs
    pw_dw_rank: int      # max over output channels of rank(W[n]); pw→dw needs 1
    tol: float

    @property
    def pw_dw_exact(self) -> bool:
        return self.pw_dw_rank <= 1


def rank_test(conv: ConvSpec, tol: float | None = None) -> RankReport:
    """Run both slab tests on a dense conv (tolerance from the weight dtype unless given)."""
    if not conv.is_dense:
        raise ValueError(f"rank test applies to dense convs (groups=1), got groups={conv.groups}")
    tol = rank_tolerance(conv.weight.dtype) if tol is None else tol
    dw_pw = numerical_ranks(slab_singular_values(input_channel_slabs(conv.weight)), tol)
    pw_dw = numerical_ranks(slab_singular_values(output_channel_slabs(conv.weight)), tol)
    return RankReport(int(dw_pw.max()), int(pw_dw.max()), tol)
