"""What the fused separable-conv kernels accept, and the dw → pw match the fuse rules share: a
library of the rules (fuse, fuse_block, fuse_mbconv, fold, reverse), not a rule (it registers
nothing).

    FUSABLE_ACTIVATIONS, FUSABLE_DTYPES     the activations and dtypes the kernels compute
    fusable_padding, spatial_reason         the spatial convs they take (kh, kw <= 7, one stride, symmetric padding)
    check_fuse, check_se                    why a dw → pw chain, or a squeeze-excitation, cannot be fused (or None)
    fuse_enabled, fuse_skipped              a GPU target, or force_fuse
    FuseParts, fuse_matches, fuse_match     the matcher: dw (+act1) (+SE (+act)) → pw (+act2) (+residual)
    pointwise_tail                          the fused epilogue after a 1x1 conv: act2, then a residual add
    unfused_layers, unfused_time            the chain a fused record stands for, and its modelled seconds

The figures are kernels/'s own (kernels.activations, kernels.checks), so the rules and the
kernels cannot disagree on what a fused kernel takes.
"""
from __future__ import annotations

from dataclasses import dataclass

from kernels.activations import ACTIVATIONS, SE_GATES
from kernels.checks import DTYPES, MAX_KERNEL, STRIDES

from ..algebra import fold_affine
from ..ir import Activation, ConvSpec, FusedSepConv, SqueezeExcite
from ..view import View
from .base import Match, conv_reason, declined

FUSABLE_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "none")
FUSABLE_DTYPES = DTYPES
# Ops a depthwise → pointwise walk looks through to name what stands between the two convs.
MAX_BETWEEN = 4
NOT_A_GPU = "fuse pass skipped: the target is not a GPU (force_fuse=True fuses anyway)"


@dataclass(eq=False)
class FuseParts:
    """What a fuse match found: y = act2(pw(act_after_gate(act1(dw(x')) [· se]))) [+ residual],
    x' = x, or act0(expand(x)) for a whole inverted-residual block (rules/fuse_block.py)."""

    dw: ConvSpec
    act1: str | None
    se: SqueezeExcite | None
    pw: ConvSpec
    act2: str | None
    act_after_gate: str | None = None
    expand: ConvSpec | None = None
    act0: str | None = None

    def fused(self, residual: bool) -> FusedSepConv:
        return FusedSepConv(self.dw, self.act1, self.pw, self.act2, residual, self.se, self.act_after_gate,
                            self.expand, self.act0)


def fuse_enabled(options) -> bool:
    """A GPU target (the fused kernel is a Triton kernel), or forced."""
    profile = getattr(options.cost_model, "profile", None)
    return bool(profile is not None and profile.is_gpu) or options.force_fuse


def fuse_skipped(options) -> str | None:
    return None if fuse_enabled(options) else NOT_A_GPU


def fusable_padding(padding) -> bool:
    """The fused kernel pads each axis the same on both sides: (top, bottom, left, right) with
    top == bottom and left == right (ph and pw may differ: a 1x5 kernel pads (0, 0, 2, 2))."""
    top, bottom, left, right = padding
    return top == bottom and left == right


def spatial_reason(conv: ConvSpec, what: str) -> str | None:
    """Why the fused kernels cannot take `conv` as their spatial conv, or None: kh x kw up to
    MAX_KERNEL, one stride (1 or 2) for both axes, dilation 1, zero padding symmetric per axis."""
    kh, kw = conv.kernel_size
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        return f"{what} kernel {kh}x{kw} is larger than {MAX_KERNEL}x{MAX_KERNEL} on an axis"
    if conv.stride[0] != conv.stride[1]:
        return f"{what} stride {conv.stride} differs between the axes (the fused kernels take one stride for both)"
    if conv.stride[0] not in STRIDES:
        return f"{what} stride {conv.stride[0]} is not 1 or 2"
    if conv.dilation != (1, 1):
        return f"dilated {what} conv ({conv.dilation}) is not fused"
    if not fusable_padding(conv.padding):
        return f"asymmetric {what} padding {conv.padding} (top, bottom, left, right) is not fused"
    return None


def check_fuse(dw: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, dtype,
               act_after_gate: str | None = None) -> str | None:
    """None when the fused kernel computes this chain, else the reason it cannot."""
    if not dw.is_depthwise:
        return f"first conv is not depthwise ({dw.describe()})"
    reason = spatial_reason(dw, "depthwise")
    if reason:
        return reason
    if pw.is_depthwise and pw.kernel_size != (1, 1):   # GhostNet-V2's 1x5 → 5x1
        return f"another depthwise conv ({pw.describe()}) follows, not a 1x1 stride-1 conv"
    if not pw.is_pointwise or pw.stride != (1, 1):
        return f"second conv is not a 1x1 stride-1 conv ({pw.describe()})"
    if pw.in_channels != dw.out_channels:
        return f"channel mismatch: dw gives {dw.out_channels}, pw takes {pw.in_channels}"
    for act in (act1, act_after_gate, act2):
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


def _match_se(view: View, tip) -> tuple[list, SqueezeExcite] | str:
    """(the SE's ops, mean first and the gating mul last, SqueezeExcite) for
    tip · gate(expand(act(reduce(mean(tip))))), or the reason the product is not one. A gate that
    is an activation of an affine (an affine_act op: Paddle's HardSigmoid(0.2, 0.5) is
    hardsigmoid(1.2·z)) has its affine folded into the expand conv, exactly (rewrite.algebra.fold):
    gate(affine(expand(s))) = gate(expand'(s)), so the SqueezeExcite has the plain gate."""
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
        elif step == "gate" and nxt.kind == "affine_act":     # the gate's affine folds into the expand conv
            if nxt.affine is None or nxt.affine.scale.numel() != convs[1].out_channels:
                return f"squeeze-excitation gate {nxt.describe()} does not act per channel of the expand conv"
            convs[1], gate = fold_affine(convs[1], nxt.affine), nxt.act
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


