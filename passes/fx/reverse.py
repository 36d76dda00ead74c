"""FX reverse pass (Fused-MBConv reversal): Conv2d dw→pw or pw→dw, nothing between ⇒ one dense
Conv2d, where the cost model predicts a win (rule: rewrite.rules.reverse).

A dw/pw pair with an activation or an unfolded BatchNorm between them is recorded as declined
with that reason: the exact collapse does not exist there.
"""
from __future__ import annotations

from rewrite.ir import ConvSpec
from rewrite.rules import Decline, is_reversible_pair, plan_reverse

from .context import FxContext, apply_site, sequential, sequential_pair
from .graph import INPUT_KEY, live_nodes, module_of, sole_user
from .lift import activation_name, conv_module


def _partner(ctx: FxContext, node):
    """The conv this one feeds, and what stands between (None if directly)."""
    user = sole_user(node)
    if user is None:
        return None, None
    if isinstance(ctx.conv_at(user)[1], ConvSpec):
        return user, None
    if len(user.users) == 1:
        nxt = sole_user(user)
        if isinstance(ctx.conv_at(nxt)[1], ConvSpec):
            return nxt, user
    return None, None


def _between_reason(ctx: FxContext, node) -> str:
    act = activation_name(node, ctx.gm)
    if act:
        return f"nonlinearity ({act}) between the convs blocks the exact collapse"
    module = module_of(ctx.gm, node)
    what = type(module).__name__ if module is not None else str(node.target)
    return f"{what} between the convs (not folded) blocks the collapse"


def run_reverse(ctx: FxContext) -> int:
    applied = 0
    for node in live_nodes(ctx.gm):
        if node.op != "call_module" or node.meta.get("dwsep_origin") == "factorize":
            continue
        first, a = ctx.conv_at(node)
        if not isinstance(a, ConvSpec) or not (a.is_depthwise or a.kernel_size == (1, 1)):
            continue
        partner, between = _partner(ctx, node)
        if partner is None:
            continue
        second, b = ctx.conv_at(partner)
        if not is_reversible_pair(a, b) or not ctx.first_visit("reverse", node):
            continue
        name = ctx.site_name(node)
        before = f"{a.describe()} → {b.describe()}"
        if between is not None:
            ctx.decline_reason(name, "reverse", _between_reason(ctx, between), before)
            continue
        x = node.meta.get(INPUT_KEY)
        if x is None:
            ctx.decline_reason(name, "reverse", "no activation reached this site with the example inputs", before)
            continue
        plan = plan_reverse(a, b, tuple(x.shape), ctx.dtype, ctx.options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        new = [conv_module(s) for s in plan.after]
        applied += apply_site(ctx, name, plan, [node, partner], new,
                              *sequential_pair([first, second]), sequential(new))
    return applied
