"""The original model evaluated in float64: the whole-model check's reference.

onnxruntime has no float64 Conv on its CPU provider, so the original in onnxruntime cannot tell
how far its own float32 arithmetic is from exact; a deep model whose rewrites are exact up to
rounding (43 BatchNorm folds through an FPN) can then miss a fixed 1e-4 by rounding alone. Here
the model is widened to float64 (initializers, Constant nodes, Cast(to=FLOAT), ConstantOfShape
values, declared types) and run by `onnx.reference.ReferenceEvaluator`, with the ops that carry
the arithmetic (Conv, ConvTranspose) and nearest/linear Resize done by torch in
float64. The original's own error against this reference is the baseline that widens the
tolerance (rewrite.numerics.model_tolerance).

The evaluation is bounded: past `budget_s` seconds, or as soon as the convs done so far say the
whole would take over PROJECTION_FACTOR times that (the time since the first conv over the share
of the convs done, checked past the MIN_CONVS_SEEN-th conv, plus the time before it), it gives up
(`ReferenceUnavailable`) rather than spend the budget on a reference it will not get, as it does
for a model it cannot widen (quantized ops, other domains, subgraphs); the caller then
estimates the original's rounding error from two onnxruntime runs that round differently
(`rounding_spread`).
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops import op_conv, op_conv_transpose, op_matmul, op_resize

from . import runtime

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
# ops that only make sense on float32 (quantization) or that the widening cannot follow
NOT_WIDENED = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger",
               "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "If", "Loop", "Scan", "SequenceMap",
               "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
REFERENCE_BUDGET_S = 5.0
PROJECTION_FACTOR = 2.0   # early convs run at the highest resolution: a projection from them overestimates
MIN_CONVS_SEEN = 4


class ReferenceUnavailable(RuntimeError):
    """The float64 reference cannot be had for this model (the message says why)."""


def widened(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy of `model`; raises ReferenceUnavailable for ops it cannot widen."""
    unsupported = sorted({n.op_type for n in model.graph.node if n.op_type in NOT_WIDENED or
                          n.domain not in ("", "ai.onnx")})
    if unsupported:
        raise ReferenceUnavailable(f"ops {', '.join(unsupported[:5])} cannot be evaluated in float64")
    if model.functions:
        raise ReferenceUnavailable("the model has local functions")
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    g = wide.graph
    for i, t in enumerate(g.initializer):
        if t.data_type in FLOATS:
            g.initializer[i].CopyFrom(_double(t))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type in FLOATS:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH or attr.type == onnx.AttributeProto.GRAPHS:
                raise ReferenceUnavailable(f"{node.op_type} has a subgraph")
            if node.op_type in ("Cast", "EyeLike") and attr.name in ("to", "dtype") and attr.i in FLOATS:
                attr.i = TensorProto.DOUBLE
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in FLOATS:
                attr.t.CopyFrom(_double(attr.t))
        if node.op_type == "Constant":
            for attr in node.attribute:     # value_float(s) would make float32 tensors
                if attr.name == "value_float":
                    attr.CopyFrom(onnx.helper.make_attribute("value", _double_array(np.array(attr.f), attr.name)))
                elif attr.name == "value_floats":
                    attr.CopyFrom(onnx.helper.make_attribute("value", _double_array(np.array(attr.floats), attr.name)))
    return wide


def evaluate(model: onnx.ModelProto, feeds: dict, budget_s: float = REFERENCE_BUDGET_S) -> dict[str, np.ndarray]:
    """The outputs of `model` evaluated in float64 on `feeds` (float inputs widened), within
    `budget_s` seconds; raises ReferenceUnavailable otherwise."""
    wide = widened(model)
    deadline = time.perf_counter() + budget_s
    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)
    try:
        evaluator = ReferenceEvaluator(wide, new_ops=_torch_ops(deadline, budget_s, convs))
        names = [o.name for o in model.graph.output]
        wide_feeds = {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v for k, v in feeds.items()}
        with torch.no_grad():
            outputs = evaluator.run(names, wide_feeds)
    except ReferenceUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the reference evaluator raises many types; the caller falls back
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ReferenceUnavailable(f"the float64 evaluation failed ({type(exc).__name__}: {line})") from None
    if time.perf_counter() > deadline:
        raise ReferenceUnavailable(f"the float64 evaluation took over {budget_s:.0f} s")
    return dict(zip(names, (np.asarray(o) for o in outputs)))


