"""LayerNorm: nn.LayerNorm in FX (UnitAffineLayerNorm without an affine), LayerNormalization in
ONNX (Scale = 1 without an affine; below opset 17, which lacks it, written out as exporters do)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite.ir import ConvSpec, LayerNorm, Linear

from .registry import LoweringSite, fx_lowering, onnx_lowering

LAYER_NORMALIZATION_OPSET = 17


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


@fx_lowering(LayerNorm, role=lambda layer, site: "norm")
def layer_norm_to_modules(layer: LayerNorm, site: LoweringSite) -> list:
    """Its width from its affine, else from the next linear or conv of the chain."""
    width = next((l.spec if isinstance(l, Linear) else l for l in site.layers[site.index + 1:]
                  if isinstance(l, (Linear, ConvSpec))), None)
    channels = layer.affine.scale.numel() if layer.affine is not None else width.in_channels
    ref = width.weight if width is not None else layer.affine.scale
    if layer.affine is None:
        return [UnitAffineLayerNorm(channels, layer.eps, device=ref.device, dtype=ref.dtype).eval()]
    norm = nn.LayerNorm(channels, eps=layer.eps, device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        norm.weight.copy_(layer.affine.scale)
        norm.bias.copy_(layer.affine.shift)
    return [norm.eval()]


@onnx_lowering(LayerNorm)
def layer_norm_to_nodes(layer: LayerNorm, site) -> list:
    name, x = site.name, site.x
    dtype = x.dtype if x.dtype is not None else np.float32
    if site.opset < LAYER_NORMALIZATION_OPSET:
        return layer_norm_nodes(layer, x, dtype, name, site)
    c = site.needed_shape()[-1]
    scale = np.ones(c, dtype) if layer.affine is None else layer.affine.scale.numpy().astype(dtype)
    inputs = [x, site.constant(f"{name}.norm_scale", scale)]
    if layer.affine is not None:
        inputs.append(site.constant(f"{name}.norm_bias", layer.affine.shift.numpy().astype(dtype)))
    out = site.variable(f"{name}_norm", dtype)
    return [site.node("LayerNormalization", f"{name}_norm", {"axis": -1, "epsilon": layer.eps}, inputs, [out])]


def layer_norm_nodes(layer: LayerNorm, x, dtype, name: str, site) -> list:
    """(x − E[x]) / sqrt(E[(x − E[x])²] + ε) [· γ + β] over the last axis in opset-13 ops (ReduceMean
    with its axes as an attribute), as torch exports a LayerNorm below opset 17."""
    def var(role):
        return site.variable(f"{name}_{role}", dtype)

    def const(role, value):
        return site.constant(f"{name}.{role}", np.asarray(value, dtype))

    def make(op, fresh_name, attrs, inputs, outputs):
        return site.node(op, fresh_name, attrs, inputs, outputs, fresh=False)

    mean, d, sq, v, ve, sd, y = (var(r) for r in ("mean", "centred", "squared", "var", "var_eps", "std", "norm"))
    nodes = [make("ReduceMean", site.fresh(f"{name}_mean"), {"axes": [-1], "keepdims": 1}, [x], [mean]),
             make("Sub", site.fresh(f"{name}_centre"), {}, [x, mean], [d])]
    square = site.fresh(f"{name}_square")
    nodes.append(make("Pow", square, {}, [d, const("two", 2.0)], [sq]))
    nodes.append(make("ReduceMean", site.fresh(f"{name}_var"), {"axes": [-1], "keepdims": 1}, [sq], [v]))
    eps = site.fresh(f"{name}_eps")
    nodes.append(make("Add", eps, {}, [v, const("eps", layer.eps)], [ve]))
    nodes.append(make("Sqrt", site.fresh(f"{name}_std"), {}, [ve], [sd]))
    nodes.append(make("Div", site.fresh(f"{name}_norm"), {}, [d, sd], [y]))
    if layer.affine is not None:
        scaled, shifted = var("scaled"), var("shifted")
        gamma = site.fresh(f"{name}_gamma")
        nodes.append(make("Mul", gamma, {}, [y, const("gamma", layer.affine.scale.numpy())], [scaled]))
        beta = site.fresh(f"{name}_beta")
        nodes.append(make("Add", beta, {}, [scaled, const("beta", layer.affine.shift.numpy())], [shifted]))
    return nodes
