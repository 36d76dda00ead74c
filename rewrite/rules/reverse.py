"""reverse (Fused-MBConv reversal): linear dw→pw or pw→dw ⇒ one dense KxK conv; and the general
case, a dense 1x1 next to any conv (pw→pw, KxK→pw, pw→KxK) ⇒ one conv.

W[n, m] = Σ_i P[n, m·r+i] D[m·r+i] for dw→pw, W[e·r+i, m] = D[e·r+i] P[e, m] for pw→dw (see
rewrite.algebra.collapse). Applied only where the cost model predicts the dense form is faster:
on matrix units the dense conv trades k² more FLOPs for one fewer pass over the intermediate
tensor and one fewer launch, which wins on wide, shallow early-stage layers (EfficientNetV2's
observation) and loses on deep ones. Where the fuse pass will run and the kernel covers the dw→pw
pair, the dense conv must also beat the fused kernel, which already saves that pass and launch.
"""
from __future__ import annotations

from ..algebra import (check_collapse_dw_pw, check_collapse_pair, check_collapse_pw_dw, collapse_dw_pw, collapse_pair,
                       collapse_pw_dw)
from ..ir import ConvSpec, FusedSepConv
from .fuse import check_fuse, fuse_enabled
from .base import Decline, Plan


def is_reversible_pair(first: ConvSpec, second: ConvSpec) -> bool:
    """A dense 1x1 on either side of a conv: dw → pw, pw → dw, pw → pw, KxK → pw, pw → KxK
    (the pairs the reverse pass considers and reports)."""
    return (second.kernel_size == (1, 1) and second.is_dense) or (first.kernel_size == (1, 1) and first.is_dense)


def plan_reverse(first: ConvSpec, second: ConvSpec, input_shape, dtype, options) -> Plan | Decline:
    if first.is_depthwise:
        reason, build = check_collapse_dw_pw(first, second), collapse_dw_pw
    elif first.is_pointwise and second.is_depthwise:
        reason, build = check_collapse_pw_dw(first, second), collapse_pw_dw
    else:
        reason, build = check_collapse_pair(first, second), collapse_pair
    if reason:
        return Decline("reverse", reason, [first, second])
    after = [build(first, second)]
    model = options.cost_model
    before, against = model.chain_time([first, second], input_shape, dtype), "the separate convs"
    if "fuse" in options.passes and fuse_enabled(options) and first.is_depthwise and check_fuse(first, None, second, None, dtype) is None:
        fused = model.chain_time([FusedSepConv(first, None, second, None)], input_shape, dtype)
        if fused < before:
            before, against = fused, "the fused dw+pw kernel"
    speedup = before / model.chain_time(after, input_shape, dtype)
    if not options.measured and speedup < options.min_speedup:  # measured: timed after its check
        return Decline(
            "reverse", f"cost model predicts the dense conv at {speedup:.2f}x against {against} "
            f"(< {options.min_speedup:g}x)", [first, second], speedup,
        )
    return Plan("reverse", [first, second], after, speedup, note="collapsed into one dense conv")
