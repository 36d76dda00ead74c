"""Affine over the channels of NCHW (what a fold leaves in front of a padded conv: the shift that
cannot cross the conv's zero padding, rewrite.algebra.fold.fold_scale_before): AffineModule in FX,
in ONNX Mul and / or Add by [1, C, 1, 1] initializers. Either factor is left out where it is the
identity, so a pure shift is one pass over the tensor, as it was written."""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.ir import Affine, ConvSpec, Linear

from .registry import LoweringSite, fx_lowering, onnx_lowering


class AffineModule(nn.Module):
    """scale[c]·x + shift[c] over dim 1; a factor that is the identity is not applied."""

    def __init__(self, affine: Affine, dtype: torch.dtype, device=None):
        super().__init__()
        self.affine = affine      # float64, for the FX view to lift it back; .half() / .to() leave it (and the
                                  # buffers are what forward reads)
        view = (1, -1, 1, 1)
        self.register_buffer("scale", None if _is_one(affine.scale) else
                             affine.scale.to(device=device, dtype=dtype).view(view))
        self.register_buffer("shift", None if not bool(affine.shift.any()) else
                             affine.shift.to(device=device, dtype=dtype).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        return x + self.shift if self.shift is not None else x

    def extra_repr(self) -> str:
        return f"channels={self.affine.scale.numel()}, scale={self.scale is not None}, shift={self.shift is not None}"


def _is_one(scale: torch.Tensor) -> bool:
    return bool((scale == 1).all())


@fx_lowering(Affine, role=lambda layer, site: "affine")
def affine_to_modules(layer: Affine, site: LoweringSite) -> list:
    """In the dtype and on the device of the chain's next conv (an Affine is lowered in front of one)."""
    if layer.axis != 1:
        raise TypeError("only an affine over the channels of NCHW (axis 1) is lowered")
    ref = next((l.spec if isinstance(l, Linear) else l for l in site.layers[site.index + 1:]
                if isinstance(l, (Linear, ConvSpec))), None)
    ref = ref.weight if ref is not None else torch.empty(0)
    return [AffineModule(layer, ref.dtype, ref.device).eval()]


@onnx_lowering(Affine)
def affine_to_nodes(layer: Affine, site) -> list:
    if layer.axis != 1:
        raise TypeError("only an affine over the channels of NCHW (axis 1) is lowered")
    name, x, nodes = site.name, site.x, []
    for op, value, skip in (("Mul", layer.scale, _is_one(layer.scale)), ("Add", layer.shift, not layer.shift.any())):
        if skip:
            continue
        out = site.variable(f"{name}_{op.lower()}", site.dtype)
        constant = site.constant(f"{name}.{'scale' if op == 'Mul' else 'shift'}",
                                 value.detach().reshape(1, -1, 1, 1).numpy().astype(site.dtype))
        nodes.append(site.node(op, f"{name}_{op.lower()}", {}, [x, constant], [out]))
        x = out
    if not nodes:           # the identity: still one node, so that the site has an output
        out = site.variable(f"{name}_identity", site.dtype)
        nodes.append(site.node("Identity", f"{name}_identity", {}, [x], [out]))
    return nodes