def _blocker(view: View, value) -> str:
    """Why no pointwise conv directly follows `value`: what stands before the next conv, if any."""
    readers, users = view.readers(value), view.users(value)
    if len(users) > 1 and value not in view.outputs and all(u.kind == "slice" for u in users):
        return (f"the depthwise output is split ({users[0].label}) into {len(users)} parts (MixNet's grouped "
                "pointwise conv); the fused kernel takes one pointwise conv after it")
    if readers > 1:
        return f"the depthwise output has {readers} readers ({view.describe_readers(value)}); fusing would hide it"
    between, op = [], view.sole_user(value)
    while op is not None and op.kind != "conv" and len(between) < MAX_BETWEEN:
        between.append(op)
        op = view.sole_user(op.output)
    if op is not None and op.kind == "conv" and between:
        blocker = next((o for o in between if o.kind != "layout"), between[0])
        return f"{blocker.describe()} between the depthwise and pointwise convs blocks the fusion"
    return f"no pointwise conv follows (the depthwise output goes to {view.describe_readers(value)})"


def fuse_matches(view: View):
    """Every depthwise conv: dw (+act1) (+SE (+act)) → pw (+act2) (+ residual), or why not."""
    for op in view.ops:
        if op.kind != "conv" or op.conv is None or not op.conv.is_depthwise or op.layout != "nchw":
            continue
        if op.reason:
            yield declined("fuse", op, op.reason)
            continue
        yield fuse_match(view, op)


def fuse_match(view: View, dw) -> Match:
    ops, tip = [dw], dw.output
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "affine":
        return declined("fuse", dw, f"{nxt.label} after the depthwise conv is not folded")
    act1 = act_after_gate = None
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
        nxt = view.sole_user(tip)
        if nxt is not None and nxt.kind == "act":   # ReXNet: relu6 of the gated product
            act_after_gate, tip = nxt.act, nxt.output
            ops.append(nxt)
    pw = view.sole_user(tip)
    if pw is None or pw.kind != "conv":
        return declined("fuse", dw, _blocker(view, tip))
    reason = conv_reason(pw)
    if reason:
        what = "pointwise conv" if pw.conv is None or pw.conv.kernel_size == (1, 1) else "next conv"
        return declined("fuse", dw, f"{what}: {reason}")
    tail, act2, residual, tip = pointwise_tail(view, pw)
    layers = [dw.conv] + ([Activation(act1)] if act1 else []) + [pw.conv] + ([Activation(act2)] if act2 else [])
    parts = FuseParts(dw.conv, act1, se, pw.conv, act2, act_after_gate)
    return Match("fuse", dw.name, ops + tail, layers, dw.inputs[0], tip, residual=residual, parts=parts,
                 whole=parts.fused(residual is not None))


def pointwise_tail(view: View, pw) -> tuple:
    """(ops, act2, residual, tip) of the fused epilogue after the pointwise conv op `pw`: an
    activation the kernels have (one the kernel lacks stays outside), then an add of a value of
    the same shape (the residual); tip is the value the fused site produces."""
    ops, tip, act2, residual = [pw], pw.output, None, None
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "act" and nxt.act in FUSABLE_ACTIVATIONS:
        act2, tip = nxt.act, nxt.output
        ops.append(nxt)
    add = view.sole_user(tip)
    if add is not None and add.kind == "add" and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] == tip else add.inputs[0]
        shape = view.shape(tip)
        if other != tip and shape is not None and view.shape(other) == shape:
            residual = other
            ops.append(add)
            tip = add.output
    return ops, act2, residual, tip


def unfused_layers(fused: FusedSepConv) -> list:
    """The chain `fused` stands for, layer by layer (the SE as one record)."""
    def act(name):
        return [Activation(name)] if name else []
    head = [fused.expand] + act(fused.act0) if fused.expand is not None else []
    return (head + [fused.dw] + act(fused.act1) + ([fused.se] if fused.se else []) + act(fused.act_after_gate)
            + [fused.pw] + act(fused.act2))


def unfused_time(fused: FusedSepConv, input_shape, dtype, model) -> float:
    """The cost model's seconds for the layers `fused` replaces, run one by one (the SE as its
    mean, four tiny layers and the scale; the residual as one add)."""
    seconds = model.chain_time([layer for layer in unfused_layers(fused) if not isinstance(layer, SqueezeExcite)],
                               input_shape, dtype)
    b, (oh, ow) = input_shape[0], fused.dw.output_hw(input_shape[2], input_shape[3])
    if fused.residual:
        seconds += model.elementwise_time((b, fused.pw.out_channels, oh, ow), dtype, tensors=3)
    if fused.se:  # mean (reads a), four tiny layers, a · s (reads a, writes it)
        a_shape = (b, fused.dw.out_channels, oh, ow)
        seconds += model.elementwise_time(a_shape, dtype, tensors=1) + model.elementwise_time(a_shape, dtype)
        seconds += 4 * model.elementwise_time((b, fused.dw.out_channels, 1, 1), dtype)
    return seconds
