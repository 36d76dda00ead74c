"""Small onnx-graphsurgeon queries and the one graph edit every rewrite uses.

Tensors are compared by identity: a graph-surgeon Tensor's `==` compares names only.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

STANDARD_DOMAINS = ("", "ai.onnx")


def is_op(node, *ops: str) -> bool:
    return node is not None and node.op in ops and (node.domain or "") in STANDARD_DOMAINS


def producer(t: gs.Tensor):
    return t.inputs[0] if t.inputs else None


def sole_consumer(graph: gs.Graph, t: gs.Tensor):
    """The one node reading `t`, or None (several readers, or it is also a graph output)."""
    if len(t.outputs) != 1 or any(o is t for o in graph.outputs):
        return None
    return t.outputs[0]


def is_constant(t: gs.Tensor, overridable: set) -> bool:
    """Whether constant_value(t) has a value, without loading it."""
    if isinstance(t, gs.Constant):
        return t.name not in overridable
    node = producer(t)
    if is_op(node, "Identity"):
        return is_constant(node.inputs[0], overridable)
    return is_op(node, "Constant")


MAX_FOLDED_NODES = 24        # a constant expression larger than this is left as it is
UNFOLDABLE = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")


def folded_value(t: gs.Tensor, overridable: set, opset: int) -> np.ndarray | None:
    """constant_value, or the value of a small expression over constants only, evaluated with
    onnx's reference evaluator at the model's `opset`: torch's exporter writes a constant
    F.pad's widths as ConstantOfShape → Concat → Reshape → Slice → Transpose → Reshape → Cast.
    None when any leaf is a graph input or an overridable initializer, or the expression has
    more than MAX_FOLDED_NODES nodes."""
    value = constant_value(t, overridable)
    if value is not None or t is None or not t.name:
        return value
    nodes, leaves, stack, seen = [], {}, [t], set()
    while stack:
        tensor = stack.pop()
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        value = constant_value(tensor, overridable)
        if value is not None:
            leaves[tensor.name] = gs.Constant(tensor.name, np.asarray(value))
            continue
        node = producer(tensor)
        if node is None or node.domain not in ("", None) or len(nodes) == MAX_FOLDED_NODES or is_op(node, *UNFOLDABLE):
            return None
        nodes.append(node)
        stack.extend(i for i in node.inputs if i.name)
    try:
        from onnx.reference import ReferenceEvaluator
        made: dict = dict(leaves)

        def tensor_for(x):
            return made.setdefault(x.name, gs.Variable(x.name, x.dtype, x.shape))
        copies = [gs.Node(n.op, n.name, dict(n.attrs), [tensor_for(i) if i.name else gs.Variable.empty() for i in n.inputs],
                          [tensor_for(o) for o in n.outputs]) for n in nodes]
        sub = gs.Graph(nodes=copies, outputs=[made[t.name]], opset=opset)
        sub.toposort()
        model = gs.export_onnx(sub, do_type_check=False)
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
    except Exception:  # noqa: BLE001 - anything the evaluator cannot do stays "computed at run time"
        return None


def constant_value(t: gs.Tensor, overridable: set) -> np.ndarray | None:
    """The value of a constant tensor (initializer, or Constant node output), else None.

    An initializer that is also a graph input (`overridable`) is not constant: the caller may
    feed another value. Lazily stored initializers are read without being cached in the graph.
    """
    if t is None or not t.name and not isinstance(t, gs.Constant):
        return None
    if isinstance(t, gs.Constant):
        if t.name in overridable:
            return None
        return t._values.load() if isinstance(t._values, LazyValues) else t._values
    node = producer(t)
    if is_op(node, "Identity"):       # exporters share equal initializers through Identity nodes
        return constant_value(node.inputs[0], overridable)
    if not is_op(node, "Constant"):
        return None
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        return constant_value(attrs["value"], set())
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    return None


def scalar(t: gs.Tensor, overridable: set) -> float | None:
    value = constant_value(t, overridable)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def not_constant_reason(t: gs.Tensor, what: str, overridable: set) -> str:
    if isinstance(t, gs.Constant) and t.name in overridable:
        return (f"{what} {t.name!r} is a graph input (an initializer the caller may override); "
                "move it out of the graph inputs to allow rewriting")
    node = producer(t)
    if node is None:
        return f"{what} is not a constant initializer (it is the graph input {t.name!r})"
    if node.op == "DequantizeLinear":
        return f"{what} is computed by DequantizeLinear (a quantized QDQ model)"
    return f"{what} is not a constant initializer (computed by {node.op})"


class Names:
    """Fresh node/tensor names: `base`, `base_2`, `base_3`... never one the graph already has."""

    def __init__(self, graph: gs.Graph):
        self.used = {n.name for n in graph.nodes} | set(graph.tensors().keys())

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def detach(nodes) -> None:
    """Unhook nodes that were built but not inserted (a rolled-back rewrite)."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def replace_nodes(graph: gs.Graph, old: list, new: list, output: gs.Variable) -> None:
    """Replace the run `old` by `new`; `new[-1]`'s first output becomes `output`.

    `output` is the tensor the run produced, so its name, consumers and graph-output role are
    kept. The new nodes go where the last old node was: everything they read is defined by then.
    """
    ids = {id(n) for n in old}
    position = max(i for i, n in enumerate(graph.nodes) if id(n) in ids)
    detach(old)
    new[-1].outputs[0] = output
    graph.nodes[position + 1:position + 1] = new
    graph.nodes = [n for n in graph.nodes if id(n) not in ids]
