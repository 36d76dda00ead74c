"""merge_mixed_dw: a mixed depthwise conv — x's channels split into consecutive parts, one
depthwise conv per part (each with its own kernel size), their outputs concatenated — ⇒ one
depthwise conv whose kernel embeds each part's kernel in zeros, placed so that it reads the same
pixels:

    cat(dw_1(x[:, S_1]), …, dw_k(x[:, S_k])) = dw(x),   top = max_i top_i,
    W[c_i + j, 0, top − top_i + u, left − left_i + v] = W_i[j, 0, u, v],   b = cat(b_i)

(rewrite.algebra.mixed, which derives the kernel size and the padding on the other sides). Sites:
MixNet's mixed convs (torch.split → dw3x3 | dw5x5 | dw7x7 | dw9x9 → cat, the BatchNorm after the
cat already folded into the convs by fold_concat), with a zero pad between a part and its conv
(TF "same" padding at stride 2) absorbed into that branch first. The split goes with the site,
so every part must feed its conv alone.

The merged conv does more multiply-adds than the branches (the smaller kernels' zero taps), but
it is one launch where there were k, with no split views and no concat copy, and a pointwise conv
after it can then be fused with it (the fuse pass; a merged kernel over 7x7 is not fused). It is
planned on the cost model's prediction — the branch convs and the concat's copy against the one
conv — and timed where the model runs (Rule.timed). Declined where a branch is not a depthwise
conv on a part of the split (MixNet's grouped pointwise convs: one 1x1 conv per part), where a
part, a pad or a branch's output is also read elsewhere, where the parts do not cover the input's
channels in order, or where the branches differ in stride, multiplier or how they pad.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..algebra import absorb_pad, check_merge_mixed_dw, merge_mixed_dw
from ..ir import MixedConv
from ..view import Op, View
from .base import Decline, Match, Plan, Rule, common_name, conv_reason, register

KIND = "merge_mixed_dw"


@dataclass(eq=False)
class Branch:
    """One input of the concat walked back: its part of the split, a zero pad, its conv."""

    ops: list                  # [part, pad?, conv]: what the branch reads, in order
    part: Op | None            # the slice it reads (None when it reads something else)
    conv: Op | None
    why: str | None            # why this branch cannot be merged, or None


def _branch(view: View, value, i: int, cat: Op) -> Branch:
    conv = view.producer(value)
    if conv is None or conv.kind != "conv":
        what = conv.describe() if conv is not None else "an input of the graph"
        return Branch([], None, None, f"branch {i} of the {cat.label} is {what}, not a conv on a part of the split")
    ops, src = [conv], conv.inputs[0]
    pad = view.producer(src)
    if pad is not None and pad.kind == "pad":
        ops.insert(0, pad)
        src = pad.inputs[0]
    part = view.producer(src)
    if part is None or part.kind != "slice":
        what = part.describe() if part is not None else "an input of the graph"
        return Branch(ops, None, conv, f"the {conv.describe()} of branch {i} reads {what}, not a part of the split")
    return Branch([part, *ops], part, conv, None)


def _reason(view: View, cat: Op, branches: list, inside: set) -> str | None:
    """Why the mixed conv at `cat` cannot be merged by its view alone, or None."""
    for i, b in enumerate(branches, 1):
        if b.why:
            return b.why
        reason = conv_reason(b.conv)
        if reason:
            return f"the conv of branch {i}: {reason}"
        pad = b.ops[1] if b.ops[1].kind == "pad" else None
        if pad is not None and pad.reason:
            return f"the pad of branch {i}: {pad.reason}"
        for op in b.ops:
            if view.readers(op.output) > 1:
                what = f"part [{op.channels[0]}:{op.channels[1]}] ({op.label})" if op.kind == "slice" else op.describe()
                return f"the {what} of branch {i} also feeds {view.describe_readers(op.output)}; merging would hide it"
    x = branches[0].part.inputs[0]
    if any(b.part.inputs[0] != x for b in branches):
        return "the branches read parts of different values"
    ranges = [b.part.channels for b in branches]
    shape = view.shape(x)
    channels = shape[1] if shape is not None and len(shape) == 4 else None
    bounds = [0] + [stop for _, stop in ranges]
    if channels is None or [start for start, _ in ranges] != bounds[:-1] or bounds[-1] != channels:
        of = f"the {channels} channels" if channels is not None else "the channels"
        spans = ", ".join(f"[{a}:{b}]" for a, b in ranges)
        return f"the parts {spans} the branches read do not cover {of} of their input in order"
    for branch in branches:
        outside = [op for op in view.siblings(branch.part) if id(op) not in inside]
        if outside:
            (start, stop), readers = outside[0].channels, view.describe_readers(outside[0].output)
            return (f"the part [{start}:{stop}] of the {branch.part.label} is also read by {readers}, outside the "
                    "mixed conv; the split cannot go with it")
    return None


def merge_mixed_dw_matches(view: View):
    """Every concat along the channels of convs each reading a part of a split (one site per
    concat where at least one branch is a conv on a part)."""
    for cat in view.ops:
        if cat.kind != "concat" or cat.axis != 1 or len(cat.inputs) < 2:
            continue
        branches = [_branch(view, v, i, cat) for i, v in enumerate(cat.inputs, 1)]
        if not any(b.part is not None for b in branches):
            continue           # not a split's parts (an Inception-style concat, ShuffleNet's): not a site
        ops = [op for b in branches for op in b.ops] + [cat]
        convs = [b.conv for b in branches if b.conv is not None]
        name = common_name([op.name for op in convs])
        reason = _reason(view, cat, branches, {id(op) for op in ops})
        if reason:
            yield Match(KIND, name, ops, reason=reason)
            continue
        layers = [MixedConv(tuple(_absorbed(b) for b in branches))]
        yield Match(KIND, name, ops, layers, branches[0].part.inputs[0], cat.output)


def _absorbed(branch: Branch):
    """The branch's conv with its zero pad absorbed (conv(pad(x, p), q) = conv(x, p + q))."""
    pad = branch.ops[1] if branch.ops[1].kind == "pad" else None
    return absorb_pad(pad.pad, branch.conv.conv) if pad is not None else branch.conv.conv


