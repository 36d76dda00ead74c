"""DepthToSpace (deconv_shuffle's record): nn.PixelShuffle in FX; in ONNX DepthToSpace in mode "CRD"
(which is pixel_shuffle's channel order; the default "DCR" is not), or below opset 11, where
DepthToSpace has no mode, Reshape → Transpose → Reshape over the site's full shape."""
from __future__ import annotations

import numpy as np
import torch.nn as nn

from rewrite.ir import DepthToSpace

from .registry import LoweringSite, fx_lowering, onnx_lowering

MODE_OPSET = 11          # DepthToSpace takes mode= from opset 11


@fx_lowering(DepthToSpace, role=lambda layer, site: "shuffle")
def depth_to_space_to_modules(layer: DepthToSpace, site: LoweringSite) -> list:
    return [nn.PixelShuffle(layer.block)]


@onnx_lowering(DepthToSpace)
def depth_to_space_to_nodes(layer: DepthToSpace, site) -> list:
    name, x, s = site.name, site.x, layer.block
    dtype = x.dtype if x.dtype is not None else site.dtype
    out = site.variable(f"{name}_shuffled", dtype)
    shape = site.shape
    if site.opset >= MODE_OPSET:
        nodes = [site.node("DepthToSpace", f"{name}_d2s", {"blocksize": s, "mode": "CRD"}, [x], [out])]
    else:
        n, c, h, w = site.needed_shape()
        split = site.variable(f"{name}_split", dtype)
        moved = site.variable(f"{name}_moved", dtype)
        nodes = [
            site.node("Reshape", f"{name}_split", {}, [x, site.constant(f"{name}.split", np.array(
                [0, c // (s * s), s, s, h, w], np.int64))], [split]),
            site.node("Transpose", f"{name}_move", {"perm": [0, 1, 4, 2, 5, 3]}, [split], [moved]),
            site.node("Reshape", f"{name}_merge", {}, [moved, site.constant(f"{name}.merge", np.array(
                [0, c // (s * s), h * s, w * s], np.int64))], [out]),
        ]
    if shape is not None:
        n, c, h, w = shape
        site.shape = (n, c // (s * s), h * s, w * s)
    return nodes
