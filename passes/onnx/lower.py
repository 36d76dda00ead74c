"""Chain IR → ONNX nodes: the emitter through which each record's ONNX lowering (declared beside
its FX lowering in passes/records/) writes graph nodes, and the forms those lowerings write:
standard Conv nodes, and one call of a model-local function for a fused chain.

A ConvSpec becomes a Conv node with fresh initializers (asymmetric padding is native to ONNX
Conv, so no Pad node is needed), or a Gemm node where it stands for a linear over [N, C]. A
FusedSepConv becomes one call of a function in the domain "dwsep" whose body is the same
computation in standard ops; runtimes that run model-local functions (onnxruntime inlines them)
still execute the model, and a GPU runtime can map every call to the one-launch kernel of
kernels/sep_conv/fused_sep_conv.py:

    dwsep.FusedSepConv_<act1>_<act2>[_residual](X, W_dw, B_dw, W_pw, B_pw[, R]; strides, pads, group)
        = act2(Conv1x1(act1(Conv(X, W_dw, B_dw; strides, pads, group)), W_pw, B_pw)) [+ R]

    dwsep.FusedSepConvSE_<act1>_<act2>_<se act>_<gate>[_postgate_<act>][_residual](X, W_dw, B_dw, W_pw, B_pw,
            W_r, B_r, W_e, B_e[, R]; strides, pads, group)
        = act2(Conv1x1(post(a · gate(Conv1x1(se_act(Conv1x1(GlobalAveragePool(a), W_r, B_r)), W_e, B_e))),
                       W_pw, B_pw)) [+ R]      with a = act1(Conv(X, W_dw, B_dw; …))

where gate is Sigmoid or HardSigmoid(α = 1/6, β = 1/2) and post the activation after the gate
(ReXNet's ReLU6; the identity without _postgate_). The SE act, gate and post activation are in
the name, so one name always has one body. pads is [ph, pw, ph, pw]: the fused kernel pads each
axis the same on both sides; the dw kernel is any kh x kw up to 7x7 (its shape is W_dw's). A whole
inverted-residual block (kernels/block/inverted_residual.py) is the same call with the 1x1 expansion
first, its act0 in the name:

    dwsep.FusedInvertedResidual[SE]_<act0>_<the rest as above>(X, W_ex, B_ex, W_dw, B_dw, …)
        = FusedSepConv[SE]_<the rest>(act0(Conv1x1(X, W_ex, B_ex)), W_dw, B_dw, …)

and a Fused-MBConv block (kernels/block/fused_mbconv.py) the same form with a dense conv first:

    dwsep.FusedMBConv_<act1>_<act2>[_residual](X, W_conv, B_conv, W_pw, B_pw[, R]; strides, pads, group)
        = act2(Conv1x1(act1(Conv(X, W_conv, B_conv; strides, pads, group)), W_pw, B_pw)) [+ R]
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch

from rewrite.ir import ACTIVATIONS
from passes.records import LoweredNodes, LoweringSite, lower_onnx
from passes.records.activation import activation_nodes
from passes.records.fused import DOMAIN, function_name, function_proto
from passes.records.norm import LAYER_NORMALIZATION_OPSET

from .graph import Names

__all__ = ["DOMAIN", "LAYER_NORMALIZATION_OPSET", "LoweredNodes", "OnnxSite", "activation_nodes", "function_name",
           "function_proto", "lower_onnx", "native_act_sizes"]


class OnnxSite(LoweringSite):
    """The emitter a record's ONNX lowering writes through (passes/records/registry.py): fresh
    names, initializers, tensors and nodes in onnx-graphsurgeon terms, the model's model-local
    functions, and the site: its match and plan, the tensor the current layer reads (`x`) and its
    full shape (`shape`, None where it was not captured), the opset and the model's dtype."""

    def __init__(self, match, plan, x: gs.Tensor, shape, names: Names, opset: int, dtype: torch.dtype,
                 functions: dict, tensor):
        super().__init__(list(plan.after), match.layout, match.name)
        self.match, self.plan, self.x = match, plan, x
        self.shape = tuple(shape) if shape is not None else None
        self.names, self.opset, self.torch_dtype = names, opset, dtype
        self.dtype = np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
        self.functions, self.tensor = functions, tensor

    def fresh(self, base: str) -> str:
        return self.names.fresh(base)

    def constant(self, name: str, array: np.ndarray) -> gs.Constant:
        """A fresh initializer named after `name`."""
        return gs.Constant(self.names.fresh(name), array)

    def variable(self, name: str, dtype) -> gs.Variable:
        """A fresh tensor named after `name`."""
        return gs.Variable(self.names.fresh(name), dtype=dtype)

    def node(self, op: str, name: str, attrs: dict, inputs: list, outputs: list, domain: str | None = None,
             fresh: bool = True) -> gs.Node:
        """A node named after `name` (taken as it is with fresh=False: a name already reserved)."""
        name = self.names.fresh(name) if fresh else name
        if domain is None:
            return gs.Node(op, name, attrs, inputs, outputs)
        return gs.Node(op, name, attrs, inputs, outputs, domain=domain)

    def function(self, domain: str, name: str, make) -> None:
        """Add the model-local function `name` (its FunctionProto made by make()) unless present."""
        if name not in self.functions:
            self.functions[name] = make()

    def needed_shape(self) -> tuple:
        if self.shape is None:
            raise TypeError(f"the full shape reaching {self.name} is not known")
        return self.shape


def native_act_sizes(opset: int) -> dict:
    """Activation name → the number of nodes activation_nodes writes it in at `opset` (its Constant
    nodes, which become initializers, aside), for every activation it writes: the shortest standard
    form of each (hardswish: HardSwish from opset 14, HardSigmoid · Mul below; gelu: Gelu from opset
    20, the Erf form below)."""
    sizes = {}
    for act in ACTIVATIONS:
        try:
            nodes = activation_nodes(act, "x", "y", np.float32, opset)
        except ValueError:
            continue
        sizes[act] = sum(node.op_type != "Constant" for node in nodes)
    return sizes

