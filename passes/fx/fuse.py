"""FX fuse pass: dw(+act1)(+SE) → pw(+act2)(+residual add) ⇒ one FusedSepConv2d, or
FusedSepConvSE2d when a squeeze-excitation sits between the convs (rule: rewrite.rules.fuse).

Runs after fold (BatchNorm is already inside the convs) and only for a GPU target or when
forced. A squeeze-excitation is matched as MobileNetV3 / EfficientNet write it: a · gate(conv1x1(
act(conv1x1(global_mean(a))))), the mean an AdaptiveAvgPool2d(1), F.adaptive_avg_pool2d(·, 1) or
.mean((2, 3), keepdim=True); any other product between the convs declines with its reason. The
residual is fused when its value was captured (it is the input of a conv, as an MBConv block's
input is); otherwise the add stays separate.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import ACTIVATIONS, ConvSpec, SqueezeExcite
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


def _is_global_mean(node: fx.Node, gm) -> bool:
    """Whether `node` takes the spatial mean of its input, keeping [B, C, 1, 1]."""
    if node.op == "call_module":
        pool = gm.get_submodule(node.target)
        return isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
    if _is_call(node, (F.adaptive_avg_pool2d,)):
        return (node.args[1:2] or [node.kwargs.get("output_size")])[0] in (1, (1, 1))
    if (node.op == "call_method" and node.target == "mean") or _is_call(node, (torch.mean,)):
        dims = (node.args[1:2] or [node.kwargs.get("dim")])[0]
        keepdim = (node.args[2:3] or [node.kwargs.get("keepdim", False)])[0]
        return keepdim is True and isinstance(dims, (tuple, list)) and sorted(d % 4 for d in dims) == [2, 3]
    return False


def _match_se(ctx: FxContext, tip: fx.Node):
    """(SE nodes in graph order, their conv modules, SqueezeExcite) for tip · gate(...(mean(tip))),
    or the reason the product between the convs is not such a squeeze-excitation."""
    users = list(tip.users)
    mul = next((u for u in users if _is_call(u, MULS)), None)
    pool = next((u for u in users if u is not mul), None)
    if len(users) != 2 or pool is None or not _is_global_mean(pool, ctx.gm):
        return "a product between the depthwise and pointwise convs that is not a squeeze-excitation"
    nodes, convs, act = [pool], [], None
    for step in ("reduce", "act", "expand", "gate"):
        nxt = sole_user(nodes[-1])
        if nxt is None:
            return f"squeeze-excitation {step} has no single next layer"
        if step in ("reduce", "expand"):
            module, spec = ctx.conv_at(nxt)
            if not isinstance(spec, ConvSpec):
                return f"squeeze-excitation {step} is not a rewritable conv ({spec})"
            convs.append((module, spec))
        else:
            name = activation_name(nxt, ctx.gm)
            if name is None and step == "act":
                continue  # a linear excitation: reduce feeds expand directly
            if name is None:
                return "squeeze-excitation gate is not a known activation"
            act, gate = (name, None) if step == "act" else (act, name)
        nodes.append(nxt)
    if sole_user(nodes[-1]) is not mul or set(mul.args) != {tip, nodes[-1]} or mul.kwargs:
        return "squeeze-excitation gate does not scale the depthwise output alone"
    se = SqueezeExcite(convs[0][1], act, convs[1][1], gate)
    return nodes + [mul], [m for m, _ in convs], se


def _match(ctx: FxContext, dw_node):
    """(chain nodes, act1, pw node, act2, residual node or None, SE modules, SqueezeExcite or None),
    or a reason string, or None."""
    chain = [dw_node]
    nxt = sole_user(dw_node)
    act1 = activation_name(nxt, ctx.gm) if nxt is not None else None
    if act1:
        chain.append(nxt)
    tip = chain[-1]
    se_modules, se = [], None
    if any(_is_call(u, MULS) for u in tip.users):
        found = _match_se(ctx, tip)
        if isinstance(found, str):
            return f"{found} blocks the fusion"
        se_nodes, se_modules, se = found
        chain.extend(se_nodes)
        tip = chain[-1]
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
    return chain, act1, pw_node, act2, residual, se_modules, se


def _chain_function(convs, spec):
    """act2(pw(act1(dw(x)) [· se])) [+ residual] with the given conv modules [dw, pw, SE reduce,
    SE expand] (the unfused chain)."""
    def run(x, *residual):
        y = convs[0](x)
        y = ACTIVATIONS[spec.act1](y) if spec.act1 else y
        if spec.se:
            s = convs[2](y.mean((2, 3), keepdim=True))
            s = ACTIVATIONS[spec.se.act](s) if spec.se.act else s
            y = y * ACTIVATIONS[spec.se.gate](convs[3](s))
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
        chain, act1, pw_node, act2, residual, se_modules, se = found
        pw_mod, pw = ctx.conv_at(pw_node)
        x = node.meta.get(INPUT_KEY)
        if x is None:
            ctx.decline_reason(name, "fuse", "no activation reached this site with the example inputs", dw.describe())
            continue
        res_value = _captured_value(ctx, residual) if residual is not None else None
        out_shape = (x.shape[0], pw.out_channels) + dw.output_hw(x.shape[2], x.shape[3])
        fuse_residual = res_value is not None and tuple(res_value.shape) == out_shape
        plan = plan_fuse(dw, act1, pw, act2, fuse_residual, tuple(x.shape), ctx.dtype, options, se)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        if fuse_residual:
            chain = chain + [sole_user(chain[-1])]
        fused = fused_module(plan.after[0])
        convs = [dw_mod, pw_mod] + se_modules
        original = _chain_function(convs, plan.after[0])
        reference = _chain_function(float64_copy(convs), plan.after[0])
        extra = ((residual,), (res_value,)) if fuse_residual else ((), ())
        applied += apply_site(ctx, name, plan, chain, [fused], original, reference, fused, extra[0], extra[1])
    return applied
