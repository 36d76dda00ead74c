"""ONNX nodes ⇄ chain IR.

Lifting reads a node's constant inputs and attributes into IR records (ConvSpec, Affine,
Activation) or returns the reason it cannot; lowering builds standard ONNX Conv nodes from a
ConvSpec (asymmetric padding is native to ONNX Conv, so no Pad node is needed).

ONNX Conv pads are [x1_begin, x2_begin, x1_end, x2_end] = (top, left, bottom, right); ConvSpec
takes (top, bottom, left, right). auto_pad SAME_UPPER/SAME_LOWER is resolved to explicit pads:
with stride 1 the total pad (k−1)·d does not depend on the input size; with a larger stride it
does, so the spatial size must be static.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import torch

from rewrite.ir import Activation, Affine, ConvSpec

from .graph import constant_value, is_op, not_constant_reason, scalar, sole_consumer

FLOAT_WEIGHTS = (np.float16, np.float32, np.float64)
QUANTIZED_CONVS = ("ConvInteger", "QLinearConv")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def conv_spec(node: gs.Node, overridable: set, spatial=None) -> ConvSpec | str:
    """ConvSpec of a 2-D float Conv with constant weights, or the reason it is not liftable.

    spatial: the (H, W) of the conv input when known and static, for auto_pad with stride > 1.
    """
    if node.op in QUANTIZED_CONVS:
        return f"integer/quantized conv ({node.op}) is not rewritten"
    if len(node.inputs) < 2:
        return "Conv without a weight input"
    weight = constant_value(node.inputs[1], overridable)
    if weight is None:
        return not_constant_reason(node.inputs[1], "conv weight", overridable)
    if weight.ndim != 4:
        return f"Conv{weight.ndim - 2}d (only 2-D convs are rewritten)"
    if weight.dtype.type not in FLOAT_WEIGHTS:
        return f"conv weight of dtype {weight.dtype} (only float16/32/64 convs are rewritten)"
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        bias = constant_value(node.inputs[2], overridable)
        if bias is None:
            return not_constant_reason(node.inputs[2], "conv bias", overridable)
    attrs = node.attrs
    kh, kw = weight.shape[2:]
    if list(attrs.get("kernel_shape", [kh, kw])) != [kh, kw]:
        return f"kernel_shape {attrs['kernel_shape']} disagrees with the weight shape {list(weight.shape)}"
    stride = tuple(attrs.get("strides", [1, 1]))
    dilation = tuple(attrs.get("dilations", [1, 1]))
    padding = conv_padding(attrs, (kh, kw), stride, dilation, spatial)
    if isinstance(padding, str):
        return padding
    return ConvSpec(torch.from_numpy(np.ascontiguousarray(weight)),
                    None if bias is None else torch.from_numpy(np.ascontiguousarray(bias)),
                    stride, padding, dilation, int(attrs.get("group", 1)))


def conv_padding(attrs: dict, kernel, stride, dilation, spatial) -> tuple | str:
    mode = _text(attrs.get("auto_pad", "NOTSET"))
    if mode in ("NOTSET", ""):
        t, l, b, r = attrs.get("pads", [0, 0, 0, 0])
        return (t, b, l, r)
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        return f"unknown auto_pad {mode!r}"
    sides = []
    for axis in range(2):
        k, s, d = kernel[axis], stride[axis], dilation[axis]
        if s == 1:
            total = (k - 1) * d
        elif spatial is None:
            return f"auto_pad={mode} with stride {s} needs a static spatial input shape"
        else:
            size = spatial[axis]
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        sides.append((small, large) if mode == "SAME_UPPER" else (large, small))
    (t, b), (l, r) = sides
    return (t, b, l, r)


def affine_after(node: gs.Node, conv_out: gs.Tensor, channels: int, overridable: set) -> Affine | str | None:
    """The per-channel affine `node` applies to `conv_out`; a reason when it is one that cannot
    fold; None when the node is not an affine at all."""
    if is_op(node, "BatchNormalization"):
        if node.inputs[0] is not conv_out:
            return None
        if int(node.attrs.get("training_mode", 0)) or len([o for o in node.outputs if o.name]) > 1:
            return "BatchNormalization in training mode (normalizes with batch statistics)"
        params = [constant_value(t, overridable) for t in node.inputs[1:5]]
        if any(p is None for p in params) or len(params) != 4:
            return "BatchNormalization parameters are not constant"
        gamma, beta, mean, var = (torch.from_numpy(np.asarray(p, np.float64).reshape(-1)) for p in params)
        if any(p.numel() != channels for p in (gamma, beta, mean, var)):
            return f"BatchNormalization has {gamma.numel()} channels, the conv produces {channels}"
        return Affine.from_batchnorm(mean, var, float(node.attrs.get("epsilon", 1e-5)), gamma, beta)
    if not is_op(node, "Mul", "Add", "Sub", "Div") or len(node.inputs) != 2:
        return None
    position = 0 if node.inputs[0] is conv_out else 1
    if node.inputs[1 - position] is conv_out or (position == 1 and node.op in ("Sub", "Div")):
        return None
    value = constant_value(node.inputs[1 - position], overridable)
    if value is None or not np.issubdtype(value.dtype, np.floating):
        return None
    per_channel = value.size == 1 and value.ndim <= 4 or (
        value.ndim in (3, 4) and value.shape[-3:] == (channels, 1, 1) and value.size == channels)
    if not per_channel:
        return None
    v = torch.from_numpy(np.asarray(value, np.float64).reshape(-1)).expand(channels).clone()
    one, zero = torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    return {"Mul": lambda: Affine(v, zero), "Add": lambda: Affine(one, v),
            "Sub": lambda: Affine(one, -v), "Div": lambda: Affine(1 / v, zero)}[node.op]()


@dataclass
class ActMatch:
    name: str
    nodes: list
    output: gs.Variable

    @property
    def layer(self) -> Activation:
        return Activation(self.name)


def match_activation(graph: gs.Graph, t: gs.Tensor, overridable: set) -> ActMatch | None:
    """The elementwise activation applied to `t` (alone, with nothing else reading `t`), if known.

    Relu; Clip(0, 6) = relu6 (bounds as attributes before opset 11, constant inputs after);
    Sigmoid·Mul = silu; HardSwish, HardSigmoid(1/6, 1/2)·Mul = hardswish; Gelu and its Erf
    decomposition x·(1 + erf(x/√2))/2 = gelu; Tanh, Sigmoid, HardSigmoid, LeakyRelu, Elu.
    """
    readers = list(t.outputs)
    if any(o is t for o in graph.outputs) or not readers:
        return None
    if len(readers) == 1:
        n = readers[0]
        name = _single_activation(n, overridable)
        return ActMatch(name, [n], n.outputs[0]) if name else None
    if len(readers) != 2:
        return None
    gate = next((n for n in readers if _is_gate(n, t, overridable)), None)
    if gate is None:
        return None
    other = next(n for n in readers if n is not gate)
    if gate.op in ("Sigmoid", "HardSigmoid"):
        if gate.op == "HardSigmoid" and not _hard_sigmoid(gate):
            return None
        if sole_consumer(graph, gate.outputs[0]) is other and _is_product(other, t, gate.outputs[0]):
            return ActMatch("silu" if gate.op == "Sigmoid" else "hardswish", [gate, other], other.outputs[0])
        return None
    return _erf_gelu(graph, t, gate, other, overridable)


def _single_activation(n: gs.Node, overridable: set) -> str | None:
    if is_op(n, "Relu"):
        return "relu"
    if is_op(n, "HardSwish"):
        return "hardswish"
    if is_op(n, "Sigmoid"):
        return "sigmoid"
    if is_op(n, "Tanh"):
        return "tanh"
    if is_op(n, "HardSigmoid"):
        return "hardsigmoid" if _hard_sigmoid(n) else None
    if is_op(n, "LeakyRelu"):
        return "leaky_relu" if math.isclose(n.attrs.get("alpha", 0.01), 0.01, rel_tol=1e-4) else None
    if is_op(n, "Elu"):
        return "elu" if math.isclose(n.attrs.get("alpha", 1.0), 1.0, rel_tol=1e-6) else None
    if is_op(n, "Gelu"):
        return "gelu" if _text(n.attrs.get("approximate", "none")) == "none" else "gelu_tanh"
    if is_op(n, "Clip"):
        if "min" in n.attrs or "max" in n.attrs:          # opset < 11
            lo, hi = n.attrs.get("min", -math.inf), n.attrs.get("max", math.inf)
        else:
            bounds = [scalar(t, overridable) if t.name else None for t in n.inputs[1:3]]
            if any(b is None and t.name for b, t in zip(bounds, n.inputs[1:3])):
                return None
            bounds += [None] * (2 - len(bounds))
            lo = -math.inf if bounds[0] is None else bounds[0]
            hi = math.inf if bounds[1] is None else bounds[1]
        if lo == 0 and hi == 6:
            return "relu6"
        if lo == 0 and hi == math.inf:
            return "relu"
    return None


def _is_gate(n: gs.Node, t: gs.Tensor, overridable: set) -> bool:
    """The first node of a two-reader activation: Sigmoid/HardSigmoid(t), or t scaled by a constant."""
    if is_op(n, "Sigmoid", "HardSigmoid"):
        return n.inputs[0] is t
    return (is_op(n, "Div", "Mul") and len(n.inputs) == 2 and n.inputs[0] is t
            and scalar(n.inputs[1], overridable) is not None)


def _hard_sigmoid(n: gs.Node) -> bool:
    return math.isclose(n.attrs.get("alpha", 0.2), 1 / 6, rel_tol=1e-3) and math.isclose(n.attrs.get("beta", 0.5), 0.5)


def _is_product(node: gs.Node, a: gs.Tensor, b: gs.Tensor) -> bool:
    return is_op(node, "Mul") and len(node.inputs) == 2 and {id(node.inputs[0]), id(node.inputs[1])} == {id(a), id(b)}


def _erf_gelu(graph, t, scale_node, mul_x, overridable) -> ActMatch | None:
    """x → Div(√2) | Mul(1/√2) → Erf → Add(1) → Mul(x, ·) → Mul(0.5)   (torch's export of GELU)."""
    c = scalar(scale_node.inputs[1], overridable) if len(scale_node.inputs) == 2 else None
    if c is None or not math.isclose(c if scale_node.op == "Div" else 1 / c, math.sqrt(2), rel_tol=1e-3):
        return None
    erf = sole_consumer(graph, scale_node.outputs[0])
    add = sole_consumer(graph, erf.outputs[0]) if is_op(erf, "Erf") else None
    if not is_op(add, "Add") or sole_consumer(graph, add.outputs[0]) is not mul_x:
        return None
    one = next((scalar(x, overridable) for x in add.inputs if x is not erf.outputs[0]), None)
    if one != 1.0 or not _is_product(mul_x, t, add.outputs[0]):
        return None
    half = sole_consumer(graph, mul_x.outputs[0])
    if not is_op(half, "Mul"):
        return None
    h = next((scalar(x, overridable) for x in half.inputs if x is not mul_x.outputs[0]), None)
    if h != 0.5:
        return None
    return ActMatch("gelu", [scale_node, erf, add, mul_x, half], half.outputs[0])


def conv_node(spec: ConvSpec, x: gs.Tensor, name: str, names) -> gs.Node:
    """A standard Conv node computing `spec` on `x`, with fresh initializers and a fresh output."""
    t, b, l, r = spec.padding
    inputs = [x, gs.Constant(names.fresh(f"{name}.weight"), spec.weight.detach().contiguous().numpy())]
    if spec.bias is not None:
        inputs.append(gs.Constant(names.fresh(f"{name}.bias"), spec.bias.detach().contiguous().numpy()))
    out = gs.Variable(names.fresh(f"{name}_output"), dtype=inputs[1].values.dtype)
    attrs = {"kernel_shape": list(spec.kernel_size), "strides": list(spec.stride), "pads": [t, l, b, r],
             "dilations": list(spec.dilation), "group": spec.groups}
    return gs.Node("Conv", names.fresh(name), attrs, inputs, [out])
