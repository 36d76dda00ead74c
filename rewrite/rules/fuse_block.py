"""fuse_block: a whole inverted-residual block — 1x1 expand (+act0) → dw (+act1) (+SE (+act)) →
1x1 project (+act2) (+residual) — ⇒ one fused kernel whose expanded tensor never reaches memory.

The rewrite is the identity on the maths,

    y = act2(pw(act_after_gate(act1(dw(act0(expand(x)))) [· se]))) [+ r],

so it is exact up to summation order. It is the block of MobileNetV2/V3, EfficientNet, MNASNet,
FBNet and MobileNetV4's inverted-bottleneck UIB: the expanded tensor h = act0(expand(x)) is 4-6x
the block's width, and unfused it is written by the expansion conv, read and written by its
activation and read by the depthwise conv (or the dw+pw kernel of the fuse rule). The fused
kernel (kernels/block/inverted_residual.py) expands each output tile's depthwise halo on the tensor
cores, so its only traffic is x, the weights and y; the price is the expansion's FLOPs once per
depthwise tap. With a squeeze-excitation it makes two passes over x (the channel sums of the
depthwise output first, then the gated block) and three launches in all.

The matcher is the fuse rule's (fusable.fuse_matches), extended backwards from the depthwise
conv to a 1x1 dense stride-1 conv (and one activation) whose output only the block reads. The
plan weighs three forms by the cost model: the whole block, the dw+pw kernel after a separate expansion (what the fuse
rule makes of the same site when this one declines), and the layers as they are; it keeps the
whole block only where it is predicted fastest. The whole-block kernel has no committed GPU
measurement yet, so without measured decisions (optimize on the GPU) or force_blocks it declines
and the fuse rule takes the dw+pw part as before.
"""
from __future__ import annotations

from ..ir import Activation, ConvSpec, FusedSepConv
from ..view import View
from .base import Decline, Match, Plan, Rule, conv_reason, declined, register
from .fusable import (FUSABLE_ACTIVATIONS, FuseParts, check_fuse, check_se, fuse_matches, fuse_skipped,
                      unfused_layers, unfused_time)

NOT_MEASURED = ("the whole-block kernel has no GPU measurement yet; optimize the model on its GPU to time it "
                "there, or force_blocks=True")


def check_expand(expand: ConvSpec, act0: str | None, dw: ConvSpec) -> str | None:
    """None when the block kernel can take this expansion in front of `dw`, else the reason."""
    if not expand.is_pointwise or expand.groups != 1:
        return f"the conv before the depthwise conv is not a 1x1 dense conv ({expand.describe()})"
    if expand.stride != (1, 1) or set(expand.padding) != {0} or expand.dilation != (1, 1):
        return f"the expansion is not a stride-1 unpadded 1x1 conv ({expand.describe()})"
    if expand.out_channels != dw.in_channels:
        return f"channel mismatch: the expansion gives {expand.out_channels}, dw takes {dw.in_channels}"
    if dw.multiplier != 1:
        return f"the depthwise conv multiplies its channels by {dw.multiplier}; the block kernel takes 1"
    if act0 is not None and act0 not in FUSABLE_ACTIVATIONS:
        return f"activation {act0} after the expansion is not fused"
    return None


def fuse_block_matches(view: View):
    """Every fuse site whose depthwise conv reads a 1x1 expansion (+act0) read by nothing else."""
    for match in fuse_matches(view):
        if match.reason is not None:
            continue                              # the fuse rule reports it
        dw_op = match.ops[0]
        head = _expansion(view, dw_op.inputs[0])
        if head is None:
            continue                              # not a block: the fuse rule's site alone
        ops, expand, act0 = head
        if isinstance(ops, str):
            yield declined("fuse_block", expand, ops, [expand] + match.ops)
            continue
        parts = match.parts
        layers = [expand.conv] + ([Activation(act0)] if act0 else []) + match.layers
        block = FuseParts(parts.dw, parts.act1, parts.se, parts.pw, parts.act2, parts.act_after_gate, expand.conv, act0)
        yield Match("fuse_block", expand.name, ops + match.ops, layers, expand.inputs[0], match.output,
                    residual=match.residual, parts=block, whole=block.fused(match.residual is not None))


def _expansion(view: View, value):
    """(ops, expand op, act0) for value = act0(expand(x)) with each step read once, (reason,
    expand op, None) when a 1x1 conv and activation stand there that cannot be taken, or None when
    they do not. A 1x1 conv straight into the depthwise conv is not a block's expansion (it is
    the previous block's linear projection, which that block's site claims)."""
    act = view.producer(value)
    if act is None or act.kind != "act":
        return None
    act0, op = act.act, view.producer(act.inputs[0])
    if op is None or op.kind != "conv" or op.conv is None or not op.conv.is_pointwise:
        return None
    for v in (op.output, act.output):
        if view.sole_user(v) is None:
            return (f"the expansion's output is also read by {view.describe_readers(v)}; fusing the block "
                    f"would hide it"), op, None
    reason = conv_reason(op)
    if reason:
        return f"expansion: {reason}", op, None
    return [op, act], op, act0


def plan_fuse_block(fused: FusedSepConv, input_shape, dtype, options) -> Plan | Decline:
    """The whole block as one kernel, where the cost model predicts it fastest of the three forms."""
    before = unfused_layers(fused)
    reason = (check_expand(fused.expand, fused.act0, fused.dw)
              or check_fuse(fused.dw, fused.act1, fused.pw, fused.act2, dtype, fused.act_after_gate)
              or (check_se(fused.se, fused.dw.out_channels) if fused.se else None))
    if reason:
        return Decline("fuse_block", reason, before)
    if not (options.measured or options.force_blocks):
        return Decline("fuse_block", NOT_MEASURED, before)
    model = options.cost_model
    whole = model.chain_time([fused], input_shape, dtype)
    unfused = unfused_time(fused, input_shape, dtype, model)
    expansion = [fused.expand] + ([Activation(fused.act0)] if fused.act0 else [])
    hidden = (input_shape[0], fused.expand.out_channels, *input_shape[2:])
    sep = FusedSepConv(fused.dw, fused.act1, fused.pw, fused.act2, fused.residual, fused.se, fused.act_after_gate)
    split = model.chain_time(expansion, input_shape, dtype) + model.chain_time([sep], hidden, dtype)
    speedup = unfused / whole
    if not options.force_blocks and split < whole:
        return Decline("fuse_block", f"cost model predicts the dw+pw kernel after a separate expansion faster "
                       f"({unfused / split:.2f}x against {speedup:.2f}x for the whole block)", before, speedup)
    if not options.measured and speedup < options.min_speedup:
        return Decline("fuse_block", f"cost model predicts the whole-block kernel at {speedup:.2f}x "
                       f"(< {options.min_speedup:g}x)", before, speedup)
    return Plan("fuse_block", before, [fused], speedup,
                note="one whole-block Triton kernel on CUDA (three launches with an SE; torch on CPU)")


RULE = register(Rule(
    "fuse_block", order=45, matches=fuse_block_matches, timed=True, skipped=fuse_skipped,
    plan=lambda match, shape, dtype, options: plan_fuse_block(match.parts.fused(match.residual is not None),
                                                             shape, dtype, options),
    summary="a whole inverted-residual block, 1x1 expand (+act) → dw (+act) (+SE) → 1x1 project (+act) "
            "(+residual), into one Triton kernel",
))
