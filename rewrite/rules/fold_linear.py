"""fold_linear: a linear over the channel axis (a Linear over channels-last activations [B, H, W, C]
or tokens [B, N, C], or a conv), then permutes / flattens that move but keep that axis, then a
per-channel affine on it (a layer scale, a BatchNorm1d on the flattened tokens) ⇒ the linear with
scaled weights and shifted bias, the permutes / flattens kept:

    γ ⊙ (W x + b) + t = (diag γ · W) x + (γ ⊙ b + t)          (rewrite.algebra.fold.fold_affine)

Sites: timm ConvNeXt / torchvision CNBlock (Linear over NHWC → permute back → · γ[C,1,1]),
EdgeNeXt (Linear over NHWC → · γ[C]), LeViT (Linear over [B, N, C] → flatten(0, 1) →
BatchNorm1d → reshape_as(the linear's output): an op that reads a value for its shape only is not
one of its users, and the front end points it at the new linear, whose output has that shape). A
conv → affine with nothing between is the fold rule's. Exact, and it only removes work, so it is
applied wherever the linear's output reaches the affine alone. Lowered as
nn.Linear (FX) or MatMul + Add (ONNX; Gemm over [N, C]).
"""
from __future__ import annotations

from ..algebra import fold_affine
from ..ir import Affine, ConvSpec, Linear
from ..view import View
from .base import Decline, Match, Plan, Rule, declined, reads_axis, register, walk_shape_ops


def fold_linear_matches(view: View):
    for op in view.ops:
        if op.kind != "conv" or op.conv is None or op.reason:
            continue
        shape = view.shape(op.output)
        if shape is None:
            continue
        axis = 1 if op.layout == "nchw" else len(shape) - 1
        walk = walk_shape_ops(view, op.output, axis)
        end = walk.end
        if end is None or end.kind != "affine" or (not walk.shape_ops and op.layout != "nhwc"):
            continue               # nothing to fold, or conv → affine directly: the fold rule's
        ops = [op, *walk.shape_ops, end]
        if end.reason:
            yield declined("fold_linear", op, end.reason, ops)
        elif not reads_axis(end, walk.axis, view.shape(walk.value)):
            yield declined("fold_linear", op, f"the {end.label} does not act on the axis that holds the "
                           f"{op.label}'s output channels", ops)
        else:
            first = Linear(op.conv) if op.layout != "nchw" else op.conv
            yield Match("fold_linear", op.name, ops, [first, *(o.shape_op for o in walk.shape_ops), end.affine],
                        op.inputs[0], end.output)


def plan_fold_linear(layers: list, input_shape, dtype, options) -> Plan | Decline:
    first, affine = layers[0], layers[-1]
    spec = first.spec if isinstance(first, Linear) else first
    if affine.scale.numel() != spec.out_channels:
        return Decline("fold_linear", f"the affine has {affine.scale.numel()} channels, the linear produces "
                       f"{spec.out_channels}", layers)
    folded = fold_affine(spec, Affine(affine.scale, affine.shift))
    after = [Linear(folded) if isinstance(first, Linear) else folded, *layers[1:-1]]
    speedup = options.cost_model.speedup([spec, Affine(affine.scale, affine.shift)], [folded], input_shape, dtype)
    return Plan("fold_linear", layers, after, speedup, removes_work=True)


RULE = register(Rule(
    "fold_linear", order=21, matches=fold_linear_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_fold_linear(match.layers, shape, dtype, options),
    summary="a layer scale or BatchNorm into the linear before it, across permutes and flattens",
    owns=lambda op: op.kind == "affine" and op.layout == "nhwc",
))
