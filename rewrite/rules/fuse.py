"""fuse: dw(+bias)(+act1)(+SE) → pw(+bias)(+act2)(+residual) ⇒ one fused kernel (kernels/).

The rewrite is the identity on the maths — y = act2(pw(act1(dw(x)))) [+ r] — so it is exact
up to summation order; what it buys is that the dw result never goes to device memory and three
to five launches become one. BatchNorm must already be folded into the convs. The fused kernel
covers: depthwise k ∈ {3, 5, 7} square, equal stride 1 or 2, symmetric zero padding, dilation
1, any multiplier; pointwise 1x1 stride 1; activations in FUSABLE_ACTIVATIONS; fp32/fp16/bf16.

A squeeze-excitation between the convs is taken through soundly, because its gate is a
per-image, per-channel scale: pw(a · s[b]) = (pw · diag(s[b])) a. Only s needs all of a (its
spatial mean), so the fused form makes two passes over x — channel means of a (a is never
written), the small excitation MLP on [B, K], then the fused kernel scaling a by s on chip —
and the unfused block's write of a, its re-reads for the mean and the scale, and its write of
a · s all go away.
"""
from __future__ import annotations

import torch

from ..ir import Activation, ConvSpec, FusedSepConv, SqueezeExcite
from .base import Decline, Plan

FUSABLE_ACTIVATIONS = ("relu", "relu6", "silu", "hardswish", "gelu")
FUSABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SE_GATES = ("sigmoid", "hardsigmoid")


def fuse_enabled(options) -> bool:
    """A GPU target (the fused kernel is a Triton kernel), or forced."""
    profile = getattr(options.cost_model, "profile", None)
    return bool(profile is not None and profile.is_gpu) or options.force_fuse


def check_fuse(dw: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, dtype) -> str | None:
    """None when the fused kernel computes this chain, else the reason it cannot."""
    k = dw.kernel_size
    if not dw.is_depthwise:
        return f"first conv is not depthwise ({dw.describe()})"
    if k[0] != k[1] or k[0] not in (3, 5, 7):
        return f"depthwise kernel {k[0]}x{k[1]} is not 3x3, 5x5 or 7x7"
    if dw.stride[0] != dw.stride[1] or dw.stride[0] not in (1, 2):
        return f"depthwise stride {dw.stride} is not 1 or 2 on both axes"
    if dw.dilation != (1, 1):
        return f"dilated depthwise conv ({dw.dilation}) is not fused"
    if len(set(dw.padding)) != 1:
        return f"asymmetric depthwise padding {dw.padding} is not fused"
    if not pw.is_pointwise or pw.stride != (1, 1):
        return f"second conv is not a 1x1 stride-1 conv ({pw.describe()})"
    if pw.in_channels != dw.out_channels:
        return f"channel mismatch: dw gives {dw.out_channels}, pw takes {pw.in_channels}"
    for act in (act1, act2):
        if act is not None and act not in FUSABLE_ACTIVATIONS:
            return f"activation {act} is not fused"
    if dtype not in FUSABLE_DTYPES:
        return f"dtype {dtype} is not fused"
    return None


def check_se(se: SqueezeExcite, channels: int) -> str | None:
    """None when the fused form can take this squeeze-excitation, else the reason."""
    for name, conv, (cin, cout) in (("reduce", se.reduce, (channels, se.reduce.out_channels)),
                                    ("expand", se.expand, (se.reduce.out_channels, channels))):
        if not conv.is_pointwise or conv.stride != (1, 1) or conv.groups != 1 or set(conv.padding) != {0}:
            return f"squeeze-excitation {name} is not a 1x1 dense conv ({conv.describe()})"
        if (conv.in_channels, conv.out_channels) != (cin, cout):
            return f"squeeze-excitation {name} maps {conv.in_channels}->{conv.out_channels}, expected {cin}->{cout}"
    if se.act is not None and se.act not in FUSABLE_ACTIVATIONS:
        return f"squeeze-excitation activation {se.act} is not fused"
    if se.gate not in SE_GATES:
        return f"squeeze-excitation gate {se.gate} is not one of {SE_GATES}"
    return None


MEASURED_ON = "results/gpu/2026-11-25-h100"


def measured_loss(dw: ConvSpec, se, out_hw) -> str | None:
    """Where the fused kernel measured slower than eager channels_last (cuDNN) on an H100, the
    reason; the analytic model, which does not see it, declines these sites (GPU targets only).
    From the first GPU campaign (fp16, batch 64): 8 of 10 squeeze-excitation layers slower
    (0.26-0.81x); 7x7 output maps slower (0.58x at 1024 channels, 0.64x at 960 -> 160); the
    5x5 layer slower (0.83x, and its SE layers 0.45-0.74x); every 3x3 layer at 14x14 or more
    faster or even (1.0-3.5x)."""
    where = f"on an H100 ({MEASURED_ON})"
    if se is not None:
        return f"the fused squeeze-excitation form measured slower than eager at 8 of 10 SE layers {where}"
    if out_hw[0] * out_hw[1] <= 49:
        return f"fused at a {out_hw[0]}x{out_hw[1]} output map measured slower than eager {where}"
    if dw.kernel_size[0] >= 5:
        return f"the fused {dw.kernel_size[0]}x{dw.kernel_size[1]} depthwise kernel measured slower than eager {where}"
    return None


def plan_fuse(dw: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, residual: bool,
              input_shape, dtype, options, se: SqueezeExcite | None = None) -> Plan | Decline:
    convs = [dw] + ([Activation(act1)] if act1 else []) + [pw] + ([Activation(act2)] if act2 else [])
    before = convs[:1 + bool(act1)] + ([se] if se else []) + convs[1 + bool(act1):]
    reason = check_fuse(dw, act1, pw, act2, dtype) or (check_se(se, dw.out_channels) if se else None)
    if reason:
        return Decline("fuse", reason, before)
    fused = FusedSepConv(dw, act1, pw, act2, residual, se)
    model = options.cost_model
    oh, ow = dw.output_hw(input_shape[2], input_shape[3])
    loss = None if options.measured or options.force_fuse else measured_loss(dw, se, (oh, ow))
    if loss:
        return Decline("fuse", f"{loss}; optimize the model on its GPU to time it there, or force_fuse=True", before)
    unfused = model.chain_time(convs, input_shape, dtype)
    if residual:
        unfused += model.elementwise_time((input_shape[0], pw.out_channels, oh, ow), dtype, tensors=3)
    if se:  # the unfused SE: mean (reads a), four tiny layers, a · s (reads a, writes it)
        a_shape = (input_shape[0], dw.out_channels, oh, ow)
        unfused += model.elementwise_time(a_shape, dtype, tensors=1) + model.elementwise_time(a_shape, dtype)
        unfused += 4 * model.elementwise_time((input_shape[0], dw.out_channels, 1, 1), dtype)
    speedup = unfused / model.chain_time([fused], input_shape, dtype)
    if not options.measured and speedup < options.min_speedup:
        return Decline("fuse", f"cost model predicts the fused kernel at {speedup:.2f}x (< {options.min_speedup:g}x)",
                       before, speedup)
    return Plan("fuse", before, [fused], speedup, note="one fused Triton launch on CUDA (torch fallback on CPU)")
