"""Constant folding on the captured graph: a subgraph that does not depend on the model's input
values is evaluated once and replaced by a buffer.

ONNX files get this from onnxslim's clean-up (passes/onnx/cleanup.py); this is the same for the
PyTorch path, so that both formats run the same work (issue 33: EdgeNeXt's positional encoding,
a 1x1 conv over a Fourier grid built from zeros, cumsum and sin/cos, ran on every call).

A node is constant when every node it reads is a parameter or buffer (get_attr), a constant, or
the batch size (sym_size of the input's dimension 0: export keeps the batch dynamic, and a
positional grid is built as zeros(B, H, W)). A constant tensor read by a non-constant node (the
frontier) is evaluated at batch 1 and at batch 2: when neither depends on the batch it becomes a
buffer; when only its dimension 0 follows the batch and every batch row is the same, it becomes a
buffer of one row expanded to the batch (a view, no copy). Only frontiers with work behind them
are folded (a conv, an arithmetic op, a constructor such as zeros or arange): a weight read through
a view or a reshape stays as it is, where the view's lifting expects it. Random and mutating ops
are never folded.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

# ops that only view or restate a tensor: a frontier with nothing else behind it is not folded
_VIEWS = {"view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "permute", "transpose", "t", "expand",
          "flatten", "alias", "detach", "clone", "to", "contiguous", "_to_copy", "slice", "select", "sym_size",
          "lift_fresh_copy", "getitem"}


def _name(node: fx.Node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))


def _foldable_call(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return False
    tags = getattr(node.target, "tags", ())
    if torch.Tag.nondeterministic_seeded in tags:
        return False
    return not _name(node).startswith("_assert")


def _batch_size(node: fx.Node, inputs: set) -> bool:
    return node.op == "call_function" and _name(node) == "sym_size" and node.args[0] in inputs and \
        len(node.args) > 1 and node.args[1] == 0


def fold_constants(gm: fx.GraphModule) -> int:
    """Fold the constant subgraphs of `gm` in place; returns how many frontier values became buffers."""
    graph = gm.graph
    inputs = {n for n in graph.nodes if n.op == "placeholder"}
    const: dict = {}          # node → True where it depends on nothing but constants and the batch size
    work: dict = {}           # node → whether a non-view op is behind it
    for node in graph.nodes:
        if node.op == "get_attr":
            const[node], work[node] = True, False
        elif _batch_size(node, inputs):
            const[node], work[node] = True, False
        elif _foldable_call(node):
            reads = node.all_input_nodes
            if all(const.get(r, False) for r in reads):
                const[node] = True
                work[node] = _name(node) not in _VIEWS or any(work[r] for r in reads)
    frontier = [n for n in graph.nodes if const.get(n) and work.get(n) and n.op == "call_function"
                and any(not const.get(u, False) and not _name(u).startswith("_assert") for u in n.users)]
    folded = 0
    for node in frontier:
        one, two = _evaluate(gm, node, const, 1), _evaluate(gm, node, const, 2)
        if not isinstance(one, torch.Tensor) or not isinstance(two, torch.Tensor):
            continue
        if one.shape == two.shape:
            if not torch.equal(one, two):
                continue
            batched = False
        elif one.dim() and one.shape[0] == 1 and two.shape[0] == 2 and one.shape[1:] == two.shape[1:] \
                and torch.equal(two[:1], two[1:]):
            batched, one = True, two[:1]      # the rows of one evaluation: bit for bit the same
        else:
            continue
        name = _claim(gm, f"_constant_{node.name}")
        gm.register_buffer(name, one.detach().clone())
        with graph.inserting_before(node):
            value = graph.get_attr(name)
            if batched:
                size = next((n for n in graph.nodes if _batch_size(n, inputs)), None)
                if size is None:
                    graph.erase_node(value)
                    delattr(gm, name)
                    continue
                value = graph.call_function(torch.ops.aten.expand.default,
                                            (value, [size, *one.shape[1:]]))
        node.replace_all_uses_with(value)
        folded += 1
    if folded:
        _drop_dead(graph, const)
        graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        graph.lint()
        gm.recompile()
    return folded


def _drop_dead(graph: fx.Graph, const: dict) -> None:
    """Erase the export's metadata asserts left reading only folded nodes (dead code elimination
    keeps them: they are impure)."""
    for node in list(graph.nodes):
        if node.op == "call_function" and _name(node).startswith("_assert") and not node.users and \
                all(const.get(r, False) for r in node.all_input_nodes):
            graph.erase_node(node)


def _evaluate(gm: fx.GraphModule, node: fx.Node, const: dict, batch: int):
    """The value of constant `node` with the batch size set to `batch`."""
    values: dict = {}

    def value(n: fx.Node):
        if n in values:
            return values[n]
        if n.op == "get_attr":
            out = _attr(gm, n.target)
        elif _name(n) == "sym_size":
            out = batch
        else:
            args = fx.node.map_arg(n.args, value)
            kwargs = fx.node.map_arg(n.kwargs, value)
            out = n.target(*args, **kwargs)
        values[n] = out
        return out

    try:
        with torch.no_grad():
            return value(node)
    except Exception:  # noqa: BLE001 - anything that does not evaluate stays in the graph
        return None


def _attr(gm: fx.GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _claim(gm: fx.GraphModule, base: str) -> str:
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name
