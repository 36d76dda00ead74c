"""fold_norm: a LayerNorm's elementwise affine into the linear or conv that reads its output alone
(across permutes and flattens that keep the channel axis) ⇒ the LayerNorm without γ and β (it
keeps its normalization) and the linear with scaled weight columns and shifted bias:

    W·(γ ⊙ n + β) + b = (W·diag γ)·n + (W·β + b)            (rewrite.algebra.norm.fold_norm_affine)

Sites: ConvNeXt's LayerNorm → Linear / 1x1 (NHWC MLP or timm LayerNorm2d → 1x1 conv), the
LayerNorm2d before a downsampling conv (exact: it does not pad), the head's LayerNorm → flatten →
Linear. Declined where the LayerNorm's output has several readers (the stem's LayerNorm feeds the
first block and its shortcut), or the conv pads and β ≠ 0 (the border would see β where it saw 0).
Lifted: torch's LayerNorm over the last axis, ONNX LayerNormalization, and a LayerNorm written out
as ReduceMean → Sub → Pow → ReduceMean → Add(ε) → Sqrt → Div [→ Mul(γ) → Add(β)] (torch's export
below opset 17, tf2onnx), which is lowered back in that form where the opset lacks
LayerNormalization. Exact, and it only removes work: applied wherever it folds.
"""
from __future__ import annotations

from ..algebra import check_fold_norm_affine, fold_norm_affine
from ..ir import Affine, Linear
from ..view import View
from .base import Decline, Match, Plan, Rule, declined, reads_axis, register, walk_shape_ops


def fold_norm_matches(view: View):
    for op in view.ops:
        if op.kind != "norm" or (op.norm is not None and op.norm.affine is None):
            continue
        if op.reason:
            yield declined("fold_norm", op, op.reason)
            continue
        shape = view.shape(op.output)
        walk = walk_shape_ops(view, op.output, None if shape is None else len(shape) - 1)
        end, ops = walk.end, [op, *walk.shape_ops] + ([walk.end] if walk.end is not None else [])
        if end is None or end.kind != "conv":
            yield declined("fold_norm", op, f"the LayerNorm's output feeds {view.describe_readers(walk.value)}; "
                           "its affine folds only into a linear or conv that reads it alone", ops)
        elif end.reason or end.conv is None:
            yield declined("fold_norm", op, end.reason or "the conv after it is not lifted", ops)
        elif not reads_axis(end, walk.axis, view.shape(walk.value)):
            yield declined("fold_norm", op, f"the {end.label} after it does not read the normalized axis as "
                           "its channels", ops)
        else:
            last = Linear(end.conv) if end.layout != "nchw" else end.conv
            yield Match("fold_norm", op.name, ops, [op.norm, *(o.shape_op for o in walk.shape_ops), last],
                        op.inputs[0], end.output)


def plan_fold_norm(layers: list, input_shape, dtype, options) -> Plan | Decline:
    norm, last = layers[0], layers[-1]
    spec = last.spec if isinstance(last, Linear) else last
    reason = check_fold_norm_affine(norm, spec)
    if reason:
        return Decline("fold_norm", reason, layers)
    plain, folded = fold_norm_affine(norm, spec)
    after = [plain, *layers[1:-1], Linear(folded) if isinstance(last, Linear) else folded]
    affine = Affine(norm.affine.scale, norm.affine.shift)
    speedup = options.cost_model.speedup([affine, spec], [folded], input_shape, dtype)
    return Plan("fold_norm", layers, after, speedup, removes_work=True)


RULE = register(Rule(
    "fold_norm", order=22, matches=fold_norm_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_fold_norm(match.layers, shape, dtype, options),
    summary="a LayerNorm's affine into the linear or conv after it (the LayerNorm keeps its normalization)",
    owns=lambda op: op.kind == "norm" and (op.norm is None or op.norm.affine is not None),
))
