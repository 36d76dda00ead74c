"""Builders shared by the tests: random IR layers and BN modules with non-trivial statistics."""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.ir import Affine, ConvSpec

F64 = torch.float64


def rand(*shape, dtype=F64, gen=None):
    return torch.randn(*shape, dtype=dtype, generator=gen)


def dw_spec(c, k=3, r=1, stride=1, padding=None, dilation=1, bias=True, dtype=F64, gen=None):
    p = (k // 2,) * 4 if padding is None else padding
    return ConvSpec(rand(c * r, 1, k, k, dtype=dtype, gen=gen), rand(c * r, dtype=dtype, gen=gen) if bias else None,
                    (stride, stride), p, (dilation, dilation), groups=c)


def pw_spec(cin, cout, bias=True, stride=1, dtype=F64, gen=None):
    return ConvSpec(rand(cout, cin, 1, 1, dtype=dtype, gen=gen), rand(cout, dtype=dtype, gen=gen) if bias else None,
                    (stride, stride))


def random_affine(c, dtype=F64, gen=None):
    var = torch.rand(c, dtype=dtype, generator=gen) + 0.5
    return Affine.from_batchnorm(rand(c, dtype=dtype, gen=gen), var, 1e-5,
                                 rand(c, dtype=dtype, gen=gen), rand(c, dtype=dtype, gen=gen))


def batchnorm(c, seed=0):
    """An eval-mode BatchNorm2d with non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return bn.eval()


def max_rel(a, b):
    """max|a − b| / max|b|; 0 when both are all zero (a ReLU can zero a small output)."""
    scale, diff = b.abs().max(), (a - b).abs().max()
    return 0.0 if scale == 0 and diff == 0 else (diff / scale).item()


def count_ops(module, name: str) -> int:
    """How many calls of the ATen op `name` (e.g. "batch_norm") the exported graphs inside
    `module` still make."""
    import torch.fx as fx

    from passes.fx.graph import op_name

    return sum(1 for gm in module.modules() if isinstance(gm, fx.GraphModule)
               for node in gm.graph.nodes if node.op == "call_function" and op_name(node.target) == name)


def to_onnx(model, x):
    """The model's TorchScript ONNX export (opset 17, input "x", dynamic batch) as a ModelProto."""
    import io

    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N"}})
    return onnx.load_from_string(buffer.getvalue())


def fresh_tolerance(original_out, reference, floor: float = 1e-4) -> float:
    """The whole-model tolerance on a fresh input, by the rule the optimizer documents: the float32
    default (1e-4), widened to 2x the original float32 model's own error against float64 on that
    same input (an ill-conditioned model is that far from float64 before any rewrite)."""
    return max(floor, 2 * max_rel(original_out.double(), reference))
