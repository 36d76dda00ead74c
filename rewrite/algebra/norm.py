"""Fold a LayerNorm's elementwise affine into the linear (or conv) that reads its output.

    LN(x; γ, β) = γ ⊙ n(x) + β,   n(x) = (x − mean(x)) / sqrt(var(x) + ε)   over the channel axis

    W·(γ ⊙ n + β) + b = (W·diag γ)·n + (W·β + b)

so the LayerNorm keeps its normalization and drops γ and β, and the linear's weight column i is
scaled by γ[i] and its bias gains W·β (for a k×k conv: b + Σ_{i,kh,kw} W[o, i, kh, kw]·β[i]). Exact
when the conv does not pad or β = 0 (fold.check_fold_affine_before); computed in float64.

The same identity, read the other way, folds a per-channel scale after a linear into it:
γ ⊙ (W·x + b) = (diag γ·W)·x + γ ⊙ b (fold.fold_affine).
"""
from __future__ import annotations

from ..ir import Affine, ConvSpec, LayerNorm
from .fold import check_fold_affine_before, fold_affine_before


def check_fold_norm_affine(norm: LayerNorm, conv: ConvSpec) -> str | None:
    """None when the norm's affine folds exactly into `conv` (read channels first), else why not."""
    if norm.affine is None:
        return "the LayerNorm has no affine to fold"
    return check_fold_affine_before(Affine(norm.affine.scale, norm.affine.shift), conv)


def fold_norm_affine(norm: LayerNorm, conv: ConvSpec) -> tuple[LayerNorm, ConvSpec]:
    """(the LayerNorm without its affine, the conv that computes conv(affine(n)))."""
    reason = check_fold_norm_affine(norm, conv)
    if reason:
        raise ValueError(reason)
    return LayerNorm(norm.eps), fold_affine_before(Affine(norm.affine.scale, norm.affine.shift), conv)
