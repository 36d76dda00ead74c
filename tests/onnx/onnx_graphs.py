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

    def gelu_erf(self, x):
        d = self.node("Div", [x, self.init(self.fresh("sqrt2"), math.sqrt(2))])
        p = self.node("Add", [self.node("Erf", [d]), self.init(self.fresh("one"), 1.0)])
        return self.node("Mul", [self.node("Mul", [x, p]), self.init(self.fresh("half"), 0.5)])

    def model(self, ir_version: int | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", self.inputs, self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model = onnx.shape_inference.infer_shapes(model)   # fills the shapes of outputs declared without
        del model.graph.value_info[:]
        if ir_version is not None:
            model.ir_version = ir_version
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
