"""FX fold pass: Conv2d → BatchNorm2d (eval) ⇒ one Conv2d (rule: rewrite.rules.fold)."""
from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from rewrite.ir import ConvSpec
from rewrite.rules import plan_fold

from .context import FxContext, apply_site, sequential, sequential_pair
from .graph import INPUT_KEY, live_nodes, module_of
from .lift import batchnorm_affine, conv_module


def run_fold(ctx: FxContext) -> int:
    applied = 0
    for bn_node in live_nodes(ctx.gm):
        bn = module_of(ctx.gm, bn_node)
        if not isinstance(bn, nn.BatchNorm2d) or not bn_node.args:
            continue
        conv_node = bn_node.args[0]
        if not isinstance(conv_node, fx.Node) or not isinstance(module_of(ctx.gm, conv_node), nn.Conv2d):
            continue
        if not ctx.first_visit("fold", conv_node):
            continue
        name = ctx.site_name(conv_node)
        conv, spec = ctx.conv_at(conv_node)
        if len(conv_node.users) > 1:
            ctx.decline_reason(name, "fold", f"conv output has {len(conv_node.users)} users; folding would change the others")
            continue
        affine = batchnorm_affine(bn)
        if not isinstance(spec, ConvSpec) or isinstance(affine, str):
            ctx.decline_reason(name, "fold", spec if isinstance(spec, str) else affine)
            continue
        x = conv_node.meta.get(INPUT_KEY)
        shape = tuple(x.shape) if x is not None else (1, spec.in_channels, 32, 32)
        plan = plan_fold(spec, affine, shape, ctx.dtype, ctx.options)
        new = [conv_module(s) for s in plan.after]
        applied += apply_site(ctx, name, plan, [conv_node, bn_node], new,
                              *sequential_pair([conv, bn]), sequential(new))
    return applied
