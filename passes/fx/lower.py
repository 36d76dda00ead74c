"""Chain IR → torch modules for the FX front end, and running a run of graph nodes on its own.

Each record's modules are declared beside its ONNX nodes in passes/records/ (conv.py: nn.Conv2d,
PaddedConv2d for an asymmetric zero padding, nn.Linear; norm.py: nn.LayerNorm,
UnitAffineLayerNorm; shape.py: PermuteModule, nn.Flatten; concat.py: ConcatConvs; fused.py: the
kernels' FusedSepConv2d, FusedSepConvSE2d, FusedInvertedResidual2d / FusedInvertedResidualSE2d,
FusedMBConv2d); `lower` looks each record of a plan up there.
"""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from passes.records import fx_roles, lower_fx
from passes.records.concat import ConcatConvs
from passes.records.conv import PaddedConv2d, conv_module, linear_module
from passes.records.norm import UnitAffineLayerNorm
from passes.records.shape import PermuteModule
from rewrite.ir import ConvSpec

__all__ = ["ConcatConvs", "PaddedConv2d", "PermuteModule", "UnitAffineLayerNorm", "conv_module", "conv_spec_of_module",
           "fx_roles", "linear_module", "lower", "run_nodes"]


def lower(match, plan) -> list:
    """The modules computing plan.after at `match`, applied in order."""
    return lower_fx(plan.after, match.layout, match.name)


def conv_spec_of_module(module: nn.Module) -> ConvSpec | str:
    """ConvSpec of an nn.Conv2d (or PaddedConv2d), or the reason it is not liftable."""
    if type(module) not in (nn.Conv2d, PaddedConv2d):
        return f"{type(module).__name__} is not a plain nn.Conv2d"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only zero padding is rewritten)"
    if isinstance(module.padding, str):
        return f"padding={module.padding!r} is resolved by the conv at run time"
    if not module.weight.dtype.is_floating_point:
        return f"non-float weight dtype {module.weight.dtype}"
    if isinstance(module, PaddedConv2d):
        padding = module.sides
    else:
        ph, pw = module.padding
        padding = (ph, ph, pw, pw)
    return ConvSpec(module.weight.detach(), None if module.bias is None else module.bias.detach(),
                    tuple(module.stride), padding, tuple(module.dilation), module.groups)


def run_nodes(gm: fx.GraphModule, nodes: list, feeds: dict, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Evaluate `nodes` (in graph order) on `feeds` {node: tensor}; parameters (and values computed
    from parameters only) come from the graph, cast to `dtype` when given (float64 for the
    reference). Returns the last value."""
    from .graph import constant_value

    env = dict(feeds)

    def load(arg: fx.Node):
        if arg in env:
            return env[arg]
        value = constant_value(gm, arg, dtype)
        if value is None:
            raise KeyError(f"node {arg.name} is read by the site but is neither fed nor computed from parameters")
        return value

    for node in nodes:
        args, kwargs = fx.node.map_arg(node.args, load), fx.node.map_arg(node.kwargs, load)
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            module = copy.deepcopy(module).to(dtype) if dtype is not None else module
            env[node] = module(*args, **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)
    return env[nodes[-1]]
