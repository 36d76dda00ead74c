"""DepthToSpace (deconv_shuffle's record): nn.PixelShuffle in FX; in ONNX DepthToSpace in mode "CRD",
which is pixel_shuffle's channel order (the default "DCR" is not). DepthToSpace takes a mode from
opset 11, the oldest opset the ONNX path accepts."""
from __future__ import annotations

import torch.nn as nn

from rewrite.ir import DepthToSpace

from .registry import LoweringSite, fx_lowering, onnx_lowering


@fx_lowering(DepthToSpace, role=lambda layer, site: "shuffle")
def depth_to_space_to_modules(layer: DepthToSpace, site: LoweringSite) -> list:
    return [nn.PixelShuffle(layer.block)]


@onnx_lowering(DepthToSpace)
def depth_to_space_to_nodes(layer: DepthToSpace, site) -> list:
    name, x, s = site.name, site.x, layer.block
    out = site.variable(f"{name}_shuffled", x.dtype if x.dtype is not None else site.dtype)
    node = site.node("DepthToSpace", f"{name}_d2s", {"blocksize": s, "mode": "CRD"}, [x], [out])
    if site.shape is not None:
        n, c, h, w = site.shape
        site.shape = (n, c // (s * s), h * s, w * s)
    return [node]
