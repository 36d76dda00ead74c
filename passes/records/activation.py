"""Activation (native_act's record): a module applying it in FX, and in ONNX its shortest
standard form at the model's opset (activation_nodes, shared with the fused functions' bodies).
onnx is imported inside the ONNX functions only: the FX path never loads it."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from rewrite.ir import ACTIVATIONS, Activation

from .registry import LoweringSite, fx_lowering, onnx_lowering


class ActivationModule(nn.Module):
    """ACTIVATIONS[name](x)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


@fx_lowering(Activation)
def activation_to_modules(act: Activation, site: LoweringSite) -> list:
    return [ActivationModule(act.name)]


def activation_nodes(act: str | None, x: str, y: str, dtype, opset: int) -> list:
    """Standard ops (onnx NodeProtos) computing the activation `act` of tensor x into y (None: no nodes)."""
    if act is None:
        return []
    import onnx
    from onnx import helper

    def const(name, value):
        return helper.make_node("Constant", [], [f"{y}_{name}"],
                                value=onnx.numpy_helper.from_array(np.array(value, dtype=dtype)))

    if act == "relu":
        return [helper.make_node("Relu", [x], [y])]
    if act == "relu6":
        return [const("lo", 0), const("hi", 6), helper.make_node("Clip", [x, f"{y}_lo", f"{y}_hi"], [y])]
    if act == "silu":
        return [helper.make_node("Sigmoid", [x], [f"{y}_gate"]), helper.make_node("Mul", [x, f"{y}_gate"], [y])]
    if act == "hardswish":
        if opset >= 14:
            return [helper.make_node("HardSwish", [x], [y])]
        return [helper.make_node("HardSigmoid", [x], [f"{y}_gate"], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", [x, f"{y}_gate"], [y])]
    if act == "hardsigmoid":
        return [helper.make_node("HardSigmoid", [x], [y], alpha=1 / 6, beta=0.5)]
    if act == "gelu":
        if opset >= 20:
            return [helper.make_node("Gelu", [x], [y])]
        return [const("sqrt2", math.sqrt(2)), const("one", 1), const("half", 0.5),
                helper.make_node("Div", [x, f"{y}_sqrt2"], [f"{y}_s"]),
                helper.make_node("Erf", [f"{y}_s"], [f"{y}_e"]),
                helper.make_node("Add", [f"{y}_e", f"{y}_one"], [f"{y}_p"]),
                helper.make_node("Mul", [x, f"{y}_p"], [f"{y}_m"]),
                helper.make_node("Mul", [f"{y}_m", f"{y}_half"], [y])]
    raise ValueError(f"no ONNX lowering for activation {act!r}")


def act_nodes(act: str, x, name: str, site, dtype, opset: int) -> list:
    """The activation `act` of x as graph nodes, in activation_nodes' standard form (its Constant
    nodes as fresh initializers), with fresh names."""
    import onnx
    from onnx import helper

    tensors, nodes = {"x": x}, []
    for proto in activation_nodes(act, "x", "y", dtype, opset):
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        if proto.op_type == "Constant":
            tensors[proto.output[0]] = site.constant(f"{name}.{proto.output[0]}",
                                                     onnx.numpy_helper.to_array(attrs["value"]))
            continue
        outs = [site.variable(f"{name}_{o}", dtype) for o in proto.output]
        tensors.update(zip(proto.output, outs))
        nodes.append(site.node(proto.op_type, f"{name}_{proto.op_type}", attrs, [tensors[i] for i in proto.input], outs))
    return nodes


@onnx_lowering(Activation)
def activation_to_nodes(act: Activation, site) -> list:
    """native_act: the activation in its standard form; the plan's note names the ops."""
    lowered = act_nodes(act.name, site.x, site.name, site, site.dtype, site.opset)
    site.plan.note += " (" + " → ".join(node.op for node in lowered) + ")"
    return lowered
