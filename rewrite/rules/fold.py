"""fold: conv → affine (eval BatchNorm) ⇒ one conv with scaled weights and shifted bias.

W'[o] = s[o]·W[o], b' = s ⊙ b + t (see rewrite.algebra.fold). Always exact, always cheaper
(one fewer pass over the activation), so it is applied wherever the graph allows it.
"""
from __future__ import annotations

from ..algebra import fold_affine
from ..ir import Affine, ConvSpec
from .base import Plan


def plan_fold(conv: ConvSpec, affine: Affine, input_shape, dtype, options) -> Plan:
    after = [fold_affine(conv, affine)]
    speedup = options.cost_model.chain_time([conv, affine], input_shape, dtype) / options.cost_model.chain_time(
        after, input_shape, dtype
    )
    return Plan("fold", [conv, affine], after, speedup)
