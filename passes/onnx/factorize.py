"""ONNX factorize pass: dense KxK Conv ⇒ dw→pw or pw→dw Conv pair (rule: rewrite.rules.factorize).

Integer/quantized convs and convs whose weights are not constant are declined with the reason.
"""
from __future__ import annotations

from rewrite.ir import ConvSpec
from rewrite.rules import Decline, plan_factorize

from .context import OnnxContext, apply_site, chain_reference
from .graph import is_op
from .lift import QUANTIZED_CONVS, conv_node


def run_factorize(ctx: OnnxContext) -> int:
    applied = 0
    todo = []
    for node in ctx.graph.nodes:
        if is_op(node, "Conv", *QUANTIZED_CONVS) and ctx.made_by(node) not in ("factorize", "reverse"):
            spec = ctx.conv_at(node)
            factored = isinstance(spec, ConvSpec) and (spec.is_depthwise or spec.kernel_size == (1, 1))
            if not factored and ctx.first_visit("factorize", node):
                todo.append((node, spec))
    for i, (node, spec) in enumerate(todo, 1):
        name = ctx.site_name(node)
        ctx.step("factorize", i, len(todo), name)
        if isinstance(spec, str):
            ctx.decline_reason(name, "factorize", spec)
            continue
        shape = ctx.cost_shape(node.inputs[0], name, "factorize", spec.describe())
        if shape is None:
            continue
        plan = plan_factorize(spec, shape, ctx.dtype, ctx.options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        x, base = node.inputs[0], node.name or "conv"
        first = conv_node(plan.after[0], x, f"{base}_{_role(plan.after[0])}", ctx.names)
        second = conv_node(plan.after[1], first.outputs[0], f"{base}_{_role(plan.after[1])}", ctx.names)
        applied += apply_site(ctx, name, plan, [node], [first, second], node.outputs[0], [x],
                              chain_reference([spec]))
    return applied


def _role(spec) -> str:
    return "dw" if spec.is_depthwise else "pw"
