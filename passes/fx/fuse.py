"""FX fuse pass: dw(+act1) → pw(+act2)(+residual add) ⇒ one FusedSepConv2d (rule: rewrite.rules.fuse).

Runs after fold (BatchNorm is already inside the convs) and only for a GPU target or when
forced. A squeeze-excitation gate (x · sigmoid(...)) between the dw and pw convs blocks the
fusion and is recorded as the reason. The residual is fused when its value was captured (it is
the input of a conv, as an MBConv block's input is); otherwise the add stays separate.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from rewrite.ir import ACTIVATIONS, ConvSpec
from rewrite.rules import Decline, plan_fuse

from .context import FxContext, apply_site, float64_copy
from .graph import INPUT_KEY, live_nodes, sole_user
from .lift import activation_name, fused_module

ADDS = (operator.add, torch.add)
MULS = (operator.mul, torch.mul)


def _is_call(node, functions) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in functions


def _captured_value(ctx: FxContext, node: fx.Node):
    """The value `node` had in the capture run: it is the captured input of a conv it feeds."""
    for user in node.users:
        if user.op == "call_module" and user.args and user.args[0] is node and INPUT_KEY in user.meta:
            return user.meta[INPUT_KEY]
    return None


def _match(ctx: FxContext, dw_node):
    """(chain nodes, act1, pw node, act2, residual node or None) or a reason string or None."""
    chain = [dw_node]
    nxt = sole_user(dw_node)
    act1 = activation_name(nxt, ctx.gm) if nxt is not None else None
    if act1:
        chain.append(nxt)
    tip = chain[-1]
    if any(_is_call(u, MULS) for u in tip.users):
        return "squeeze-excitation (x · gate) between the depthwise and pointwise convs blocks the fusion"
    pw_node = sole_user(tip)
    if pw_node is None or not isinstance(ctx.conv_at(pw_node)[1], ConvSpec):
        return None
    chain.append(pw_node)
    nxt = sole_user(pw_node)
    act2 = activation_name(nxt, ctx.gm) if nxt is not None else None
    if act2:
        chain.append(nxt)
    residual = None
    add = sole_user(chain[-1])
    if _is_call(add, ADDS) and len(add.args) == 2 and not add.kwargs:
        other = add.args[1] if add.args[0] is chain[-1] else add.args[0]
        if isinstance(other, fx.Node) and other is not chain[-1]:
            residual = other
    return chain, act1, pw_node, act2, residual


def _chain_function(convs, spec):
    """act2(pw(act1(dw(x)))) [+ residual] with the given conv modules (the unfused chain)."""
    def run(x, *residual):
        y = convs[0](x)
        y = ACTIVATIONS[spec.act1](y) if spec.act1 else y
        y = convs[1](y)
        y = ACTIVATIONS[spec.act2](y) if spec.act2 else y
        return y + residual[0] if residual else y
    return run


def run_fuse(ctx: FxContext) -> int:
    options = ctx.options
    if not (getattr(options.cost_model, "profile", None) and options.cost_model.profile.is_gpu or options.force_fuse):
        note = "fuse pass skipped: the target is not a GPU (force_fuse=True fuses anyway)"
        if note not in ctx.report.notes:
            ctx.report.notes.append(note)
        return 0
    applied = 0
    for node in live_nodes(ctx.gm):
        dw_mod, dw = ctx.conv_at(node)
        if not isinstance(dw, ConvSpec) or not dw.is_depthwise or not ctx.first_visit("fuse", node):
            continue
        name = ctx.site_name(node)
        found = _match(ctx, node)
        if found is None:
            continue
        if isinstance(found, str):
            ctx.decline_reason(name, "fuse", found, dw.describe())
            continue
        chain, act1, pw_node, act2, residual = found
        pw_mod, pw = ctx.conv_at(pw_node)
        x = node.meta.get(INPUT_KEY)
        if x is None:
            ctx.decline_reason(name, "fuse", "no activation reached this site with the example inputs", dw.describe())
            continue
        res_value = _captured_value(ctx, residual) if residual is not None else None
        out_shape = (x.shape[0], pw.out_channels) + dw.output_hw(x.shape[2], x.shape[3])
        fuse_residual = res_value is not None and tuple(res_value.shape) == out_shape
        plan = plan_fuse(dw, act1, pw, act2, fuse_residual, tuple(x.shape), ctx.dtype, options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        if fuse_residual:
            chain = chain + [sole_user(chain[-1])]
        fused = fused_module(plan.after[0])
        original = _chain_function([dw_mod, pw_mod], plan.after[0])
        reference = _chain_function(float64_copy([dw_mod, pw_mod]), plan.after[0])
        extra = ((residual,), (res_value,)) if fuse_residual else ((), ())
        applied += apply_site(ctx, name, plan, chain, [fused], original, reference, fused, extra[0], extra[1])
    return applied