def rounding_spread(model: onnx.ModelProto, feeds: dict, plain: dict) -> dict[str, np.ndarray]:
    """The original run by onnxruntime with its graph optimizations on (fused, re-laid-out
    kernels that round differently); with `plain`, the run with them off, its distance is an
    estimate of the original's own rounding error."""
    sess = runtime.session(model, optimized=True)
    names = list(plain)
    return dict(zip(names, sess.run(names, feeds)))


# -- float64 kernels in torch ----------------------------------------------------------------

def _torch_ops(deadline: float, budget_s: float = REFERENCE_BUDGET_S, convs: int = 0) -> list:
    started = deadline - budget_s
    first, seen = [None], [0]   # when the first conv started; convs done

    def check(conv: bool = False):
        now = time.perf_counter()
        if now > deadline:
            raise ReferenceUnavailable("the float64 evaluation ran past its time budget")
        if not conv or not convs:
            return
        first[0] = now if first[0] is None else first[0]
        seen[0] += 1
        if seen[0] > MIN_CONVS_SEEN:
            projected = (first[0] - started) + (now - first[0]) * convs / (seen[0] - 1)
            if projected > PROJECTION_FACTOR * budget_s:
                raise ReferenceUnavailable(f"the float64 evaluation would take about {projected:.0f} s "
                                           f"(projected from {seen[0]} of {convs} convs), over its {budget_s:.0f} s budget")

    class Conv(op_conv.Conv):
        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,
                 strides=None):
            check(conv=True)
            nd = X.ndim - 2
            if nd not in (1, 2, 3) or X.dtype != np.float64:
                return super()._run(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                                    kernel_shape=kernel_shape, pads=pads, strides=strides)
            strides, dilations = list(strides or [1] * nd), list(dilations or [1] * nd)
            kernel = list(W.shape[2:])
            pads = _pads(auto_pad, pads, X.shape[2:], kernel, strides, dilations)
            x = F.pad(_t(X), _torch_pads(pads, nd))
            if nd == 2 and W.shape[1] == 1 and (group or 1) == X.shape[1] > 1:
                return (_depthwise(x, _t(W), None if B is None else _t(B), strides, dilations).numpy(),)
            conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
            y = conv(x, _t(W), None if B is None else _t(B),
                     stride=strides, dilation=dilations, groups=group or 1)
            return (y.numpy(),)

    class ConvTranspose(op_conv_transpose.ConvTranspose):
        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
                 output_padding=None, output_shape=None, pads=None, strides=None):
            check(conv=True)
            nd = X.ndim - 2
            plain = (auto_pad in (None, "NOTSET") and output_shape is None and nd in (1, 2, 3)
                     and X.dtype == np.float64 and (pads is None or list(pads[:nd]) == list(pads[nd:])))
            if not plain:
                return super()._run(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                                    kernel_shape=kernel_shape, output_padding=output_padding,
                                    output_shape=output_shape, pads=pads, strides=strides)
            conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
            y = conv(_t(X), _t(W),
                     None if B is None else _t(B), stride=list(strides or [1] * nd),
                     padding=list(pads[:nd]) if pads is not None else 0,
                     output_padding=list(output_padding or [0] * nd), groups=group or 1,
                     dilation=list(dilations or [1] * nd))
            return (y.numpy(),)

    class MatMul(op_matmul.MatMul):
        def _run(self, a, b):
            check()
            return super()._run(a, b)

    class Resize(op_resize.Resize):
        def _run(self, X, roi=None, scales=None, sizes=None, **attrs):
            check()
            out = _resize(X, scales, sizes, attrs)
            return (out,) if out is not None else super()._run(X, roi, scales, sizes, **attrs)

    class BatchNormalization(OpRun):
        # the reference's opset 9..13 version runs in training mode whenever `momentum` is set
        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None):
            if training_mode or len([o for o in self.onnx_node.output if o]) > 1:
                raise ReferenceUnavailable("a BatchNormalization in training mode")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) \
                + bias.reshape(shape)
            return (y.astype(x.dtype),)

    return [Conv, ConvTranspose, MatMul, Resize, BatchNormalization]


