"""fold: conv → affine (eval BatchNorm) ⇒ one conv with scaled weights and shifted bias, and
zero pad → conv ⇒ one conv with wider padding.

W'[o] = s[o]·W[o], b' = s ⊙ b + t; conv(pad(x, p), padding q) = conv(x, padding p + q) (see
rewrite.algebra.fold). Always exact, always cheaper (one fewer pass over the activation), so it
is applied wherever the graph allows it.
"""
from __future__ import annotations

from ..algebra import absorb_pad, fold_affine
from ..ir import Affine, ConvSpec, ZeroPad
from .base import Plan


def plan_fold(first, second, input_shape, dtype, options) -> Plan:
    """conv → affine, or zero pad → conv."""
    if isinstance(first, ConvSpec) and isinstance(second, Affine):
        after = [fold_affine(first, second)]
    elif isinstance(first, ZeroPad) and isinstance(second, ConvSpec):
        after = [absorb_pad(first, second)]
    else:
        raise TypeError(f"fold takes conv → affine or pad → conv, got {first.describe()} → {second.describe()}")
    speedup = options.cost_model.speedup([first, second], after, input_shape, dtype)
    return Plan("fold", [first, second], after, speedup)
