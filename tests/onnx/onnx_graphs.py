"""Hand-built ONNX graphs for the ONNX front-end tests (onnx.helper, seeded weights)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

FLOAT = onnx.TensorProto.FLOAT


class G:
    """A small graph under construction: each method adds nodes and returns the output name."""

    def __init__(self, opset: int = 17, dtype=np.float32, seed: int = 0):
        self.opset, self.dtype = opset, np.dtype(dtype)
        self.elem = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, self.elem, shape))
        return name

    def output(self, name: str, shape=None) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, self.elem, shape))

    def init(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def node(self, op: str, inputs: list, n_out: int = 1, name: str | None = None, domain: str = "", **attrs):
        outs = [self.fresh(f"{op.lower()}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name or self.fresh(op), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def add_raw(self, tensor: onnx.TensorProto) -> str:
        """An initializer of any dtype (init() casts to the graph's float dtype)."""
        self.inits.append(tensor)
        return tensor.name

    def weight(self, shape, scale=None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return self.rng.standard_normal(shape) * (scale or 1 / math.sqrt(fan_in))

    def conv(self, x, cin, cout, k=3, groups=1, stride=1, pads=None, auto_pad=None, bias=True, dilation=1,
             weight=None, name=None) -> str:
        name = name or self.fresh("conv")
        w = self.init(f"{name}.w", self.weight((cout, cin // groups, k, k)) if weight is None else weight)
        inputs = [x, w] + ([self.init(f"{name}.b", self.rng.standard_normal(cout) * 0.1)] if bias else [])
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], group=groups, dilations=[dilation, dilation])
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads) if pads is not None else [k // 2] * 4
        return self.node("Conv", inputs, name=name, **attrs)

    def bn(self, x, c, name=None, **attrs) -> str:
        name = name or self.fresh("bn")
        params = [self.init(f"{name}.gamma", 1 + 0.2 * self.rng.standard_normal(c)),
                  self.init(f"{name}.beta", 0.1 * self.rng.standard_normal(c)),
                  self.init(f"{name}.mean", 0.1 * self.rng.standard_normal(c)),
                  self.init(f"{name}.var", 0.5 + self.rng.random(c))]
        return self.node("BatchNormalization", [x] + params, name=name, epsilon=1e-5, **attrs)

    def relu(self, x):
        return self.node("Relu", [x])

    def relu6(self, x):
        lo, hi = self.init(self.fresh("zero"), 0.0), self.init(self.fresh("six"), 6.0)
        return self.node("Clip", [x, lo, hi])

    def silu(self, x):
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def hardswish_decomposed(self, x):
        return self.node("Mul", [x, self.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])

    def scalar(self, value, constant_node: bool = False, shape=()) -> str:
        """A one-element constant: an initializer, or a Constant node's output."""
        array = np.asarray(value, self.dtype).reshape(shape)
        if constant_node:
            return self.node("Constant", [], value=numpy_helper.from_array(array))
        return self.init(self.fresh("c"), array)

    def hard_clip(self, x, form: str = "x*c/6", swap: bool = False, constant_node: bool = False, shape=(),
                  three: float = 3.0, hi: float = 6.0, sixth: float = 1 / 6):
        """hardswish / hardsigmoid written out with a Clip, c = Clip(x + 3, 0, 6) (its bounds as
        attributes below opset 11): form "x*c/6" (Paddle2ONNX below opset 14), "x*c*(1/6)",
        "c/6*x" (timm's hard_swish), "c*(1/6)*x" (Keras' through tf2onnx) or "c/6" (hardsigmoid).
        swap: each constant (each x of a Mul) the first operand, where the op allows; the constants
        of `shape` (Paddle2ONNX writes () or (1,); the Clip's are 0-d), as Constant nodes with
        constant_node."""
        def const(v):
            return self.scalar(v, constant_node, shape)

        def binary(op, a, b):
            return self.node(op, [b, a] if swap and op != "Div" else [a, b])
        if self.opset < 11:
            c = self.node("Clip", [binary("Add", x, const(three))], min=0.0, max=hi)
        else:
            c = self.node("Clip", [binary("Add", x, const(three)), self.scalar(0.0, constant_node),
                                   self.scalar(hi, constant_node)])     # Clip takes 0-d bounds
        scale = (lambda t: binary("Mul", t, const(sixth))) if "(1/6)" in form else \
            (lambda t: self.node("Div", [t, const(6.0)]))
        if form.startswith("x*"):
            return scale(self.node("Mul", [c, x] if swap else [x, c]))
        gate = scale(c)
        return gate if form == "c/6" else self.node("Mul", [gate, x] if swap else [x, gate])

    def gelu_erf(self, x):
        d = self.node("Div", [x, self.init(self.fresh("sqrt2"), math.sqrt(2))])
        p = self.node("Add", [self.node("Erf", [d]), self.init(self.fresh("one"), 1.0)])
        return self.node("Mul", [self.node("Mul", [x, p]), self.init(self.fresh("half"), 0.5)])

    def model(self, ir_version: int | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model = onnx.shape_inference.infer_shapes(model)   # fills the shapes of outputs declared without
        del model.graph.value_info[:]
        # the oldest IR version the opset allows, not the installed onnx's newest: an older onnxruntime
        # (the GPU image's 1.30 reads up to IR 13) then runs the test graphs too
        model.ir_version = ir_version if ir_version is not None else helper.find_min_ir_version_for(
            list(model.opset_import))
        onnx.checker.check_model(model)
        return model


def run(model: onnx.ModelProto, feeds: dict) -> list:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def sites(report, kind=None, status=None) -> list:
    return [s for s in report.sites if (kind is None or s.kind == kind) and (status is None or s.status == status)]


def one(report, kind, status=None):
    """The report's only site of `kind` (and `status`); the assertion lists every site otherwise."""
    found = sites(report, kind, status)
    assert len(found) == 1, [(s.name, s.kind, s.status, s.reason) for s in report.sites]
    return found[0]
