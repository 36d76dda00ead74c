"""fuse_mbconv: a Fused-MBConv block — dense kh x kw conv (+act1) → 1x1 project (+act2) (+residual)
— ⇒ one fused kernel whose expanded tensor never reaches memory.

The rewrite is the identity on the maths,

    y = act2(pw(act1(conv(x)))) [+ r],

so it is exact up to summation order. It is EfficientNetV2's early stages and MobileNetV4's
FusedIB (a 3x3 conv expanding C → 4C, then a 1x1 back to N), and any dense conv → 1x1 pair of the
same form (a ResNet bottleneck's 3x3 → 1x1). Unfused, the expanded tensor is written by the conv,
read and written by its activation and read by the 1x1 conv; the fused kernel
(kernels/block/fused_mbconv.py) runs the conv as an implicit GEMM per output tile, applies act1 on
chip and accumulates the projection chunk by chunk of hidden channels, so its only traffic is x,
the weights and y, for the same FLOPs.

Only a dense conv followed by a 1x1 conv (through at most one activation) is a site; other dense
convs are not reported. The kernel takes kernels up to 7x7, stride 1 or 2 on both axes, zero
padding symmetric per axis, dilation 1. Like the whole-block kernel it has no committed GPU
measurement yet: without measured decisions (optimize on the GPU) or force_blocks it declines.
"""
from __future__ import annotations

from ..ir import Activation, ConvSpec, FusedMBConv
from ..view import View
from .base import Decline, Match, Plan, Rule, conv_reason, register
from .fusable import FUSABLE_ACTIVATIONS, FUSABLE_DTYPES, fuse_skipped, pointwise_tail, spatial_reason

NOT_MEASURED = ("the Fused-MBConv kernel has no GPU measurement yet; optimize the model on its GPU to time it "
                "there, or force_blocks=True")


def check_mbconv(conv: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, dtype) -> str | None:
    """None when the Fused-MBConv kernel computes this chain, else the reason it cannot."""
    if conv.groups != 1:
        return f"the first conv is grouped ({conv.describe()})"
    reason = spatial_reason(conv, "conv")
    if reason:
        return reason
    if not pw.is_pointwise or pw.stride != (1, 1) or pw.groups != 1:
        return f"second conv is not a 1x1 stride-1 dense conv ({pw.describe()})"
    if pw.in_channels != conv.out_channels:
        return f"channel mismatch: the conv gives {conv.out_channels}, pw takes {pw.in_channels}"
    for act in (act1, act2):
        if act is not None and act not in FUSABLE_ACTIVATIONS:
            return f"activation {act} is not fused"
    if dtype not in FUSABLE_DTYPES:
        return f"dtype {dtype} is not fused"
    return None


def fuse_mbconv_matches(view: View):
    """Every dense kh x kw conv (not 1x1) → (act) → 1x1 conv, each step read once."""
    for op in view.ops:
        if op.kind != "conv" or op.conv is None or op.layout != "nchw" or conv_reason(op):
            continue
        if op.conv.groups != 1 or op.conv.kernel_size == (1, 1):
            continue
        ops, act1, nxt = [op], None, view.sole_user(op.output)
        if nxt is not None and nxt.kind == "act":
            ops, act1, nxt = ops + [nxt], nxt.act, view.sole_user(nxt.output)
        if nxt is None or nxt.kind != "conv" or conv_reason(nxt) or nxt.conv is None or not nxt.conv.is_pointwise:
            continue
        tail, act2, residual, tip = pointwise_tail(view, nxt)
        layers = [op.conv] + ([Activation(act1)] if act1 else []) + [nxt.conv] + ([Activation(act2)] if act2 else [])
        fused = FusedMBConv(op.conv, act1, nxt.conv, act2, residual is not None)
        yield Match("fuse_mbconv", op.name, ops + tail, layers, op.inputs[0], tip, residual=residual, parts=fused,
                    whole=fused)


def plan_fuse_mbconv(fused: FusedMBConv, input_shape, dtype, options) -> Plan | Decline:
    act = lambda name: [Activation(name)] if name else []  # noqa: E731
    before = [fused.conv] + act(fused.act1) + [fused.pw] + act(fused.act2)
    reason = check_mbconv(fused.conv, fused.act1, fused.pw, fused.act2, dtype)
    if reason:
        return Decline("fuse_mbconv", reason, before)
    if not (options.measured or options.force_blocks):
        return Decline("fuse_mbconv", NOT_MEASURED, before)
    model = options.cost_model
    unfused = model.chain_time(before, input_shape, dtype)
    if fused.residual:
        oh, ow = fused.conv.output_hw(input_shape[2], input_shape[3])
        unfused += model.elementwise_time((input_shape[0], fused.pw.out_channels, oh, ow), dtype, tensors=3)
    speedup = unfused / model.chain_time([fused], input_shape, dtype)
    if not options.measured and speedup < options.min_speedup:
        return Decline("fuse_mbconv", f"cost model predicts the Fused-MBConv kernel at {speedup:.2f}x "
                       f"(< {options.min_speedup:g}x)", before, speedup)
    return Plan("fuse_mbconv", before, [fused], speedup, note="one fused Triton launch on CUDA (torch on CPU)")


RULE = register(Rule(
    "fuse_mbconv", order=46, matches=fuse_mbconv_matches, timed=True, skipped=fuse_skipped,
    plan=lambda match, shape, dtype, options: plan_fuse_mbconv(match.parts, shape, dtype, options),
    summary="a Fused-MBConv block, dense conv (+act) → 1x1 project (+act) (+residual), into one Triton kernel",
))
