"""fold_concat: convs (or linears over [N, C]) whose outputs are concatenated along the channels,
each read by the concat alone, then one per-channel affine (an eval BatchNorm) on the concat ⇒ the
same concat of the convs, each with its slice of the affine folded in; the affine is gone:

    s ⊙ cat(y_1, …, y_k) + t = cat(s_i ⊙ y_i + t_i)_i,   s_i ⊙ conv(x_i; W_i, b_i) + t_i = conv(x_i; W_i', b_i')

with s_i, t_i the slice of s, t over branch i's channels (rewrite.algebra.fold.fold_affine_concat).
Sites: MixNet's mixed convs (torch.split of the channels → one conv per part, each kernel size its
own → cat → BatchNorm), and any Inception-style concat of convs before a BatchNorm. What feeds the
convs (the split) is left as it is: each new conv reads its branch's input. Declined where a
branch is not a conv (an identity, a pool: there is nothing for its slice to fold into), where a
conv's output is also read elsewhere, or where two branches read the same value. Exact, and it
only removes work: applied wherever it folds. Lowered as one conv per branch and the concat
(FX: nn.Conv2d / nn.Linear modules and aten.cat; ONNX: Conv / Gemm nodes and Concat).
"""
from __future__ import annotations

from ..algebra import fold_affine_concat
from ..ir import Affine, Concat
from ..view import View
from .base import Decline, Match, Plan, Rule, conv_reason, declined, register


def fold_concat_matches(view: View):
    for op in view.ops:
        if op.kind != "concat" or op.axis != 1 or len(op.inputs) < 2:
            continue
        end = view.sole_user(op.output)
        if end is None or end.kind != "affine":
            continue              # nothing to fold, or the concat also feeds something else
        branches = [view.producer(v) for v in op.inputs]
        head = next((b for b in branches if b is not None), op)
        ops = [*(b for b in branches if b is not None), op, end]
        reason = end.reason or (None if end.affine is None or end.affine.axis == 1 else
                                f"the {end.label} acts on the last axis, not on the channels the {op.label} joins")
        if reason is None and len(set(op.inputs)) != len(op.inputs):
            reason = f"the {op.label} reads one value twice"
        for i, (value, conv) in enumerate(zip(op.inputs, branches), 1):
            if reason:
                break
            if conv is None or conv.kind != "conv":
                reason = (f"branch {i} of the {op.label} is {conv.describe() if conv else 'an input of the graph'}, "
                          f"not a conv: the {end.label}'s slice for it has nothing to fold into")
            elif conv_reason(conv, linear_ok=True) or conv.conv is None:
                reason = conv_reason(conv, linear_ok=True) or f"the conv of branch {i} is not lifted"
            elif view.readers(value) > 1:
                reason = (f"the {conv.describe()} of branch {i} also feeds {view.describe_readers(value)}; folding "
                          f"the {end.label} into it would change what the others see")
            elif conv.layout != branches[0].layout:
                reason = f"the {op.label} joins convs and linears"
        if reason is None and len({conv.inputs[0] for conv in branches}) != len(branches):
            reason = "two branches read the same value"
        if reason:
            yield declined("fold_concat", head, reason, ops)
            continue
        convs = tuple(conv.conv for conv in branches)
        yield Match("fold_concat", head.name, ops, [Concat(convs), end.affine], branches[0].inputs[0], end.output,
                    more_inputs=tuple(conv.inputs[0] for conv in branches[1:]))


def plan_fold_concat(layers: list, input_shape, dtype, options) -> Plan | Decline:
    concat, affine = layers
    if affine.scale.numel() != concat.out_channels:
        return Decline("fold_concat", f"the affine has {affine.scale.numel()} channels, the concat produces "
                       f"{concat.out_channels}", layers)
    folded = fold_affine_concat(concat, Affine(affine.scale, affine.shift))
    b, _, h, w = input_shape
    model = options.cost_model
    convs = sum(model.chain_time([conv], (b, conv.in_channels, h, w), dtype) for conv in concat.convs)
    oh, ow = concat.convs[0].output_hw(h, w)
    scale = model.chain_time([Affine(affine.scale, affine.shift)], (b, concat.out_channels, oh, ow), dtype)
    return Plan("fold_concat", layers, [folded], (convs + scale) / convs, removes_work=True)


RULE = register(Rule(
    "fold_concat", order=23, matches=fold_concat_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_fold_concat(match.layers, shape, dtype, options),
    summary="a BatchNorm after a concat of convs, its slice into each conv",
))
