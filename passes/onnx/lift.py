"""ONNX nodes → chain IR.

Lifting reads a node's constant inputs and attributes into IR records (ConvSpec, Affine,
ZeroPad, an activation name) or returns the reason it cannot.

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

from rewrite.composite_acts import ScalarOp, hard_composite
from rewrite.ir import Affine, ConvSpec, TransposedConv, ZeroPad

from .graph import constant_value, folded_value, is_constant, is_op, not_constant_reason, scalar, sole_consumer

FLOAT_WEIGHTS = (np.float16, np.float32, np.float64)
QUANTIZED_CONVS = ("ConvInteger", "QLinearConv")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- conv ------------------------------------------------------------------------------------

def conv_spec(node: gs.Node, overridable: set, spatial=None) -> ConvSpec | str:
    """ConvSpec of a 2-D float Conv with constant weights, or the reason it is not liftable.

    spatial: the (H, W) of the conv input when known and static, for auto_pad with stride > 1.
    """
    if node.op in QUANTIZED_CONVS:
        return f"integer/quantized conv ({node.op}) is not rewritten"
    found = _weight_and_bias(node, "conv", overridable)
    if isinstance(found, str):
        return found
    weight, bias = found
    if weight.ndim != 4:
        return f"Conv{weight.ndim - 2}d (only 2-D convs are rewritten)"
    if weight.dtype.type not in FLOAT_WEIGHTS:
        return f"conv weight of dtype {weight.dtype} (only float16/32/64 convs are rewritten)"
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


def deconv_spec(node: gs.Node, overridable: set) -> TransposedConv | str:
    """TransposedConv of a 2-D float ConvTranspose with constant weights and explicit pads, or the
    reason it is not liftable (auto_pad and output_shape set the geometry from the input size)."""
    found = _weight_and_bias(node, "transposed conv", overridable)
    if isinstance(found, str):
        return found
    weight, bias = found
    if weight.ndim != 4 or weight.dtype.type not in FLOAT_WEIGHTS:
        return f"a {weight.ndim - 2}-d ConvTranspose of dtype {weight.dtype} (only 2-D float ones are rewritten)"
    attrs = node.attrs
    if "output_shape" in attrs or _text(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "", "VALID"):
        return "ConvTranspose with output_shape or auto_pad (its padding follows the input size)"
    kh, kw = weight.shape[2:]
    if list(attrs.get("kernel_shape", [kh, kw])) != [kh, kw]:
        return f"kernel_shape {attrs['kernel_shape']} disagrees with the weight shape {list(weight.shape)}"
    t, l, b, r = attrs.get("pads", [0, 0, 0, 0])
    return TransposedConv(torch.from_numpy(np.ascontiguousarray(weight)),
                          None if bias is None else torch.from_numpy(np.ascontiguousarray(bias)),
                          tuple(attrs.get("strides", [1, 1])), (t, b, l, r), tuple(attrs.get("output_padding", [0, 0])),
                          tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)))


def _weight_and_bias(node: gs.Node, what: str, overridable: set) -> tuple | str:
    """(weight, bias or None) of a Conv / ConvTranspose, both constant, or why not."""
    if len(node.inputs) < 2:
        return f"{node.op} without a weight input"
    weight = constant_value(node.inputs[1], overridable)
    if weight is None:
        return not_constant_reason(node.inputs[1], f"{what} weight", overridable)
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        bias = constant_value(node.inputs[2], overridable)
        if bias is None:
            return not_constant_reason(node.inputs[2], f"{what} bias", overridable)
    return weight, bias


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


# -- affine ----------------------------------------------------------------------------------

def batchnorm_affine(node: gs.Node, overridable: set) -> Affine | str:
    """Inference BatchNormalization: y = γ·(x − μ)/√(σ² + ε) + β, or why it is not one."""
    if int(node.attrs.get("training_mode", 0)) or len([o for o in node.outputs if o.name]) > 1:
        return "BatchNormalization in training mode (normalizes with batch statistics)"
    params = [constant_value(t, overridable) for t in node.inputs[1:5]]
    if any(p is None for p in params) or len(params) != 4:
        return "BatchNormalization parameters are not constant"
    gamma, beta, mean, var = (torch.from_numpy(np.asarray(p, np.float64).reshape(-1)) for p in params)
    if len({p.numel() for p in (gamma, beta, mean, var)}) != 1:
        return "BatchNormalization parameters disagree on the channel count"
    return Affine.from_batchnorm(mean, var, float(node.attrs.get("epsilon", 1e-5)), gamma, beta)


def constant_affine(node: gs.Node, x: gs.Tensor, channels: int | None, overridable: set) -> Affine | None:
    """The per-channel affine a Mul/Add/Sub/Div of `x` by a constant c applies, else None:

        x·c = Affine(c, 0)   x + c = Affine(1, c)   x − c = Affine(1, −c)   x / c = Affine(1/c, 0)

    c is a scalar (then `channels` must be known) or of shape [C, 1, 1] / [1, C, 1, 1]; c − x
    and c / x are not affine in x.
    """
    if not is_op(node, "Mul", "Add", "Sub", "Div") or len(node.inputs) != 2 or node.inputs[0] is node.inputs[1]:
        return None
    position = 0 if node.inputs[0] is x else 1
    if node.inputs[position] is not x or (position == 1 and node.op in ("Sub", "Div")):
        return None
    value = constant_value(node.inputs[1 - position], overridable)
    if value is None or not np.issubdtype(value.dtype, np.floating):
        return None
    if value.size == 1 and value.ndim <= 4:
        if channels is None:
            return None
    elif value.ndim in (3, 4) and value.shape[-2:] == (1, 1) and value.size == value.shape[-3] and \
            channels in (None, value.size):
        channels = value.size
    else:
        return None
    v = torch.from_numpy(np.asarray(value, np.float64).reshape(-1)).expand(channels).clone()
    one, zero = torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    return {"Mul": lambda: Affine(v, zero), "Add": lambda: Affine(one, v),
            "Sub": lambda: Affine(one, -v), "Div": lambda: Affine(1 / v, zero)}[node.op]()


# -- pad -------------------------------------------------------------------------------------

def zero_pad(node: gs.Node, overridable: set, opset: int) -> ZeroPad | str:
    """The ZeroPad of a Pad node over a 4-D tensor, or why it is not one.

    Pad (opset ≥ 11) takes pads = [x1_begin, x2_begin, …, x1_end, x2_end, …] over every axis, or
    from opset 18 over the axes given as its fourth input; mode "constant" with value 0 (or no
    value) is a zero pad. Only H and W may be padded, by non-negative widths.
    """
    mode = _text(node.attrs.get("mode", "constant"))
    if mode != "constant":
        return f"{mode} padding is not a zero pad"
    pads, value, axes = (node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None for i in (1, 2, 3))
    if value is not None:
        value = scalar(value, overridable)
        if value is None:
            return "the pad value is not a constant"
        if value != 0:
            return f"pad with the constant {value:g} (not zero)"
    pads = folded_value(pads, overridable, opset)
    axes = folded_value(axes, overridable, opset) if axes is not None else np.arange(4)
    if pads is None or axes is None:
        return "the pad widths are computed at run time"
    pads, axes = [int(p) for p in pads.reshape(-1)], [int(a) % 4 for a in axes.reshape(-1)]
    if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
        return f"pads {pads} over axes {axes} is not a pad of a 4-D tensor"
    width = dict(zip(axes, zip(pads[:len(axes)], pads[len(axes):])))
    if any(width.get(a, (0, 0)) != (0, 0) for a in (0, 1)):
        return f"pads {pads} pad the batch or channel axis"
    (top, bottom), (left, right) = width.get(2, (0, 0)), width.get(3, (0, 0))
    if min(top, bottom, left, right) < 0:
        return f"negative pad {pads} crops the input"
    return ZeroPad((top, bottom, left, right))


# -- split, slice ----------------------------------------------------------------------------

SPLIT_INPUT_OPSET = 13        # Split takes its sizes as an input from opset 13


def split_parts(node: gs.Node, shape, overridable: set, opset: int) -> list | None:
    """The (start, stop) channel ranges of a Split of axis 1 of a 4-D tensor of `shape`, one per
    output, or None. The sizes come from the `split` input (opset ≥ 13) or attribute; without
    them the parts are equal (from opset 18 `num_outputs` parts of ⌈C/n⌉, the last smaller)."""
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int) or \
            int(node.attrs.get("axis", 0)) % 4 != 1:
        return None
    channels, n = shape[1], len(node.outputs)
    given = node.inputs[1] if opset >= SPLIT_INPUT_OPSET and len(node.inputs) > 1 and node.inputs[1].name else None
    if given is not None:
        value = folded_value(given, overridable, opset)
        sizes = None if value is None else [int(v) for v in value.reshape(-1)]
    elif "split" in node.attrs:
        sizes = [int(v) for v in node.attrs["split"]]
    elif "num_outputs" in node.attrs:
        size = -(-channels // int(node.attrs["num_outputs"]))
        sizes = [min(size, channels - start) for start in range(0, channels, size)]
    else:
        sizes = [channels // n] * n if channels % n == 0 else None
    if sizes is None or len(sizes) != n or min(sizes) < 0 or sum(sizes) != channels:
        return None
    bounds = [0, *np.cumsum(sizes).tolist()]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def slice_channels(node: gs.Node, shape, overridable: set, opset: int) -> tuple | None:
    """(start, stop) of a Slice of axis 1 alone, step 1, constant bounds, of a 4-D tensor of
    `shape`, or None."""
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int) or opset < 10:
        return None
    values = [folded_value(node.inputs[i], overridable, opset) if len(node.inputs) > i and node.inputs[i].name
              else None for i in range(1, 5)]
    starts, ends, axes, steps = values          # without axes, a single bound slices axis 0
    steps_given = len(node.inputs) > 4 and node.inputs[4].name
    if starts is None or ends is None or axes is None or (steps_given and steps is None) or \
            not starts.size == ends.size == axes.size == 1 or int(axes.reshape(-1)[0]) % 4 != 1 or \
            (steps is not None and int(steps.reshape(-1)[0]) != 1):
        return None
    start, stop, _ = slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])).indices(shape[1])
    return start, max(start, stop)


# -- activations -----------------------------------------------------------------------------

@dataclass
class ActMatch:
    name: str
    nodes: list
    output: gs.Variable
    input: gs.Tensor             # the activation it reads (Add(3, x) reads x, its second input)


def activation_at(graph: gs.Graph, node: gs.Node, overridable: set) -> ActMatch | None:
    """The elementwise activation whose first node is `node`, if it is one we know.

    Relu; Clip(0, 6) = relu6 (bounds as attributes before opset 11, constant inputs after);
    x·Sigmoid(x) = silu; x·HardSigmoid(x; 1/6, 1/2) = hardswish; Gelu and its Erf decomposition
    x·(1 + erf(x/√2))/2 = gelu; Tanh, Sigmoid, HardSigmoid(1/6, 1/2), LeakyRelu(0.01), Elu(1);
    hardswish and hardsigmoid written out with a Clip (_hard_composite: Paddle2ONNX below opset 14,
    rewrite.composite_acts).
    A Sigmoid / HardSigmoid whose only reader multiplies it by its own input is the first node
    of silu / hardswish, and the Mul belongs to the activation.
    """
    if is_op(node, "Sigmoid", "HardSigmoid") and node.outputs:
        x, gate = node.inputs[0], node.outputs[0]
        hard = node.op == "HardSigmoid"
        if hard and not _hard_sigmoid(node):
            return None
        mul = sole_consumer(graph, gate)
        if _is_product(mul, x, gate):
            return ActMatch("hardswish" if hard else "silu", [node, mul], mul.outputs[0], x)
        return ActMatch("hardsigmoid" if hard else "sigmoid", [node], gate, x)
    if is_op(node, "Div", "Mul") and len(node.inputs) == 2:
        return _erf_gelu(graph, node, overridable)
    if is_op(node, "Add") and len(node.inputs) == 2:
        return _hard_composite(graph, node, overridable)
    name = _single_activation(node, overridable)
    return ActMatch(name, [node], node.outputs[0], node.inputs[0]) if name else None


def hard_sigmoid_affine(node: gs.Node, channels: int | None) -> tuple[Affine, str] | None:
    """(the affine, the node in the graph's terms) of a HardSigmoid(α, β) other than torch's
    hardsigmoid, which is torch's hardsigmoid of that affine:

        HardSigmoid(α, β)(x) = clip(α·x + β, 0, 1) = hardsigmoid(6α·x + 6β − 3)

    (torch's hardsigmoid is clip(x/6 + 1/2, 0, 1)); the affine per channel where `channels` is
    known, else of one element. None for torch's own α, β (an act op) or another node. Paddle's
    squeeze-excitation gate is ONNX's default HardSigmoid(0.2, 0.5) = hardsigmoid(1.2·x)."""
    if not is_op(node, "HardSigmoid") or _hard_sigmoid(node):
        return None
    alpha, beta = _alpha_beta(node)
    n = channels or 1
    affine = Affine(torch.full((n,), 6 * alpha, dtype=torch.float64), torch.full((n,), 6 * beta - 3, dtype=torch.float64))
    return affine, f"HardSigmoid(alpha {alpha:.6g}, beta {beta:.6g})"


def _single_activation(n: gs.Node, overridable: set) -> str | None:
    if is_op(n, "Relu"):
        return "relu"
    if is_op(n, "HardSwish"):
        return "hardswish"
    if is_op(n, "Tanh"):
        return "tanh"
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


def _hard_composite(graph, add: gs.Node, overridable) -> ActMatch | None:
    """hardswish and hardsigmoid written out from the Add of 3 (rewrite.composite_acts, the pattern
    both formats share); the Clip bounds as attributes or constant inputs."""
    found = hard_composite(_OnnxElementwise(graph, overridable), add)
    return None if found is None else ActMatch(found.act, list(found.nodes), found.output, found.input)


class _OnnxElementwise:
    """rewrite.composite_acts.ElementwiseGraph over ONNX nodes: values are gs.Tensors."""

    KINDS = {"Add": "add", "Mul": "mul", "Div": "div"}

    def __init__(self, graph: gs.Graph, overridable: set):
        self.graph, self.overridable = graph, overridable

    def scalar_op(self, node: gs.Node) -> ScalarOp | None:
        if node is None or node.op not in self.KINDS:
            return None
        for x in node.inputs:
            c = _scalar_operand(node, x, self.overridable)
            if c is not None and not is_constant(x, self.overridable):
                value = constant_value(node.inputs[1] if node.inputs[0] is x else node.inputs[0], self.overridable)
                return ScalarOp(self.KINDS[node.op], x, c, float(np.finfo(value.dtype).eps))
        return None

    def sole_reader(self, value: gs.Tensor):
        return sole_consumer(self.graph, value)

    def output(self, node: gs.Node) -> gs.Tensor:
        return node.outputs[0]

    def is_relu6(self, node: gs.Node, value: gs.Tensor) -> bool:
        return is_op(node, "Clip") and node.inputs[0] is value and _single_activation(node, self.overridable) == "relu6"

    def product_of(self, node: gs.Node) -> tuple | None:
        return tuple(node.inputs) if is_op(node, "Mul") and len(node.inputs) == 2 else None

    def unchanged(self, value: gs.Tensor) -> bool:
        return True              # ONNX tensors are written once


def _scalar_operand(node: gs.Node, t: gs.Tensor, overridable) -> float | None:
    """c where `node` computes t ∘ c (or c ∘ t, except for a Div) with c a one-element float
    constant, else None."""
    if node is None or len(node.inputs) != 2 or node.inputs[0] is node.inputs[1]:
        return None
    if node.inputs[0] is t:
        other = node.inputs[1]
    elif node.inputs[1] is t and not is_op(node, "Div"):
        other = node.inputs[0]
    else:
        return None
    value = constant_value(other, overridable)
    if value is None or value.size != 1 or value.ndim > 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.reshape(()))


def _alpha_beta(n: gs.Node) -> tuple[float, float]:
    return float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))     # ONNX's defaults


