"""FusedSepConv and FusedMBConv (the fuse, fuse_block and fuse_mbconv rules' records).

FX: the kernels' module (Triton on CUDA, torch on CPU): FusedSepConv2d, FusedSepConvSE2d with a
squeeze-excitation, for a whole inverted-residual block (FusedSepConv.expand)
FusedInvertedResidual2d / FusedInvertedResidualSE2d, and FusedMBConv2d for a FusedMBConv. The
kernels package is loaded only when a fused record is lowered.

ONNX: one call of a model-local function in the domain "dwsep" whose body is the same computation
in standard ops (the forms are documented in passes/onnx/lower.py); the function is added to the
model through the emitter (site.function), and the plan's note says the site was marked.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from rewrite.ir import FusedMBConv, FusedSepConv

from .activation import activation_nodes
from .registry import LoweringSite, fx_lowering, onnx_lowering

DOMAIN = "dwsep"


def fused_module(spec) -> nn.Module:
    """The kernels' module for a FusedSepConv or a FusedMBConv."""
    import kernels  # the kernel package is only needed when fusing

    if isinstance(spec, FusedMBConv):
        conv, pw = spec.conv, spec.pw
        return kernels.FusedMBConv2d(conv.weight, conv.bias, pw.weight, pw.bias, stride=conv.stride[0],
                                     padding=(conv.padding[0], conv.padding[2]), act1=spec.act1 or "none",
                                     act2=spec.act2 or "none").eval()
    dw, pw, se = spec.dw, spec.pw, spec.se
    common = dict(stride=dw.stride[0], padding=(dw.padding[0], dw.padding[2]), act1=spec.act1 or "none",
                  act2=spec.act2 or "none")  # ConvSpec padding (top, bottom, left, right), symmetric per axis
    weights = (dw.weight, dw.bias, pw.weight, pw.bias)
    if spec.expand is not None:
        weights = (spec.expand.weight, spec.expand.bias) + weights
        common["act0"] = spec.act0 or "none"
    if se is None:
        cls = kernels.FusedInvertedResidual2d if spec.expand is not None else kernels.FusedSepConv2d
        return cls(*weights, **common).eval()
    zeros = lambda conv: conv.weight.new_zeros(conv.out_channels)  # noqa: E731 - bias-free SE convs
    cls = kernels.FusedInvertedResidualSE2d if spec.expand is not None else kernels.FusedSepConvSE2d
    return cls(*weights, se.reduce.weight, zeros(se.reduce) if se.reduce.bias is None else se.reduce.bias,
               se.expand.weight, zeros(se.expand) if se.expand.bias is None else se.expand.bias,
               se_act=se.act or "none", se_gate=se.gate, act_after_gate=spec.act_after_gate or "none",
               **common).eval()


@fx_lowering(FusedSepConv, FusedMBConv)
def fused_to_modules(fused, site: LoweringSite) -> list:
    return [fused_module(fused)]


# -- ONNX --------------------------------------------------------------------------------------

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


def fused_node(fused: FusedSepConv | FusedMBConv, x, residual, name: str, site):
    """One call of dwsep.<function_name(fused)> on `x` (and the residual), the weights as fresh
    initializers (a conv without bias gets zeros)."""
    inputs = [x]
    for role, spec in _weights(fused):
        bias = spec.bias if spec.bias is not None else spec.weight.new_zeros(spec.out_channels)
        inputs += [site.constant(f"{name}.{role}.weight", _array(spec.weight)),
                   site.constant(f"{name}.{role}.bias", _array(bias))]
    if residual is not None:
        inputs.append(residual)
    out = site.variable(f"{name}_fused_output", inputs[1].values.dtype)
    spatial = fused.conv if isinstance(fused, FusedMBConv) else fused.dw
    t, _, l, _ = spatial.padding      # (top, bottom, left, right), symmetric per axis
    attrs = {"strides": list(spatial.stride), "pads": [t, l, t, l], "group": spatial.groups}
    return site.node(function_name(fused), name, attrs, inputs, [out], domain=DOMAIN)


def function_proto(fused: FusedSepConv | FusedMBConv, opset: int, dtype: torch.dtype):
    """The standard-op body (an onnx.FunctionProto) of the function fused_node calls (the spatial
    conv's attributes are the call's)."""
    import onnx
    from onnx import helper

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


@onnx_lowering(FusedSepConv, FusedMBConv)
def fused_to_nodes(fused, site) -> list:
    name = function_name(fused)
    site.function(DOMAIN, name, lambda: function_proto(fused, site.opset, site.torch_dtype))
    site.plan.note = f"marked as {DOMAIN}.{name} (one fused kernel on GPU)"
    residual = site.tensor(site.match.residual) if site.match.residual is not None else None
    return [fused_node(fused, site.x, residual, site.name, site)]


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
