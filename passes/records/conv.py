"""ConvSpec and Linear: their FX modules and their ONNX nodes.

FX: a ConvSpec becomes an nn.Conv2d (its parameters keep the names `weight` / `bias`, so the
state_dict reads naturally); an asymmetric zero padding (TF "same" with stride 2, or an absorbed
explicit pad) becomes `PaddedConv2d`, which pads per side before the conv. A 1x1 ConvSpec the view
lifted from a linear over [N, C] (the match's layout "nc", in a chain of convs) becomes an
nn.Linear, as does a Linear record over any rank.

ONNX: a ConvSpec becomes a Conv node with fresh initializers (asymmetric padding is native to
ONNX Conv), or a Gemm node where it stands for a linear over [N, C]; a Linear record becomes Gemm
over [N, C] and MatMul (+ Add of the bias) over any other rank, as torch exports nn.Linear.
In a chain of convs only, each node is named after the site with its role (dw, pw, linear) when
the chain has several.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import ConvSpec, Linear

from .registry import LoweringSite, fx_lowering, onnx_lowering


class PaddedConv2d(nn.Conv2d):
    """conv2d(pad(x, (left, right, top, bottom))): a conv with per-side zero padding."""

    def __init__(self, *args, sides: tuple, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.sides = tuple(sides)      # (top, bottom, left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.sides
        return super().forward(F.pad(x, (l, r, t, b)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sides={self.sides}"


def conv_module(spec: ConvSpec) -> nn.Conv2d:
    """An nn.Conv2d (PaddedConv2d when the padding is asymmetric) computing `spec`."""
    out_ch, _, kh, kw = spec.weight.shape
    t, b, l, r = spec.padding
    common = dict(in_channels=spec.in_channels, out_channels=out_ch, kernel_size=(kh, kw), stride=spec.stride,
                  dilation=spec.dilation, groups=spec.groups, bias=spec.bias is not None,
                  device=spec.weight.device, dtype=spec.weight.dtype)
    conv = nn.Conv2d(padding=(t, l), **common) if spec.has_symmetric_padding else \
        PaddedConv2d(sides=spec.padding, **common)
    with torch.no_grad():
        conv.weight.copy_(spec.weight)
        if spec.bias is not None:
            conv.bias.copy_(spec.bias)
    return conv.eval()


def linear_module(spec: ConvSpec) -> nn.Linear:
    """An nn.Linear computing the 1x1 `spec` over [N, C] (a linear the view lifted as a conv)."""
    out_ch, in_ch = spec.weight.shape[:2]
    linear = nn.Linear(in_ch, out_ch, bias=spec.bias is not None, device=spec.weight.device,
                       dtype=spec.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(spec.weight[:, :, 0, 0])
        if spec.bias is not None:
            linear.bias.copy_(spec.bias)
    return linear.eval()


def _convs_only(site: LoweringSite) -> bool:
    """A chain of convs only: there the match's layout says whether a conv is a linear over [N, C]
    (beside permutes, flattens, norms or linears a ConvSpec is always NCHW)."""
    return all(isinstance(layer, ConvSpec) for layer in site.layers)


def conv_role(spec: ConvSpec, site: LoweringSite) -> str:
    if site.layout == "nc" and _convs_only(site):
        return "linear"
    if spec.groups > 1 and spec.groups == spec.in_channels:
        return "dw"
    return "pw" if tuple(spec.kernel_size) == (1, 1) else "conv"


@fx_lowering(ConvSpec, role=conv_role)
def conv_to_modules(spec: ConvSpec, site: LoweringSite) -> list:
    linear = site.layout == "nc" and _convs_only(site)
    return [linear_module(spec) if linear else conv_module(spec)]


@fx_lowering(Linear, role=lambda layer, site: "linear")
def linear_to_modules(layer: Linear, site: LoweringSite) -> list:
    return [linear_module(layer.spec)]


# -- ONNX --------------------------------------------------------------------------------------

def conv_node(spec: ConvSpec, x, name: str, site):
    """A standard Conv node computing `spec` on `x`, with fresh initializers and a fresh output."""
    t, b, l, r = spec.padding
    inputs = [x, site.constant(f"{name}.weight", _array(spec.weight))]
    if spec.bias is not None:
        inputs.append(site.constant(f"{name}.bias", _array(spec.bias)))
    out = site.variable(f"{name}_output", inputs[1].values.dtype)
    attrs = {"kernel_shape": list(spec.kernel_size), "strides": list(spec.stride), "pads": [t, l, b, r],
             "dilations": list(spec.dilation), "group": spec.groups}
    return site.node("Conv", name, attrs, inputs, [out])


def gemm_node(spec: ConvSpec, x, name: str, site):
    """A Gemm node (transB = 1) computing the 1x1 `spec` as a linear over x = [N, C_in]."""
    inputs = [x, site.constant(f"{name}.weight", _array(spec.weight[:, :, 0, 0]))]
    if spec.bias is not None:
        inputs.append(site.constant(f"{name}.bias", _array(spec.bias)))
    out = site.variable(f"{name}_output", inputs[1].values.dtype)
    return site.node("Gemm", name, {"transB": 1}, inputs, [out])


def matmul_nodes(spec: ConvSpec, x, name: str, site) -> list:
    """MatMul (+ Add of the bias) computing the 1x1 `spec` over the last axis of x, any rank (as torch
    exports nn.Linear over channels-last activations or tokens)."""
    w = site.constant(f"{name}.weight", np.ascontiguousarray(_array(spec.weight[:, :, 0, 0]).T))
    out = site.variable(f"{name}_output", w.values.dtype)
    nodes = [site.node("MatMul", name, {}, [x, w], [out])]
    if spec.bias is not None:
        biased = site.variable(f"{name}_biased", w.values.dtype)
        bias_name = site.fresh(f"{name}_bias")       # the node's name first, as it always was
        nodes.append(site.node("Add", bias_name, {}, [out, site.constant(f"{name}.bias", _array(spec.bias))],
                               [biased], fresh=False))
    return nodes


@onnx_lowering(ConvSpec)
def conv_to_nodes(spec: ConvSpec, site) -> list:
    if not _convs_only(site):
        node = conv_node(spec, site.x, site.name, site)
        if site.shape is not None:
            shape = site.shape
            site.shape = (shape[0], spec.out_channels, *spec.output_hw(*shape[2:]))
        return [node]
    linear = site.layout == "nc"
    role = "linear" if linear else "dw" if spec.is_depthwise else "pw"
    name = site.name if site.single else f"{site.name}_{role}"
    return [(gemm_node if linear else conv_node)(spec, site.x, name, site)]


@onnx_lowering(Linear)
def linear_to_nodes(layer: Linear, site) -> list:
    shape = site.needed_shape()
    nodes = [gemm_node(layer.spec, site.x, site.name, site)] if len(shape) == 2 else \
        matmul_nodes(layer.spec, site.x, site.name, site)
    site.shape = shape[:-1] + (layer.spec.out_channels,)
    return nodes


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
