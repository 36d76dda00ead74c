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
from ..view import Op, View
from .base import Decline, Match, Plan, Rule, declined, register
from .fusable import check_fuse, fuse_enabled


def is_reversible_pair(first: ConvSpec, second: ConvSpec) -> bool:
    """A dense 1x1 on either side of a conv: dw → pw, pw → dw, pw → pw, KxK → pw, pw → KxK
    (the pairs the reverse pass considers and reports)."""
    return (second.kernel_size == (1, 1) and second.is_dense) or (first.kernel_size == (1, 1) and first.is_dense)


def reverse_matches(view: View):
    """A dense 1x1 next to another conv (dw → pw, pw → dw, pw → pw, KxK → pw, pw → KxK); a
    separable pair with one op between them is declined with what it is."""
    for op in view.ops:
        if not op.liftable_conv or op.origin in ("factorize", "decouple"):
            continue
        nxt = view.sole_user(op.output)
        between = None
        if nxt is not None and nxt.kind != "conv":
            between, nxt = nxt, view.sole_user(nxt.output)
        if nxt is None or not nxt.liftable_conv or nxt.origin in ("factorize", "decouple") or nxt.layout != op.layout or \
                not is_reversible_pair(op.conv, nxt.conv):
            continue
        if between is not None:
            if op.conv.is_depthwise or nxt.conv.is_depthwise:   # the separable pairs say what blocks them
                yield declined("reverse", op, _between_reason(between), [op, between, nxt])
            continue
        yield Match("reverse", op.name, [op, nxt], [op.conv, nxt.conv], op.inputs[0], nxt.output)


def _between_reason(op: Op) -> str:
    if op.kind == "act":
        return f"nonlinearity ({op.act}) between the convs blocks the exact collapse"
    if op.kind == "affine":
        return f"{op.label} between the convs (not folded) blocks the collapse"
    return f"{op.label} between the convs blocks the collapse"


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


RULE = register(Rule(
    "reverse", order=40, matches=reverse_matches, timed=True,
    plan=lambda match, shape, dtype, options: plan_reverse(match.layers[0], match.layers[1], shape, dtype, options),
    summary="Fused-MBConv reversal: a linear dw/pw pair, or a dense 1x1 next to any conv, into one conv",
))
