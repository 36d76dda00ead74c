"""Reading an exported GraphModule: op names, parameters and values computed from parameters only.

Shared by the view (which lifts ops) and the lowering (which runs a site's nodes on their own).
"""
from __future__ import annotations

import torch
import torch.fx as fx


def op_name(target) -> str:
    """aten.conv2d.default → conv2d."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    return getattr(target, "__name__", str(target))


def fetch_attr(gm: fx.GraphModule, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def constant_value(gm: fx.GraphModule, arg, dtype: torch.dtype | None = None, depth: int = 4):
    """The value of `arg` when it depends on parameters only: a get_attr, or a few ops over
    get_attrs (layer scale's gamma.reshape(1, -1, 1, 1)); else None. Float leaves are cast to
    `dtype` when given."""
    if not isinstance(arg, fx.Node) or depth < 0:
        return None
    if arg.op == "get_attr":
        value = fetch_attr(gm, arg.target)
        if not isinstance(value, torch.Tensor):
            return None
        return value.detach().to(dtype) if dtype is not None and value.is_floating_point() else value.detach()
    if arg.op != "call_function" or not arg.all_input_nodes:
        return None
    values = {n: constant_value(gm, n, dtype, depth - 1) for n in arg.all_input_nodes}
    if any(v is None for v in values.values()):
        return None
    with torch.no_grad():
        return arg.target(*fx.node.map_arg(arg.args, values.get), **fx.node.map_arg(arg.kwargs, values.get))


def owner_path(node: fx.Node) -> str:
    """The module path owning a get_attr'd parameter (`features.0.0` for `features.0.0.weight`;
    the parameter's own name when it sits on the root)."""
    if node.op != "get_attr":
        return node.name
    return node.target.rpartition(".")[0] or node.target
