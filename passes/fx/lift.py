"""nn.Module ⇄ chain IR for the FX front end.

Lifting reads a module's parameters into IR records (ConvSpec, Affine, Activation) or returns a
reason it cannot; lowering builds ordinary torch modules from IR (an asymmetric padding becomes
a ZeroPad2d in front of the conv).
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import Affine, ConvSpec

ACTIVATION_MODULES = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
}
ACTIVATION_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu", F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.gelu: "gelu",
}
ACTIVATION_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "relu_": "relu"}
ADD_FUNCTIONS = (operator.add, torch.add, operator.iadd)


def conv_spec(module: nn.Module) -> ConvSpec | str:
    """ConvSpec of an nn.Conv2d, or the reason it is not liftable."""
    if type(module) is not nn.Conv2d:
        return f"{type(module).__name__} is not a plain nn.Conv2d"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only zero padding is rewritten)"
    if not module.weight.dtype.is_floating_point:
        return f"non-float weight dtype {module.weight.dtype}"
    # [w_left, w_right, h_top, h_bottom]: also resolves padding="same" with even kernels
    wl, wr, ht, hb = module._reversed_padding_repeated_twice
    return ConvSpec(
        module.weight.detach(), None if module.bias is None else module.bias.detach(),
        tuple(module.stride), (ht, hb, wl, wr), tuple(module.dilation), module.groups,
    )


def batchnorm_affine(module: nn.Module) -> Affine | str:
    """Affine of an eval-mode BatchNorm2d, or the reason it is not foldable."""
    if not isinstance(module, nn.BatchNorm2d):
        return f"{type(module).__name__} is not BatchNorm2d"
    if module.training:
        return "BatchNorm in training mode"
    if module.running_mean is None or module.running_var is None:
        return "BatchNorm without running statistics (normalizes with batch statistics)"
    return Affine.from_batchnorm(
        module.running_mean, module.running_var, module.eps,
        None if module.weight is None else module.weight.detach(),
        None if module.bias is None else module.bias.detach(),
    )


def activation_name(node, gm) -> str | None:
    """Name of the elementwise activation this FX node (of GraphModule `gm`) applies, if known."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.GELU):
            return "gelu" if module.approximate == "none" else "gelu_tanh"
        return ACTIVATION_MODULES.get(type(module))
    if node.op == "call_function":
        if node.target is F.gelu and node.kwargs.get("approximate", "none") != "none":
            return "gelu_tanh"
        return ACTIVATION_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return ACTIVATION_METHODS.get(node.target)
    return None


def conv_module(spec: ConvSpec) -> nn.Module:
    """An nn.Conv2d (behind a ZeroPad2d when the padding is asymmetric) computing `spec`."""
    out_ch, in_per_group, kh, kw = spec.weight.shape
    t, b, l, r = spec.padding
    symmetric = spec.has_symmetric_padding
    conv = nn.Conv2d(
        spec.in_channels, out_ch, (kh, kw), spec.stride, (t, l) if symmetric else 0, spec.dilation,
        spec.groups, bias=spec.bias is not None, device=spec.weight.device, dtype=spec.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(spec.weight)
        if spec.bias is not None:
            conv.bias.copy_(spec.bias)
    conv.eval()
    if symmetric:
        return conv
    return nn.Sequential(nn.ZeroPad2d((l, r, t, b)), conv).eval()


def fused_module(spec) -> nn.Module:
    """The kernels' FusedSepConv2d (FusedSepConvSE2d with a squeeze-excitation) for a
    rewrite.ir.FusedSepConv (Triton on CUDA, torch on CPU)."""
    from kernels import FusedSepConv2d, FusedSepConvSE2d  # the kernel package is only needed when fusing

    dw, pw, se = spec.dw, spec.pw, spec.se
    common = dict(stride=dw.stride[0], padding=dw.padding[0], act1=spec.act1 or "none", act2=spec.act2 or "none")
    if se is None:
        return FusedSepConv2d(dw.weight, dw.bias, pw.weight, pw.bias, **common).eval()
    zeros = lambda conv: conv.weight.new_zeros(conv.out_channels)  # noqa: E731 - bias-free SE convs
    return FusedSepConvSE2d(dw.weight, dw.bias, pw.weight, pw.bias, se.reduce.weight,
                            zeros(se.reduce) if se.reduce.bias is None else se.reduce.bias, se.expand.weight,
                            zeros(se.expand) if se.expand.bias is None else se.expand.bias,
                            se_act=se.act or "none", se_gate=se.gate, **common).eval()