def _hard_sigmoid(n: gs.Node) -> bool:
    alpha, beta = _alpha_beta(n)
    return math.isclose(alpha, 1 / 6, rel_tol=1e-3) and math.isclose(beta, 0.5)


def _is_product(node, a: gs.Tensor, b: gs.Tensor) -> bool:
    return is_op(node, "Mul") and len(node.inputs) == 2 and {id(node.inputs[0]), id(node.inputs[1])} == {id(a), id(b)}


def _erf_gelu(graph, scale_node, overridable) -> ActMatch | None:
    """x → Div(√2) | Mul(1/√2) → Erf → Add(1) → Mul(x, ·) → Mul(0.5)   (torch's export of GELU)."""
    x = scale_node.inputs[0]
    c = scalar(scale_node.inputs[1], overridable)
    if c is None or c == 0 or not math.isclose(c if scale_node.op == "Div" else 1 / c, math.sqrt(2), rel_tol=1e-3):
        return None
    erf = sole_consumer(graph, scale_node.outputs[0])
    add = sole_consumer(graph, erf.outputs[0]) if is_op(erf, "Erf") else None
    if not is_op(add, "Add"):
        return None
    one = next((scalar(t, overridable) for t in add.inputs if t is not erf.outputs[0]), None)
    mul_x = sole_consumer(graph, add.outputs[0])
    if one != 1.0 or not _is_product(mul_x, x, add.outputs[0]):
        return None
    half = sole_consumer(graph, mul_x.outputs[0])
    if not is_op(half, "Mul"):
        return None
    h = next((scalar(t, overridable) for t in half.inputs if t is not mul_x.outputs[0]), None)
    if h != 0.5:
        return None
    return ActMatch("gelu", [scale_node, erf, add, mul_x, half], half.outputs[0], x)
