"""FX factorize pass: dense KxK Conv2d ⇒ dw→pw or pw→dw Conv2d pair (rule: rewrite.rules.factorize)."""
from __future__ import annotations

from rewrite.rules import Decline, plan_factorize

from .context import FxContext, apply_site, sequential, sequential_pair
from .graph import INPUT_KEY, live_nodes
from .lift import conv_module


def run_factorize(ctx: FxContext) -> int:
    applied = 0
    for node in live_nodes(ctx.gm):
        if node.op != "call_module" or node.meta.get("dwsep_origin") in ("factorize", "reverse"):
            continue
        conv, spec = ctx.conv_at(node)
        if conv is None or spec == "not a conv" or not ctx.first_visit("factorize", node):
            continue
        name = ctx.site_name(node)
        if isinstance(spec, str):
            ctx.decline_reason(name, "factorize", spec)
            continue
        if spec.is_depthwise or spec.kernel_size == (1, 1):
            continue  # already in factored form
        x = node.meta.get(INPUT_KEY)
        if x is None:
            ctx.decline_reason(name, "factorize", "no activation reached this site with the example inputs", spec.describe())
            continue
        plan = plan_factorize(spec, tuple(x.shape), ctx.dtype, ctx.options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        new = [conv_module(s) for s in plan.after]
        applied += apply_site(ctx, name, plan, [node], new, *sequential_pair([conv]), sequential(new))
    return applied