def _resize(X, scales, sizes, attrs) -> np.ndarray | None:
    """Nearest (asymmetric, floor) and bilinear (half_pixel / pytorch_half_pixel / align_corners)
    over the last two axes by torch; None for any other case (the reference implementation runs)."""
    if X.ndim != 4 or X.dtype != np.float64 or attrs.get("axes") is not None \
            or attrs.get("antialias") or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    if sizes is not None and len(sizes):
        out_hw = [int(s) for s in sizes[2:]]
        if [int(s) for s in sizes[:2]] != list(X.shape[:2]):
            return None
        ratio = None
    elif scales is not None and len(scales) == 4 and list(scales[:2]) == [1, 1]:
        out_hw = [int(np.floor(d * s)) for d, s in zip(X.shape[2:], scales[2:])]
        ratio = [float(s) for s in scales[2:]]
    else:
        return None
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    x = _t(X)
    if mode == "nearest" and ctm == "asymmetric" and attrs.get("nearest_mode", "round_prefer_floor") == "floor":
        return F.interpolate(x, size=out_hw, scale_factor=None, mode="nearest").numpy() if ratio is None else \
            F.interpolate(x, scale_factor=ratio, mode="nearest", recompute_scale_factor=False).numpy()
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if ctm == "pytorch_half_pixel" and min(out_hw) <= 1:
            return None
        align = ctm == "align_corners"
        if ratio is None or align:
            return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=align).numpy()
        return F.interpolate(x, scale_factor=ratio, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False).numpy()
    return None


def _depthwise(x: torch.Tensor, w: torch.Tensor, b, strides, dilations) -> torch.Tensor:
    """A depthwise conv (x already padded) as k² shifted multiply-adds: torch's float64 grouped
    conv on the CPU is a slow per-group loop."""
    n, c, h, wd = x.shape
    mult = w.shape[0] // c
    if mult > 1:
        x = x.repeat_interleave(mult, dim=1)
    (kh, kw), (sh, sw), (dh, dw) = w.shape[2:], strides, dilations
    ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (wd - (kw - 1) * dw - 1) // sw + 1
    out = torch.zeros(n, w.shape[0], ho, wo, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            out.addcmul_(window, w[:, 0, i, j].view(1, -1, 1, 1))
    return out if b is None else out.add_(b.view(1, -1, 1, 1))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(a, requirements=["C", "W"]))


def _pads(auto_pad, pads, spatial, kernel, strides, dilations) -> list:
    nd = len(spatial)
    if auto_pad in (None, "", "NOTSET"):
        return list(pads) if pads is not None else [0] * (2 * nd)
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _torch_pads(pads: list, nd: int) -> list:
    """ONNX [b1, b2, ..., e1, e2, ...] → torch's (last axis first) [b_n, e_n, ..., b_1, e_1]."""
    out = []
    for i in reversed(range(nd)):
        out += [int(pads[i]), int(pads[i + nd])]
    return out


def _double(t: TensorProto) -> TensorProto:
    return _double_array(onnx.numpy_helper.to_array(t), t.name)


def _double_array(a: np.ndarray, name: str) -> TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(a, dtype=np.float64), name)
