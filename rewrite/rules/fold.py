"""fold: conv → affine (eval BatchNorm) ⇒ one conv with scaled weights and shifted bias;
affine → conv ⇒ one conv (exact without padding, or without shift); zero pad → conv ⇒ one
conv with wider padding.

W'[o] = s[o]·W[o], b' = s ⊙ b + t; conv(pad(x, p), padding q) = conv(x, padding p + q) (see
rewrite.algebra.fold). Always exact, always cheaper (one fewer pass over the activation), so it
is applied wherever the graph allows it, with one exception: a pad whose absorption would give a
depthwise conv a padding the fused kernel does not take (TF "same" at stride 2 pads 0 before and
1 after) stays, when the fuse pass runs, so that the conv can still fuse.
"""
from __future__ import annotations

from ..algebra import absorb_pad, check_fold_affine_before, fold_affine, fold_affine_before
from ..ir import Affine, ConvSpec, ZeroPad
from .base import Decline, Plan
from .fuse import fuse_enabled


def plan_fold(first, second, input_shape, dtype, options) -> Plan | Decline:
    """conv → affine, affine → conv (where exact), or zero pad → conv."""
    if isinstance(first, ConvSpec) and isinstance(second, Affine):
        after = [fold_affine(first, second)]
    elif isinstance(first, Affine) and isinstance(second, ConvSpec):
        reason = check_fold_affine_before(first, second)
        if reason:
            return Decline("fold", reason, [first, second])
        after = [fold_affine_before(first, second)]
    elif isinstance(first, ZeroPad) and isinstance(second, ConvSpec):
        after = [absorb_pad(first, second)]
        if second.is_depthwise and len(set(after[0].padding)) != 1 and len(set(second.padding)) == 1 \
                and "fuse" in options.passes and fuse_enabled(options):
            return Decline("fold", f"absorbing the pad would give the depthwise conv the padding "
                           f"{after[0].padding}, which the fused kernel does not take; the pad stays so the "
                           "conv can fuse", [first, second])
    else:
        raise TypeError(f"fold takes conv → affine, affine → conv or pad → conv, got {first.describe()} → {second.describe()}")
    speedup = options.cost_model.speedup([first, second], after, input_shape, dtype)
    return Plan("fold", [first, second], after, speedup)
