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

from dataclasses import dataclass

from kernels.activations import ACTIVATIONS, SE_GATES
from kernels.checks import DTYPES, KERNEL_SIZES, STRIDES

from ..ir import Activation, ConvSpec, FusedSepConv, SqueezeExcite
from ..view import View
from .base import Decline, Match, Plan, Rule, conv_reason, declined, register

FUSABLE_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "none")
FUSABLE_DTYPES = DTYPES
# Ops a depthwise → pointwise walk looks through to name what stands between the two convs.
MAX_BETWEEN = 4
NOT_A_GPU = "fuse pass skipped: the target is not a GPU (force_fuse=True fuses anyway)"


@dataclass(eq=False)
class FuseParts:
    """What a fuse match found: y = act2(pw(act1(dw(x)) [· se])) [+ residual]."""

    dw: ConvSpec
    act1: str | None
    se: SqueezeExcite | None
    pw: ConvSpec
    act2: str | None

    def fused(self, residual: bool) -> FusedSepConv:
        return FusedSepConv(self.dw, self.act1, self.pw, self.act2, residual, self.se)


def fuse_enabled(options) -> bool:
    """A GPU target (the fused kernel is a Triton kernel), or forced."""
    profile = getattr(options.cost_model, "profile", None)
    return bool(profile is not None and profile.is_gpu) or options.force_fuse


def fuse_skipped(options) -> str | None:
    return None if fuse_enabled(options) else NOT_A_GPU


def check_fuse(dw: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, dtype) -> str | None:
    """None when the fused kernel computes this chain, else the reason it cannot."""
    k = dw.kernel_size
    if not dw.is_depthwise:
        return f"first conv is not depthwise ({dw.describe()})"
    if k[0] != k[1] or k[0] not in KERNEL_SIZES:
        sizes = [f"{n}x{n}" for n in KERNEL_SIZES]
        return f"depthwise kernel {k[0]}x{k[1]} is not {', '.join(sizes[:-1])} or {sizes[-1]}"
    if dw.stride[0] != dw.stride[1] or dw.stride[0] not in STRIDES:
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


def _match_se(view: View, tip) -> tuple[list, SqueezeExcite] | str:
    """(the SE's ops, mean first and the gating mul last, SqueezeExcite) for
    tip · gate(expand(act(reduce(mean(tip))))), or the reason the product is not one."""
    users = view.users(tip)
    mul = next((u for u in users if u.kind == "mul"), None)
    mean = next((u for u in users if u.kind == "mean"), None)
    if len(users) != 2 or mul is None or mean is None or tip in view.outputs:
        return "a product between the depthwise and pointwise convs that is not a squeeze-excitation"
    ops, convs, act, gate = [mean], [], None, None
    for step in ("reduce", "act", "expand", "gate"):
        nxt = view.sole_user(ops[-1].output)
        if nxt is None:
            return f"squeeze-excitation {step} has no single next layer"
        if step in ("reduce", "expand"):
            if nxt.kind != "conv" or conv_reason(nxt):
                return f"squeeze-excitation {step} is not a rewritable conv ({conv_reason(nxt) or nxt.label})"
            convs.append(nxt.conv)
        elif nxt.kind != "act":
            if step == "act":
                continue            # a linear excitation: reduce feeds expand directly
            return f"squeeze-excitation gate is not a known activation ({nxt.label})"
        elif step == "act":
            act = nxt.act
        else:
            gate = nxt.act
        ops.append(nxt)
    if view.sole_user(ops[-1].output) is not mul or set(mul.inputs) != {tip, ops[-1].output}:
        return "squeeze-excitation gate does not scale the depthwise output alone"
    return ops + [mul], SqueezeExcite(convs[0], act, convs[1], gate)


def _blocker(view: View, value, after_se: bool) -> str:
    """Why no pointwise conv directly follows `value`: what stands before the next conv, if any."""
    readers = view.readers(value)
    if readers > 1:
        return f"the depthwise output has {readers} readers ({view.describe_readers(value)}); fusing would hide it"
    between, op = [], view.sole_user(value)
    while op is not None and op.kind != "conv" and len(between) < MAX_BETWEEN:
        between.append(op)
        op = view.sole_user(op.output)
    if op is not None and op.kind == "conv" and between:
        blocker = next((o for o in between if o.kind != "layout"), between[0])
        if blocker.kind == "act" and after_se:
            return (f"{blocker.act} after the squeeze-excitation blocks the fusion (the fused kernel applies "
                    "its activation before the gate)")
        return f"{blocker.describe()} between the depthwise and pointwise convs blocks the fusion"
    return f"no pointwise conv follows (the depthwise output goes to {view.describe_readers(value)})"


def fuse_matches(view: View):
    """Every depthwise conv: dw (+act1) (+SE) → pw (+act2) (+ residual), or why not."""
    for op in view.ops:
        if op.kind != "conv" or op.conv is None or not op.conv.is_depthwise or op.layout != "nchw":
            continue
        if op.reason:
            yield declined("fuse", op, op.reason)
            continue
        yield _fuse_match(view, op)


def _fuse_match(view: View, dw) -> Match:
    ops, tip = [dw], dw.output
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "affine":
        return declined("fuse", dw, f"{nxt.label} after the depthwise conv is not folded")
    act1 = None
    if nxt is not None and nxt.kind == "act":
        act1, tip = nxt.act, nxt.output
        ops.append(nxt)
    se = None
    if any(u.kind == "mul" for u in view.users(tip)):
        found = _match_se(view, tip)
        if isinstance(found, str):
            return declined("fuse", dw, f"{found} blocks the fusion")
        se_ops, se = found
        ops.extend(se_ops)
        tip = se_ops[-1].output
    pw = view.sole_user(tip)
    if pw is None or pw.kind != "conv":
        return declined("fuse", dw, _blocker(view, tip, se is not None))
    reason = conv_reason(pw)
    if reason:
        what = "pointwise conv" if pw.conv is None or pw.conv.kernel_size == (1, 1) else "next conv"
        return declined("fuse", dw, f"{what}: {reason}")
    ops.append(pw)
    tip = pw.output
    act2 = None
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "act" and nxt.act in FUSABLE_ACTIVATIONS:
        act2, tip = nxt.act, nxt.output     # an activation the kernel lacks stays outside the group
        ops.append(nxt)
    residual = None
    add = view.sole_user(tip)
    if add is not None and add.kind == "add" and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] == tip else add.inputs[0]
        shape = view.shape(tip)
        if other != tip and shape is not None and view.shape(other) == shape:
            residual = other
            ops.append(add)
            tip = add.output
    layers = [dw.conv] + ([Activation(act1)] if act1 else []) + [pw.conv] + ([Activation(act2)] if act2 else [])
    return Match("fuse", dw.name, ops, layers, dw.inputs[0], tip, residual=residual,
                 parts=FuseParts(dw.conv, act1, se, pw.conv, act2))


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


def _plan_match(match: Match, shape, dtype, options) -> Plan | Decline:
    f = match.parts
    return plan_fuse(f.dw, f.act1, f.pw, f.act2, match.residual is not None, shape, dtype, options, f.se)


RULE = register(Rule(
    "fuse", order=50, matches=fuse_matches, plan=_plan_match, timed=True, skipped=fuse_skipped,
    summary="depthwise (+act) (+squeeze-excitation) → pointwise (+act) (+residual) into one Triton kernel",
))
