"""fold_next_linear: an affine (an eval BatchNorm, a per-channel scale/shift) into the linear that
reads its output alone through permutes and flattens that keep the channel axis ⇒ those shape ops
and the linear with scaled weight columns and shifted bias:

    W·P(s ⊙ x + t) + b = (W·diag s)·P(x) + (W·t + b)     (P: the permutes and flattens; it moves the
                                                           channel axis, and s, t move with it)
    (rewrite.algebra.fold: fold_affine_before, the affine → conv fold of a 1x1 conv)

Sites: FastViT's attention blocks (fastvit_sa*): BatchNorm2d → flatten(2) → transpose → the qkv
Linear (ONNX: BatchNormalization → Reshape → Transpose → MatMul). An affine read by a conv
directly is fold's; one the linear reads through shape ops is this rule's. Only when a shape op
stands between them is a site yielded: what no rule takes up gets a "left" row. Exact (a linear
does not pad), and it only removes work: applied wherever it folds.
"""
from __future__ import annotations

from ..algebra import check_fold_affine_before, fold_affine_before
from ..ir import Linear
from ..view import View
from .base import Decline, Match, Plan, Rule, reads_axis, register, walk_shape_ops


def fold_next_linear_matches(view: View):
    for op in view.ops:
        if op.kind != "affine" or op.affine is None or op.reason:
            continue
        shape = view.shape(op.output)
        if shape is None:
            continue
        walk = walk_shape_ops(view, op.output, op.affine.axis % len(shape))
        end = walk.end
        if not walk.shape_ops or end is None or end.kind != "conv" or end.conv is None or end.reason:
            continue
        if not reads_axis(end, walk.axis, view.shape(walk.value)):
            continue
        last = Linear(end.conv) if end.layout != "nchw" else end.conv
        yield Match("fold_next_linear", op.name, [op, *walk.shape_ops, end],
                    [op.affine, *(o.shape_op for o in walk.shape_ops), last], op.inputs[0], end.output)


def plan_fold_next_linear(layers: list, input_shape, dtype, options) -> Plan | Decline:
    affine, last = layers[0], layers[-1]
    spec = last.spec if isinstance(last, Linear) else last
    reason = check_fold_affine_before(affine, spec)
    if reason:
        return Decline("fold_next_linear", reason, layers)
    folded = fold_affine_before(affine, spec)
    after = [*layers[1:-1], Linear(folded) if isinstance(last, Linear) else folded]
    speedup = options.cost_model.speedup([affine, spec], [folded], input_shape, dtype)
    return Plan("fold_next_linear", layers, after, speedup, removes_work=True)


RULE = register(Rule(
    "fold_next_linear", order=23, matches=fold_next_linear_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_fold_next_linear(match.layers, shape, dtype, options),
    summary="a BatchNorm or scale into the linear after it, across permutes and flattens",
))
