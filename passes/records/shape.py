"""Permute and Flatten: PermuteModule / nn.Flatten in FX, Transpose / Reshape in ONNX."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from rewrite.ir import Flatten, Permute

from .registry import LoweringSite, fx_lowering, onnx_lowering


class PermuteModule(nn.Module):
    """x.permute(perm)."""

    def __init__(self, perm):
        super().__init__()
        self.perm = tuple(perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)

    def extra_repr(self) -> str:
        return f"perm={self.perm}"


@fx_lowering(Permute, role=lambda layer, site: "permute")
def permute_to_modules(layer: Permute, site: LoweringSite) -> list:
    return [PermuteModule(layer.perm)]


@fx_lowering(Flatten, role=lambda layer, site: "flatten")
def flatten_to_modules(layer: Flatten, site: LoweringSite) -> list:
    return [nn.Flatten(layer.start, layer.end)]


@onnx_lowering(Permute)
def permute_to_nodes(layer: Permute, site) -> list:
    name, x = site.name, site.x
    out = site.variable(f"{name}_permuted", x.dtype if x.dtype is not None else np.float32)
    node = site.node("Transpose", f"{name}_transpose", {"perm": list(layer.perm)}, [x], [out])
    shape = site.needed_shape()
    site.shape = tuple(shape[p] for p in layer.perm)
    return [node]


@onnx_lowering(Flatten)
def flatten_to_nodes(layer: Flatten, site) -> list:
    """Reshape to [0] * start + [-1] + the dims after `end` (its full shape known here)."""
    name, x = site.name, site.x
    out = site.variable(f"{name}_flat", x.dtype if x.dtype is not None else np.float32)
    shape = site.needed_shape()
    s, e = layer.start, layer.end
    target = [0] * s + [-1] + [int(d) for d in shape[e + 1:]]
    reshape = site.fresh(f"{name}_reshape")
    node = site.node("Reshape", reshape, {}, [x, site.constant(f"{name}.shape", np.array(target, np.int64))], [out],
                     fresh=False)
    site.shape = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
    return [node]
