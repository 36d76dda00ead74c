"""In-place ops in an exported graph: taken apart for matching, put back for speed.

Capture turns `y = op_(x)` on a freshly computed x into `y = op(x)` (functionalize), so that
patterns see plain dataflow. Once the passes are done, an activation whose input is a fresh
buffer that nothing else reads goes back in place (restore_inplace): `y = act_(x)` computes the
same values and skips allocating (and, on the CPU, page-faulting) a second buffer of the
activation's size; this is what `nn.ReLU(inplace=True)` does in the module the graph came from.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

aten = torch.ops.aten

# activations restored in place (each has an aten in-place twin of the same overload)
ACTIVATIONS = ("relu", "hardtanh", "silu", "hardswish", "hardsigmoid", "sigmoid", "leaky_relu", "elu", "gelu",
               "mish")
# ops whose output is a new buffer and whose backward does not read that output, so that an
# activation may overwrite it even with autograd on
FRESH_PRODUCERS = {aten.conv2d.default, aten.convolution.default, aten.add.Tensor, aten.sub.Tensor,
                   aten.mul.Tensor, aten.div.Tensor, aten.batch_norm.default, aten.linear.default,
                   aten.addmm.default, aten.mm.default, aten.cat.default}


def _returns_alias(node: fx.Node) -> bool:
    """Whether the op's output may share storage with an input (a view, or in-place)."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return True
    return any(r.alias_info is not None for r in node.target._schema.returns)


def _functional_twin(target):
    """aten.relu_.default → aten.relu.default, or None when there is none."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    schema = target._schema
    name = schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_") or not schema.arguments or \
            schema.arguments[0].alias_info is None or not schema.arguments[0].alias_info.is_write:
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _inplace_twin(target):
    """aten.relu.default → aten.relu_.default for the ACTIVATIONS, else None."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    name = target._schema.name.split("::")[-1]
    packet = getattr(torch.ops.aten, name + "_", None) if name in ACTIVATIONS else None
    return getattr(packet, target._overloadname, None) if packet is not None else None


def functionalize(gm: fx.GraphModule) -> None:
    """y = op_(x) on a freshly computed x becomes y = op(x); readers of x after it read y."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        twin = _functional_twin(node.target) if node.op == "call_function" else None
        if twin is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        mutated = node.args[0]
        if mutated.op != "call_function" or _returns_alias(mutated):
            continue            # a view, a graph input or a parameter: the mutation is visible elsewhere
        node.target = twin
        here = order[node]
        mutated.replace_all_uses_with(node, delete_user_cb=lambda user: order.get(user, here + 1) > here)


def restore_inplace(gm: fx.GraphModule) -> int:
    """y = act(x) → y = act_(x) where x is a fresh buffer (FRESH_PRODUCERS, or an nn.Conv2d /
    nn.Linear module) whose only reader is the activation: no other op, and not the graph's output, can
    see the overwrite. Returns how many activations went in place; recompile() afterwards."""
    count = 0
    for node in gm.graph.nodes:
        twin = _inplace_twin(node.target) if node.op == "call_function" else None
        source = node.args[0] if twin is not None and node.args else None
        if isinstance(source, fx.Node) and len(source.users) == 1 and _fresh(gm, source):
            node.target = twin
            count += 1
    return count


def _fresh(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.Conv2d, nn.Linear))
    return node.op == "call_function" and node.target in FRESH_PRODUCERS
