"""Chain IR → ONNX nodes: standard Conv nodes, and one call of a model-local function for a
fused chain.

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

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch
from onnx import helper

from rewrite.ir import ACTIVATIONS, Concat, ConvSpec, Flatten, FusedMBConv, FusedSepConv, LayerNorm, Linear, Permute

from .graph import Names

DOMAIN = "dwsep"


def conv_node(spec: ConvSpec, x: gs.Tensor, name: str, names: Names) -> gs.Node:
    """A standard Conv node computing `spec` on `x`, with fresh initializers and a fresh output."""
    t, b, l, r = spec.padding
    inputs = [x, gs.Constant(names.fresh(f"{name}.weight"), _array(spec.weight))]
    if spec.bias is not None:
        inputs.append(gs.Constant(names.fresh(f"{name}.bias"), _array(spec.bias)))
    out = gs.Variable(names.fresh(f"{name}_output"), dtype=inputs[1].values.dtype)
    attrs = {"kernel_shape": list(spec.kernel_size), "strides": list(spec.stride), "pads": [t, l, b, r],
             "dilations": list(spec.dilation), "group": spec.groups}
    return gs.Node("Conv", names.fresh(name), attrs, inputs, [out])


def gemm_node(spec: ConvSpec, x: gs.Tensor, name: str, names: Names) -> gs.Node:
    """A Gemm node (transB = 1) computing the 1x1 `spec` as a linear over x = [N, C_in]."""
    inputs = [x, gs.Constant(names.fresh(f"{name}.weight"), _array(spec.weight[:, :, 0, 0]))]
    if spec.bias is not None:
        inputs.append(gs.Constant(names.fresh(f"{name}.bias"), _array(spec.bias)))
    out = gs.Variable(names.fresh(f"{name}_output"), dtype=inputs[1].values.dtype)
    return gs.Node("Gemm", names.fresh(name), {"transB": 1}, inputs, [out])


def matmul_nodes(spec: ConvSpec, x: gs.Tensor, name: str, names: Names) -> list:
    """MatMul (+ Add of the bias) computing the 1x1 `spec` over the last axis of x, any rank (as torch
    exports nn.Linear over channels-last activations or tokens)."""
    w = gs.Constant(names.fresh(f"{name}.weight"), np.ascontiguousarray(_array(spec.weight[:, :, 0, 0]).T))
    out = gs.Variable(names.fresh(f"{name}_output"), dtype=w.values.dtype)
    nodes = [gs.Node("MatMul", names.fresh(name), {}, [x, w], [out])]
    if spec.bias is not None:
        biased = gs.Variable(names.fresh(f"{name}_biased"), dtype=w.values.dtype)
        nodes.append(gs.Node("Add", names.fresh(f"{name}_bias"), {}, [out, gs.Constant(
            names.fresh(f"{name}.bias"), _array(spec.bias))], [biased]))
    return nodes


class LoweredNodes(list):
    """The nodes of a lowered chain, in order; `ends[i]` is the tensor its layer i produces."""

    def __init__(self, nodes=(), ends=None):
        super().__init__(nodes)
        self.ends = list(ends) if ends is not None else [node.outputs[0] for node in self]


def shape_nodes(layers: list, x: gs.Tensor, shape, name: str, names: Names, opset: int = 17) -> LoweredNodes:
    """Nodes computing a chain of Linear / ConvSpec (NCHW) / LayerNorm / Permute / Flatten layers on
    x of the full `shape`: MatMul + Add (Gemm over [N, C]), Conv, LayerNormalization (Scale = 1
    without an affine; below opset 17, which lacks it, written out as exporters do), Transpose,
    Flatten / Reshape."""
    nodes, ends, shape = [], [], tuple(shape)
    for i, layer in enumerate(layers):
        dtype = x.dtype if x.dtype is not None else np.float32
        if isinstance(layer, Linear):
            new = gemm_node(layer.spec, x, name, names) if len(shape) == 2 else matmul_nodes(layer.spec, x, name, names)
            new = new if isinstance(new, list) else [new]
            shape = shape[:-1] + (layer.spec.out_channels,)
        elif isinstance(layer, ConvSpec):
            new = [conv_node(layer, x, name, names)]
            shape = (shape[0], layer.out_channels, *layer.output_hw(*shape[2:]))
        elif isinstance(layer, LayerNorm) and opset < LAYER_NORMALIZATION_OPSET:
            new = layer_norm_nodes(layer, x, dtype, name, names)
        elif isinstance(layer, LayerNorm):
            c = shape[-1]
            scale = np.ones(c, dtype) if layer.affine is None else layer.affine.scale.numpy().astype(dtype)
            inputs = [x, gs.Constant(names.fresh(f"{name}.norm_scale"), scale)]
            if layer.affine is not None:
                inputs.append(gs.Constant(names.fresh(f"{name}.norm_bias"), layer.affine.shift.numpy().astype(dtype)))
            out = gs.Variable(names.fresh(f"{name}_norm"), dtype=dtype)
            new = [gs.Node("LayerNormalization", names.fresh(f"{name}_norm"), {"axis": -1, "epsilon": layer.eps},
                           inputs, [out])]
        elif isinstance(layer, Permute):
            out = gs.Variable(names.fresh(f"{name}_permuted"), dtype=dtype)
            new = [gs.Node("Transpose", names.fresh(f"{name}_transpose"), {"perm": list(layer.perm)}, [x], [out])]
            shape = tuple(shape[p] for p in layer.perm)
        elif isinstance(layer, Flatten):
            out = gs.Variable(names.fresh(f"{name}_flat"), dtype=dtype)
            s, e = layer.start, layer.end
            target = [0] * s + [-1] + [int(d) for d in shape[e + 1:]]
            new = [gs.Node("Reshape", names.fresh(f"{name}_reshape"), {}, [x, gs.Constant(
                names.fresh(f"{name}.shape"), np.array(target, np.int64))], [out])]
            shape = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
        else:
            raise TypeError(f"no ONNX lowering for {layer.describe()} here")
        nodes += new
        x = new[-1].outputs[0]
        ends.append(x)
    return LoweredNodes(nodes, ends)


LAYER_NORMALIZATION_OPSET = 17


def layer_norm_nodes(layer: LayerNorm, x: gs.Tensor, dtype, name: str, names: Names) -> list:
    """(x − E[x]) / sqrt(E[(x − E[x])²] + ε) [· γ + β] over the last axis in opset-13 ops (ReduceMean
    with its axes as an attribute), as torch exports a LayerNorm below opset 17."""
    def var(role):
        return gs.Variable(names.fresh(f"{name}_{role}"), dtype=dtype)

    def const(role, value):
        return gs.Constant(names.fresh(f"{name}.{role}"), np.asarray(value, dtype))

    mean, d, sq, v, ve, sd, y = (var(r) for r in ("mean", "centred", "squared", "var", "var_eps", "std", "norm"))
    nodes = [gs.Node("ReduceMean", names.fresh(f"{name}_mean"), {"axes": [-1], "keepdims": 1}, [x], [mean]),
             gs.Node("Sub", names.fresh(f"{name}_centre"), {}, [x, mean], [d]),
             gs.Node("Pow", names.fresh(f"{name}_square"), {}, [d, const("two", 2.0)], [sq]),
             gs.Node("ReduceMean", names.fresh(f"{name}_var"), {"axes": [-1], "keepdims": 1}, [sq], [v]),
             gs.Node("Add", names.fresh(f"{name}_eps"), {}, [v, const("eps", layer.eps)], [ve]),
             gs.Node("Sqrt", names.fresh(f"{name}_std"), {}, [ve], [sd]),
             gs.Node("Div", names.fresh(f"{name}_norm"), {}, [d, sd], [y])]
    if layer.affine is not None:
        scaled, shifted = var("scaled"), var("shifted")
        nodes += [gs.Node("Mul", names.fresh(f"{name}_gamma"), {}, [y, const("gamma", layer.affine.scale.numpy())],
                          [scaled]),
                  gs.Node("Add", names.fresh(f"{name}_beta"), {}, [scaled, const("beta", layer.affine.shift.numpy())],
                          [shifted])]
    return nodes


def concat_nodes(concat: Concat, inputs: list, names_: list, linear: bool, names: Names) -> LoweredNodes:
    """One Conv (Gemm where `linear`) per branch of `concat` on its input, and the Concat of their
    outputs along axis 1; each conv node named after the conv it replaces."""
    nodes = [(gemm_node if linear else conv_node)(conv, x, name, names)
             for conv, x, name in zip(concat.convs, inputs, names_)]
    out = gs.Variable(names.fresh(f"{names_[0]}_concat"), dtype=nodes[0].outputs[0].dtype)
    nodes.append(gs.Node("Concat", names.fresh(f"{names_[0]}_concat"), {"axis": 1},
                         [node.outputs[0] for node in nodes], [out]))
    return LoweredNodes(nodes, [out])


def function_name(fused: FusedSepConv | FusedMBConv) -> str:
    if isinstance(fused, FusedMBConv):
        return f"FusedMBConv_{fused.act1 or 'none'}_{fused.act2 or 'none'}" + ("_residual" if fused.residual else "")
    name = f"FusedSepConv_{fused.act1 or 'none'}_{fused.act2 or 'none'}"
    if fused.se is not None:
        name = f"FusedSepConvSE_{fused.act1 or 'none'}_{fused.act2 or 'none'}_{fused.se.act or 'none'}_{fused.se.gate}"
        name += f"_postgate_{fused.act_after_gate}" if fused.act_after_gate else ""
    if fused.expand is not None:      # FusedSepConv[SE]_… → FusedInvertedResidual[SE]_<act0>_…
        kind, rest = name.split("_", 1)
        name = f"{kind.replace('FusedSepConv', 'FusedInvertedResidual')}_{fused.act0 or 'none'}_{rest}"
    return name + ("_residual" if fused.residual else "")


def _weights(fused: FusedSepConv | FusedMBConv) -> list:
    """(role, ConvSpec) of the function's weight inputs, in order; the spatial conv is "dw"'s place."""
    if isinstance(fused, FusedMBConv):
        return [("conv", fused.conv), ("pw", fused.pw)]
    convs = [("ex", fused.expand)] if fused.expand is not None else []
    convs += [("dw", fused.dw), ("pw", fused.pw)]
    if fused.se is not None:
        convs += [("r", fused.se.reduce), ("e", fused.se.expand)]
    return convs


def fused_node(fused: FusedSepConv | FusedMBConv, x: gs.Tensor, residual: gs.Tensor | None, name: str,
               names: Names) -> gs.Node:
    """One call of dwsep.<function_name(fused)> on `x` (and the residual), the weights as fresh
    initializers (a conv without bias gets zeros)."""
    inputs = [x]
    for role, spec in _weights(fused):
        bias = spec.bias if spec.bias is not None else spec.weight.new_zeros(spec.out_channels)
        inputs += [gs.Constant(names.fresh(f"{name}.{role}.weight"), _array(spec.weight)),
                   gs.Constant(names.fresh(f"{name}.{role}.bias"), _array(bias))]
    if residual is not None:
        inputs.append(residual)
    out = gs.Variable(names.fresh(f"{name}_fused_output"), dtype=inputs[1].values.dtype)
    spatial = fused.conv if isinstance(fused, FusedMBConv) else fused.dw
    t, _, l, _ = spatial.padding      # (top, bottom, left, right), symmetric per axis
    attrs = {"strides": list(spatial.stride), "pads": [t, l, t, l], "group": spatial.groups}
    return gs.Node(function_name(fused), names.fresh(name), attrs, inputs, [out], domain=DOMAIN)


def function_proto(fused: FusedSepConv | FusedMBConv, opset: int, dtype: torch.dtype) -> onnx.FunctionProto:
    """The standard-op body of the function fused_node calls (the spatial conv's attributes are
    the call's)."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    inputs = ["X"] + [f"{kind}_{role}" for role, _ in _weights(fused) for kind in ("W", "B")]
    nodes, x = [], "X"
    expand = None if isinstance(fused, FusedMBConv) else fused.expand
    if expand is not None:      # the block's 1x1 expansion, then act0
        nodes = [helper.make_node("Conv", ["X", "W_ex", "B_ex"], ["expand"])]
        nodes += activation_nodes(fused.act0, "expand", "act0", np_dtype, opset)
        x = "act0" if fused.act0 else "expand"
    role = "conv" if isinstance(fused, FusedMBConv) else "dw"
    spatial = helper.make_node("Conv", [x, f"W_{role}", f"B_{role}"], ["dw"])
    for attr, kind in (("strides", onnx.AttributeProto.INTS), ("pads", onnx.AttributeProto.INTS),
                       ("group", onnx.AttributeProto.INT)):
        spatial.attribute.append(onnx.AttributeProto(name=attr, type=kind, ref_attr_name=attr))
    nodes += [spatial] + activation_nodes(fused.act1, "dw", "act1", np_dtype, opset)
    a = "act1" if fused.act1 else "dw"
    se = None if isinstance(fused, FusedMBConv) else fused.se
    if se is not None:
        nodes += [helper.make_node("GlobalAveragePool", [a], ["se_mean"]),
                  helper.make_node("Conv", ["se_mean", "W_r", "B_r"], ["se_reduce"])]
        nodes += activation_nodes(se.act, "se_reduce", "se_act", np_dtype, opset)
        nodes.append(helper.make_node("Conv", ["se_act" if se.act else "se_reduce", "W_e", "B_e"], ["se_expand"]))
        nodes.append(helper.make_node("Sigmoid", ["se_expand"], ["se_gate"]) if se.gate == "sigmoid" else
                     helper.make_node("HardSigmoid", ["se_expand"], ["se_gate"], alpha=1 / 6, beta=0.5))
        nodes.append(helper.make_node("Mul", [a, "se_gate"], ["se_scaled"]))
        nodes += activation_nodes(fused.act_after_gate, "se_scaled", "post", np_dtype, opset)
        a = "post" if fused.act_after_gate else "se_scaled"
    nodes.append(helper.make_node("Conv", [a, "W_pw", "B_pw"], ["pw"]))
    nodes += activation_nodes(fused.act2, "pw", "act2", np_dtype, opset)
    if fused.residual:
        inputs.append("R")
        nodes.append(helper.make_node("Add", ["act2" if fused.act2 else "pw", "R"], ["sum"]))
    nodes[-1].output[0] = "Y"   # the last node computes the function's output
    return helper.make_function(DOMAIN, function_name(fused), inputs, ["Y"], nodes, [helper.make_opsetid("", opset)],
                                attributes=["strides", "pads", "group"],
                                doc_string=f"{fused.describe()}: one fused kernel on GPU")


def activation_nodes(act: str | None, x: str, y: str, dtype, opset: int) -> list:
    """Standard ops computing the activation `act` of tensor x into y (None: no nodes)."""
    if act is None:
        return []

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


def act_nodes(act: str, x: gs.Tensor, name: str, names: Names, dtype, opset: int) -> LoweredNodes:
    """The activation `act` of x as graph nodes, in activation_nodes' standard form (its Constant
    nodes as fresh initializers), with fresh names."""
    tensors, nodes = {"x": x}, []
    for proto in activation_nodes(act, "x", "y", dtype, opset):
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        if proto.op_type == "Constant":
            tensors[proto.output[0]] = gs.Constant(names.fresh(f"{name}.{proto.output[0]}"),
                                                   onnx.numpy_helper.to_array(attrs["value"]))
            continue
        outs = [gs.Variable(names.fresh(f"{name}_{o}"), dtype=dtype) for o in proto.output]
        tensors.update(zip(proto.output, outs))
        nodes.append(gs.Node(proto.op_type, names.fresh(f"{name}_{proto.op_type}"), attrs,
                             [tensors[i] for i in proto.input], outs))
    return LoweredNodes(nodes, [nodes[-1].outputs[0]])


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
