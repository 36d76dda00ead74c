"""ONNX reverse pass (Fused-MBConv reversal): Conv dw→pw or pw→dw with nothing between ⇒ one
dense Conv, where the cost model predicts a win (rule: rewrite.rules.reverse).

A dw/pw pair with an activation or an unfolded BatchNorm between them is recorded as declined
with that reason: the exact collapse does not exist there.
"""
from __future__ import annotations

from rewrite.ir import ConvSpec
from rewrite.rules import Decline, is_reversible_pair, plan_reverse

from .context import OnnxContext, apply_site, chain_reference
from .graph import is_op, sole_consumer
from .lift import conv_node, match_activation


def _partner(ctx: OnnxContext, node):
    """(the conv this one feeds, the nodes between, what they are) — or (None, ...)."""
    out = node.outputs[0]
    user = sole_consumer(ctx.graph, out)
    if is_op(user, "Conv"):
        return user, [], ""
    act = match_activation(ctx.graph, out, ctx.overridable)
    if act is None and (user is None or len(user.outputs) != 1):
        return None, [], ""
    between, tail = (act.nodes, act.output) if act else ([user], user.outputs[0])
    nxt = sole_consumer(ctx.graph, tail)
    if is_op(nxt, "Conv"):
        what = (f"nonlinearity ({act.name}) between the convs blocks the exact collapse" if act else
                f"{user.op} between the convs " + ("(not folded) " if user.op == "BatchNormalization" else "")
                + "blocks the collapse")
        return nxt, between, what
    return None, [], ""


def run_reverse(ctx: OnnxContext) -> int:
    applied = 0
    todo = []
    for node in ctx.graph.nodes:
        if not is_op(node, "Conv") or ctx.made_by(node) == "factorize":
            continue
        a = ctx.conv_at(node)
        if not isinstance(a, ConvSpec) or not (a.is_depthwise or a.kernel_size == (1, 1)):
            continue
        partner, between, what = _partner(ctx, node)
        if partner is None:
            continue
        b = ctx.conv_at(partner)
        if isinstance(b, ConvSpec) and is_reversible_pair(a, b) and ctx.first_visit("reverse", node):
            todo.append((node, a, partner, b, what))
    for i, (node, a, partner, b, what) in enumerate(todo, 1):
        if not node.outputs or not partner.outputs:
            continue                                  # removed by an earlier rewrite of this sweep
        name = ctx.site_name(node)
        ctx.step("reverse", i, len(todo), name)
        before = f"{a.describe()} → {b.describe()}"
        if what:
            ctx.decline_reason(name, "reverse", what, before)
            continue
        shape = ctx.cost_shape(node.inputs[0], name, "reverse", before)
        if shape is None:
            continue
        plan = plan_reverse(a, b, shape, ctx.dtype, ctx.options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        x = node.inputs[0]
        new = [conv_node(plan.after[0], x, node.name or "conv", ctx.names)]
        applied += apply_site(ctx, name, plan, [node, partner], new, partner.outputs[0], [x],
                              chain_reference([a, b]))
    return applied
