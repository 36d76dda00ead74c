"""Chain IR → torch modules for the FX front end, and running a run of graph nodes on its own.

A rewritten conv becomes an nn.Conv2d (its parameters keep the names `weight` / `bias`, so the
state_dict reads naturally), a rewritten linear over [N, C] an nn.Linear; an asymmetric zero
padding (TF "same" with stride 2, or an absorbed explicit pad) becomes `PaddedConv2d`, which
pads per side before the conv. A fused
chain becomes the kernels' FusedSepConv2d (FusedSepConvSE2d with a squeeze-excitation; a whole
inverted-residual block FusedInvertedResidual2d / FusedInvertedResidualSE2d, a Fused-MBConv block
FusedMBConv2d).
"""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import Concat, ConvSpec, Flatten, FusedMBConv, LayerNorm, Linear, Permute


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


def conv_spec_of_module(module: nn.Module) -> ConvSpec | str:
    """ConvSpec of an nn.Conv2d (or PaddedConv2d), or the reason it is not liftable."""
    if type(module) not in (nn.Conv2d, PaddedConv2d):
        return f"{type(module).__name__} is not a plain nn.Conv2d"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only zero padding is rewritten)"
    if isinstance(module.padding, str):
        return f"padding={module.padding!r} is resolved by the conv at run time"
    if not module.weight.dtype.is_floating_point:
        return f"non-float weight dtype {module.weight.dtype}"
    if isinstance(module, PaddedConv2d):
        padding = module.sides
    else:
        ph, pw = module.padding
        padding = (ph, ph, pw, pw)
    return ConvSpec(module.weight.detach(), None if module.bias is None else module.bias.detach(),
                    tuple(module.stride), padding, tuple(module.dilation), module.groups)


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


class PermuteModule(nn.Module):
    """x.permute(perm)."""

    def __init__(self, perm):
        super().__init__()
        self.perm = tuple(perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)

    def extra_repr(self) -> str:
        return f"perm={self.perm}"


class UnitAffineLayerNorm(nn.LayerNorm):
    """A LayerNorm whose affine was folded away (fold_norm): it normalizes only, but keeps γ = 1
    and β = 0 as buffers that it hands to F.layer_norm. Why: torch's CPU kernel without weight and
    bias is the slower one; over a 1x56x56x40 tensor (ConvNeXt-atto's first stage) it measured
    1.74-1.77x slower than with them (paired, 1 and 2 threads, torch 2.14:
    results/layer_norm_affine_cpu.md), so a fold that passed None made the model slower in eager.
    The ones and zeros are constants, not parameters: the rewritten model has nothing left to
    train there, and the view lifts this module as a LayerNorm with no affine (passes/fx/view.py),
    so fold_norm never folds it again."""

    def __init__(self, channels: int, eps: float, device=None, dtype=None):
        super().__init__(channels, eps=eps, elementwise_affine=False, device=device, dtype=dtype)
        self.register_buffer("unit_weight", torch.ones(channels, device=device, dtype=dtype))
        self.register_buffer("unit_bias", torch.zeros(channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.unit_weight, self.unit_bias, self.eps)


class ConcatConvs(nn.Module):
    """cat([conv_i(x_i)], 1): the form a Concat site is checked in; the adapter splices its convs
    in as modules of their own and an aten.cat."""

    def __init__(self, convs):
        super().__init__()
        self.convs = nn.ModuleList(convs)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv, x in zip(self.convs, xs)], 1)


def concat_module(concat: Concat, linear: bool) -> ConcatConvs:
    """The convs of `concat` as nn.Conv2d (nn.Linear where `linear`: a concat of linears over [N, C])."""
    return ConcatConvs([(linear_module if linear else conv_module)(conv) for conv in concat.convs])


def shape_modules(layers: list) -> list:
    """Modules for a chain of Linear / ConvSpec (NCHW) / LayerNorm / Permute / Flatten layers:
    nn.Linear (over the last axis, any rank), nn.Conv2d, nn.LayerNorm (UnitAffineLayerNorm when
    the LayerNorm has no affine; its width from the next linear or conv), PermuteModule,
    nn.Flatten."""
    modules = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear):
            modules.append(linear_module(layer.spec))
        elif isinstance(layer, ConvSpec):
            modules.append(conv_module(layer))
        elif isinstance(layer, LayerNorm):
            width = next((l.spec if isinstance(l, Linear) else l for l in layers[i + 1:]
                          if isinstance(l, (Linear, ConvSpec))), None)
            channels = layer.affine.scale.numel() if layer.affine is not None else width.in_channels
            ref = width.weight if width is not None else layer.affine.scale
            if layer.affine is None:
                modules.append(UnitAffineLayerNorm(channels, layer.eps, device=ref.device, dtype=ref.dtype).eval())
                continue
            norm = nn.LayerNorm(channels, eps=layer.eps, device=ref.device, dtype=ref.dtype)
            with torch.no_grad():
                norm.weight.copy_(layer.affine.scale)
                norm.bias.copy_(layer.affine.shift)
            modules.append(norm.eval())
        elif isinstance(layer, Permute):
            modules.append(PermuteModule(layer.perm))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten(layer.start, layer.end))
        else:
            raise TypeError(f"no module for {layer.describe()} here")
    return modules


def fused_module(spec) -> nn.Module:
    """The kernels' module for a rewrite.ir.FusedSepConv (Triton on CUDA, torch on CPU):
    FusedSepConv2d, FusedSepConvSE2d with a squeeze-excitation, for a whole inverted-residual
    block (spec.expand) FusedInvertedResidual2d / FusedInvertedResidualSE2d, and FusedMBConv2d for
    a rewrite.ir.FusedMBConv."""
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


def run_nodes(gm: fx.GraphModule, nodes: list, feeds: dict, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Evaluate `nodes` (in graph order) on `feeds` {node: tensor}; parameters (and values computed
    from parameters only) come from the graph, cast to `dtype` when given (float64 for the
    reference). Returns the last value."""
    from .graph import constant_value

    env = dict(feeds)

    def load(arg: fx.Node):
        if arg in env:
            return env[arg]
        value = constant_value(gm, arg, dtype)
        if value is None:
            raise KeyError(f"node {arg.name} is read by the site but is neither fed nor computed from parameters")
        return value

    for node in nodes:
        args, kwargs = fx.node.map_arg(node.args, load), fx.node.map_arg(node.kwargs, load)
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            module = copy.deepcopy(module).to(dtype) if dtype is not None else module
            env[node] = module(*args, **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)
    return env[nodes[-1]]
