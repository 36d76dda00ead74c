"""ONNX fold pass: Conv → BatchNormalization (inference) or a per-channel constant Mul/Add/Sub/Div
⇒ one Conv with new weights and bias (rule: rewrite.rules.fold).

The folded weights are written as new initializers: the originals may be shared with other
nodes and are never changed in place.
"""
from __future__ import annotations

from rewrite.ir import ConvSpec
from rewrite.rules import plan_fold

from .context import OnnxContext, apply_site, chain_reference
from .graph import is_op, uses
from .lift import affine_after, conv_node


def _candidates(ctx: OnnxContext):
    for conv in list(ctx.graph.nodes):
        if not is_op(conv, "Conv") or not conv.outputs:
            continue
        out = conv.outputs[0]
        bn = next((n for n in out.outputs if is_op(n, "BatchNormalization") and n.inputs[0] is out), None)
        if bn is not None:
            yield conv, bn
        elif uses(ctx.graph, out) == 1 and out.outputs and is_op(out.outputs[0], "Mul", "Add", "Sub", "Div"):
            yield conv, out.outputs[0]


def run_fold(ctx: OnnxContext) -> int:
    applied = 0
    todo = [(c, a) for c, a in _candidates(ctx) if ctx.first_visit("fold", c)]
    for i, (conv, after) in enumerate(todo, 1):
        if not conv.outputs or not after.outputs:
            continue                                  # removed by an earlier rewrite of this sweep
        name = ctx.site_name(conv)
        ctx.step("fold", i, len(todo), name)
        out = conv.outputs[0]
        spec = ctx.conv_at(conv)
        channels = spec.out_channels if isinstance(spec, ConvSpec) else 0
        affine = affine_after(after, out, channels, ctx.overridable)
        if affine is None:
            continue                                  # a Mul/Add that is not a per-channel constant
        before = f"{spec.describe()} → {after.op}" if isinstance(spec, ConvSpec) else f"Conv → {after.op}"
        if uses(ctx.graph, out) > 1:
            ctx.decline_reason(name, "fold", f"conv output has {uses(ctx.graph, out)} readers; folding "
                               f"the {after.op} would change what the others see", before)
            continue
        if isinstance(spec, str) or isinstance(affine, str):
            ctx.decline_reason(name, "fold", spec if isinstance(spec, str) else affine, before)
            continue
        x = conv.inputs[0]
        shape = ctx.shape(x) or (1, spec.in_channels, 32, 32)
        plan = plan_fold(spec, affine, shape, ctx.dtype, ctx.options)
        new = [conv_node(plan.after[0], x, conv.name or "conv", ctx.names)]
        applied += apply_site(ctx, name, plan, [conv, after], new, after.outputs[0], [x],
                              chain_reference([spec, affine]))
    return applied
