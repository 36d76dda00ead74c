"""fold: conv → affine (eval BatchNorm, a constant per-channel scale/shift) ⇒ one conv with scaled
weights and shifted bias; affine → conv ⇒ one conv (exact without padding, or without shift); zero
pad → conv ⇒ one conv with wider padding. A linear over [N, C] is a 1x1 conv here (a classifier
head's BatchNorm1d → Linear).

    conv → affine:  W'[o] = s[o]·W[o],          b' = s ⊙ b + t
    affine → conv:  W'[o, i] = W[o, i]·s[i],    b' = b + Σ_i,k W[o, i, k]·t[i]   (no padding, or t = 0)
    pad → conv:     conv(pad(x, p), padding q) = conv(x, padding p + q)
    affine → affine → padded conv:  conv(pad₀(s ⊙ x + t)) = conv_{W·s}(pad₀(x + t/s))   (s = s₁s₂ ≠ 0,
                    t = s₂t₁ + t₂): two passes become one shift

(rewrite.algebra.fold). Always exact and always cheaper (one fewer pass over the activation), so
it is applied wherever the graph allows it: where the conv's output feeds only the affine (or the
affine only the conv, or the pad only the conv).

One deferral: a pad whose absorption would give a depthwise conv a padding the fused kernel does
not take (TF "same" at stride 2 pads 0 before and 1 after) is kept while a fuse pass is still to
run, so that the conv can fuse (the pad then stays in front of the fused kernel). The decline is
provisional (Decline(until="fuse")): once the fuse pass has run, the pass manager plans the site
again, and a conv the fuse pass left unfused (the measured cost model declined it, or something
else blocked it) gets its pad absorbed like any other. Whether the conv fuses is known only
after the fuse pass has checked and timed it, so the fold cannot decide this up front; and
deferring the fold, not undoing it in the fuse rule, keeps every rule's plan a plain rewrite
that both front ends already lower.
"""
from __future__ import annotations

from ..algebra import (absorb_pad, check_fold_affine_before, check_fold_scale_before, compose_affines, fold_affine,
                       fold_affine_before, fold_scale_before)
from ..ir import Affine, ConvSpec, ZeroPad
from ..view import Op, View
from .base import Decline, Match, Plan, Rule, conv_reason, declined, register
from .fusable import fusable_padding, fuse_enabled


def fold_matches(view: View):
    """conv → affine where the conv's output feeds only the affine; else affine → conv where the
    affine feeds only the conv; zero pad → conv."""
    for op in view.ops:
        if op.kind == "affine":
            conv = view.producer(op.inputs[0])
            if op.layout == "nhwc" or (conv is not None and conv.kind == "conv" and conv.layout == "nhwc"):
                continue          # over the last axis of channels-last activations: fold_linear's
            if conv is None or conv.kind != "conv":
                before = _affine_before_conv(view, op)
                if before is not None:
                    yield before
                continue
            ops = [conv, op]
            reason = conv_reason(conv, linear_ok=True) or op.reason
            if reason is None and view.readers(conv.output) > 1:
                reason = (f"conv output has {view.readers(conv.output)} readers; folding the {op.label} "
                          "would change what the others see")
            if reason:
                before = _affine_before_conv(view, op) if view.readers(conv.output) > 1 else None
                yield before if before is not None and before.reason is None else declined("fold", conv, reason, ops)
                continue
            yield Match("fold", conv.name, ops, [conv.conv, op.affine], conv.inputs[0], op.output)
        elif op.kind == "pad":
            conv = view.sole_user(op.output)
            if conv is None or conv.kind != "conv":
                continue
            ops = [op, conv]
            reason = op.reason or conv_reason(conv)
            if reason:
                yield declined("fold", conv, reason, ops)
                continue
            yield Match("fold", conv.name, ops, [op.pad, conv.conv], op.inputs[0], conv.output)


def _affine_before_conv(view: View, op: Op) -> Match | None:
    """affine → conv, where the affine's output feeds only that conv (a pre-activation BatchNorm);
    affine → affine → conv where the second's shift meets the conv's padding and the first feeds only
    the second (a learnable scale, then bias, after an activation)."""
    conv = view.sole_user(op.output)
    if conv is None or conv.kind != "conv" or op.affine is None:
        return None
    reason = conv_reason(conv, linear_ok=True)
    if reason:
        return declined("fold", conv, reason, [op, conv])
    first = view.producer(op.inputs[0])
    if first is not None and first.kind == "affine" and first.affine is not None and first.layout == op.layout and \
            view.sole_user(first.output) is op and check_fold_affine_before(op.affine, conv.conv) is not None:
        return Match("fold", conv.name, [first, op, conv], [first.affine, op.affine, conv.conv], first.inputs[0],
                     conv.output)
    return Match("fold", conv.name, [op, conv], [op.affine, conv.conv], op.inputs[0], conv.output)


def plan_fold(first, second, input_shape, dtype, options, third=None) -> Plan | Decline:
    """conv → affine, affine → conv (where exact), zero pad → conv, or affine → affine → padded conv
    (their scale into the conv, one shift left)."""
    wait = None
    if third is not None:
        composed = compose_affines(first, second)
        reason = check_fold_scale_before(composed, third)
        if reason:
            return Decline("fold", reason, [first, second, third])
        after = list(fold_scale_before(composed, third))
        speedup = options.cost_model.speedup([first, second, third], after, input_shape, dtype)
        return Plan("fold", [first, second, third], after, speedup, removes_work=True,
                    note="two affines → one shift; their scale folded into the conv")
    if isinstance(first, ConvSpec) and isinstance(second, Affine):
        after = [fold_affine(first, second)]
    elif isinstance(first, Affine) and isinstance(second, ConvSpec):
        reason = check_fold_affine_before(first, second)
        if reason:
            return Decline("fold", reason, [first, second])
        after = [fold_affine_before(first, second)]
    elif isinstance(first, ZeroPad) and isinstance(second, ConvSpec):
        after = [absorb_pad(first, second)]
        if second.is_depthwise and not fusable_padding(after[0].padding) and fusable_padding(second.padding) \
                and "fuse" in options.passes and fuse_enabled(options):
            wait = (f"absorbing the pad would give the depthwise conv the padding {after[0].padding}, which the "
                    "fused kernel does not take; the pad stays so the conv can fuse")
    else:
        raise TypeError(f"fold takes conv → affine, affine → conv or pad → conv, got {first.describe()} → {second.describe()}")
    speedup = options.cost_model.speedup([first, second], after, input_shape, dtype)
    if wait:
        then = Plan("fold", [first, second], after, speedup, removes_work=True,
                    note="absorbed after the fuse pass left the depthwise conv unfused")
        return Decline("fold", wait, [first, second], until="fuse", then=then)
    return Plan("fold", [first, second], after, speedup, removes_work=True)


RULE = register(Rule(
    "fold", order=20, matches=fold_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_fold(*match.layers[:2], shape, dtype, options, *match.layers[2:]),
    summary="BatchNorm, constant scale/shift and zero pads into the neighbouring conv or linear",
    owns=lambda op: op.kind == "affine" and op.layout != "nhwc", conservative=True,
))