def plan_merge_mixed_dw(mixed: MixedConv, input_shape, dtype, options) -> Plan | Decline:
    reason = check_merge_mixed_dw(mixed.convs)
    if reason:
        return Decline(KIND, reason, [mixed])
    merged = merge_mixed_dw(mixed.convs)
    model = options.cost_model
    b, _, h, w = input_shape
    oh, ow = merged.output_hw(h, w)
    before = sum(model.chain_time([conv], (b, conv.in_channels, h, w), dtype) for conv in mixed.convs)
    before += model.elementwise_time((b, merged.out_channels, oh, ow), dtype)      # the concat's copy
    before += model.elementwise_time(input_shape, dtype)     # the split's: onnxruntime's Split copies its parts,
    # and a channel slice of an NCHW batch is not contiguous, which a conv copies before it runs
    speedup = before / model.chain_time([merged], input_shape, dtype)
    kernels = "/".join(f"{c.kernel_size[0]}x{c.kernel_size[1]}" for c in mixed.convs)
    kh, kw = merged.kernel_size
    if not options.measured and speedup < options.min_speedup:
        return Decline(KIND, f"cost model predicts the merged {kh}x{kw} depthwise conv at {speedup:.2f}x against "
                       f"the {len(mixed.convs)} branches ({kernels}) and the concat (< {options.min_speedup:g}x)",
                       [mixed], speedup)
    note = f"merged {len(mixed.convs)} depthwise convs ({kernels}) into one {kh}x{kw} depthwise conv"
    return Plan(KIND, [mixed], [merged], speedup, note=note)


RULE = register(Rule(
    KIND, order=25, matches=merge_mixed_dw_matches, timed=True,
    plan=lambda match, shape, dtype, options: plan_merge_mixed_dw(match.layers[0], shape, dtype, options),
    summary="a split → one depthwise conv per part → concat (MixNet's mixed convs) into one depthwise conv",
))
