"""PP-OCRv4's detector as a PyTorch module with its trained weights: the Paddle2ONNX file from the
rapidocr-onnxruntime wheel, cleaned by onnxslim and converted by onnx2torch. onnx2torch's Resize
computes its output size at run time, which torch.export cannot trace; each is replaced by the
nearest-neighbour upsampling by its constant scales, which is what the file computes."""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


class NearestUpsample(nn.Module):
    def __init__(self, scale: tuple[float, float]):
        super().__init__()
        self.scale = scale

    def forward(self, x, *_):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


def torch_detector() -> nn.Module:
    import onnx
    import onnxslim
    from onnx2torch import convert
    from .bench_approximate import detector_path

    gm = convert(onnxslim.slim(onnx.load(str(detector_path()))))
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if type(module).__name__ == "OnnxResize":
            scales = node.args[2]
            value = gm.get_submodule(scales.target.rpartition(".")[0]).get_buffer(scales.target.rpartition(".")[2]) \
                if "." in scales.target else gm.get_buffer(scales.target)
            upsample = NearestUpsample((float(value[2]), float(value[3])))
            *parent, leaf = node.target.split(".")
            setattr(gm.get_submodule(".".join(parent)) if parent else gm, leaf, upsample)
    gm.recompile()
    return gm.eval()
