"""merge (structural reparameterization): parallel linear branches summed ⇒ one conv.

y = Σ_i A_i(conv_i(x)) [+ a_0·BN_0(x)] [+ a_x·x] [+ t]  =  conv(x; Σ_i embed(W_i'), Σ_i b_i' + t)
with each branch's affines and coefficient folded into its conv first (rewrite.algebra.merge).
MobileOne, RepVGG, RepViT, FastViT and RepGhost train such branches and sum them at inference.
The merged conv replaces n convs, n−1 adds and the BatchNorms, so it is applied wherever the
branches line up, unless the merge would have to densify a grouped branch (branches with
different groups) and the cost model predicts the denser conv slower than the branches.
Where the merged conv has the weight shape and groups of one of the branch convs, it costs
exactly what that branch did and everything else goes: such a merge only removes work and, like
a fold, is applied without timing (Plan.removes_work).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algebra import absorb_pad
from ..algebra.fold import fold_affine
from ..algebra.merge import branch_conv, check_merge, merge_convs
from ..ir import Affine, ParallelBranches
from ..view import Op, View
from .base import Decline, Match, Plan, Rule, common_name, conv_reason, register

COMBINERS = ("add", "sub")


@dataclass(eq=False)
class Branch:
    """One summed term walked back to where it starts: y_term = coef · chain(start)."""

    start: object               # the value the branch reads (x, where the merge applies)
    ops: list                   # its ops, in order (a pad, a conv, affines)
    layers: list                # the same in IR, the pad absorbed into the conv
    why: str | None             # why the walk stopped before reaching a shared input, or None
    coef: object = None         # None (1), a sign, or a float64 per-channel scale


@dataclass(eq=False)
class SumSite:
    """A sum tree: the shared input x, the branches reading it, the others, the combiners, a shift."""

    x: object
    mine: list
    foreign: list
    combiners: list
    shift: object


def _distributes(view: View, op: Op | None) -> bool:
    """op is a constant affine applied to a partial sum that only it reads: s·(a ± b) + t."""
    if op is None or op.kind != "affine" or op.affine is None or op.affine.axis != 1:
        return False
    inner = view.producer(op.inputs[0])
    return inner is not None and inner.kind in COMBINERS and view.sole_user(inner.output) is op


def _is_sum_root(view: View, op: Op) -> bool:
    """An add/sub not itself summed further up (through constant affines)."""
    parent = view.sole_user(op.output)
    while _distributes(view, parent):
        parent = view.sole_user(parent.output)
    return parent is None or parent.kind not in COMBINERS


def _sum_terms(view: View, root: Op):
    """(terms [(value, coefficient or None)], combiner and affine ops, constant shift or None) of
    the sum tree under `root`: y = Σ c_k · term_k + shift."""
    terms, ops, shift = [], [], None

    def walk(value, coef, top):
        nonlocal shift
        op = view.producer(value)
        inner = top or view.sole_user(value) is not None
        if inner and op is not None and op.kind in COMBINERS and len(op.inputs) == 2 and \
                view.shape(op.inputs[0]) is not None and view.shape(op.inputs[0]) == view.shape(op.inputs[1]):
            ops.append(op)
            walk(op.inputs[0], coef, False)
            walk(op.inputs[1], (-1.0 if coef is None else -coef) if op.kind == "sub" else coef, False)
            # coefficients: None (1), -1.0, or a float64 per-channel tensor
        elif inner and not top and _distributes(view, op):
            ops.append(op)
            scale, t = op.affine.scale.double(), op.affine.shift.double()
            t = t if coef is None else torch.as_tensor(coef, dtype=torch.float64) * t
            shift = t if shift is None else shift + t
            walk(op.inputs[0], scale if coef is None else torch.as_tensor(coef, dtype=torch.float64) * scale, False)
        else:
            terms.append((value, coef))

    walk(root.output, None, True)
    return terms, ops, shift


def _linear_step(view: View, value):
    """(the op producing `value` if it is a liftable affine or conv, the value it reads) or None."""
    op = view.producer(value)
    if op is None or not ((op.kind == "affine" and op.affine is not None and op.affine.axis == 1) or
                          (op.kind == "conv" and conv_reason(op) is None)):
        return None
    return op, op.inputs[0]


def _branch(view: View, value, coef=None, stop_at=frozenset()) -> Branch:
    """Walk a summed term back through affines and at most one conv (with a zero pad before it),
    each read by this branch alone.

    Where a value on the way has other readers, the walk stops there; if it would otherwise have
    reached one of `stop_at` (where the other branches start) through linear ops, it starts
    there instead, and `why` says which readers stopped it."""
    ops, layers, why = [], [], None
    while True:
        op = view.producer(value)
        if op is None:
            break
        if view.sole_user(value) is None:
            probe, seen = value, 0
            while probe not in stop_at and seen < 3 and _linear_step(view, probe) is not None:
                probe, seen = _linear_step(view, probe)[1], seen + 1
            if probe in stop_at and probe != value:
                why = f"a branch's output also feeds {view.describe_readers(value)}; merging would hide it"
                value = probe
            break
        if op.kind == "affine" and op.affine is not None and op.affine.axis == 1:
            ops.insert(0, op)
            layers.insert(0, op.affine)
            value = op.inputs[0]
            continue
        if op.kind == "conv" and conv_reason(op) is None:
            ops.insert(0, op)
            conv, value = op.conv, op.inputs[0]
            pad = view.producer(value)
            if pad is not None and pad.kind == "pad" and pad.pad is not None and view.sole_user(value) is op:
                ops.insert(0, pad)        # a TF "same" pad belongs to its branch
                conv, value = absorb_pad(pad.pad, conv), pad.inputs[0]
            layers.insert(0, conv)
        else:
            why = conv_reason(op) if op.kind == "conv" else op.reason if op.kind == "affine" else \
                f"{op.describe()} stands between a branch and the shared input"
        break
    return Branch(value, ops, layers, why, coef)


def _sum_site(view: View, root: Op) -> SumSite | None:
    """The sum at `root`, or None when fewer than two summed branches read one value or none of
    them has a conv."""
    terms, combiners, shift = _sum_terms(view, root)
    first = [_branch(view, value).start for value, _ in terms]
    others = [frozenset(s for j, s in enumerate(first) if j != i) for i in range(len(first))]
    branches = [_branch(view, value, coef, others[i]) for i, (value, coef) in enumerate(terms)]
    starts = [b.start for b in branches]
    x = max(dict.fromkeys(starts), key=starts.count)
    at_x = [b for b in branches if b.start == x]
    if len(at_x) < 2 or not any(b.why or any(op.kind == "conv" for op in b.ops) for b in at_x):
        return None                     # a plain residual add, or no conv to merge into
    mine = [b for b in at_x if b.why is None]
    foreign = sorted((b for b in branches if b.start != x or b.why is not None), key=lambda b: b.start != x)
    return SumSite(x, mine, foreign, combiners, shift)


def merge_matches(view: View):
    """Every sum (a tree of add / sub, through constant scales) of ≥ 2 linear branches of one x.
    When the sum also adds something else (a block's residual), its largest sub-sum of x's
    branches alone is merged instead."""
    used = set()
    for root in view.ops:
        if root.kind not in COMBINERS or not _is_sum_root(view, root):
            continue
        site = _sum_site(view, root)
        if site is None:
            continue
        if site.foreign:
            inner = (_sum_site(view, op) for op in site.combiners[1:] if op.kind in COMBINERS)
            site = next((s for s in inner if s is not None and not s.foreign), site)
        names = [op.name for b in site.mine for op in b.ops if op.kind == "conv"] or [site.combiners[0].name]
        name = common_name(names)
        name = name if name not in used else names[0]
        used.add(name)
        all_ops = [op for b in site.mine for op in b.ops] + site.combiners[::-1]
        if site.foreign:
            first = site.foreign[0]
            producer = view.producer(first.start)
            reason = first.why or f"{producer.describe() if producer else 'a graph input'} stands between a " \
                "branch and the shared input"
            yield Match("merge", name, all_ops or [root], reason=reason)
            continue
        channels = view.shape(site.combiners[0].inputs[0])[1]
        parallel = ParallelBranches(tuple(tuple(b.layers) + _coefficient(b.coef, channels) for b in site.mine),
                                    site.shift)
        yield Match("merge", name, all_ops, [parallel], site.x, site.combiners[0].output)


def _coefficient(coef, channels: int) -> tuple:
    """A term's coefficient (None = 1, a scalar sign, a per-channel scale) as a trailing Affine."""
    if coef is None:
        return ()
    scale = torch.as_tensor(coef, dtype=torch.float64)
    scale = scale.expand(channels).clone() if scale.dim() == 0 else scale.reshape(-1)
    return (Affine(scale, torch.zeros_like(scale)),)


def plan_merge(parallel: ParallelBranches, input_shape, dtype, options) -> Plan | Decline:
    channels = input_shape[1]
    try:
        convs = [branch_conv(branch, channels, dtype) for branch in parallel.branches]
    except ValueError as exc:
        return Decline("merge", str(exc), [parallel])
    reason = check_merge(convs)
    if reason:
        return Decline("merge", reason, [parallel])
    merged = merge_convs(convs)
    if parallel.shift is not None:
        shift = parallel.shift.double()
        merged = fold_affine(merged, Affine(torch.ones_like(shift), shift))
    model = options.cost_model
    b, _, h, w = input_shape
    oh, ow = merged.output_hw(h, w)
    before = sum(model.chain_time(list(branch), input_shape, dtype) for branch in parallel.branches if branch)
    before += (len(parallel.branches) - 1) * model.elementwise_time((b, merged.out_channels, oh, ow), dtype, 3)
    speedup = before / model.chain_time([merged], input_shape, dtype)
    if not options.measured and speedup < 1.0:
        return Decline("merge", f"cost model predicts the merged {merged.describe()} at {speedup:.2f}x against the "
                       "separate branches (their groups differ, so merging densifies)", [parallel], speedup)
    kernels = sorted({f"{c.kernel_size[0]}x{c.kernel_size[1]}" for c in parallel.convs})
    identity = len(parallel.branches) - len(parallel.convs)
    note = (f"merged {len(parallel.branches)} branches ({len(parallel.convs)} conv {'/'.join(kernels)}"
            + (f", {identity} identity/BN" if identity else "") + ") into one conv")
    dominant = any(c.weight.shape == merged.weight.shape and c.groups == merged.groups for c in parallel.convs)
    if dominant:
        note += " shaped like its largest branch (only removes work: not timed)"
    return Plan("merge", [parallel], [merged], speedup, note=note, removes_work=dominant)


RULE = register(Rule(
    "merge", order=10, matches=merge_matches, timed=True,
    plan=lambda match, shape, dtype, options: plan_merge(match.layers[0], shape, dtype, options),
    summary="parallel linear branches of one input, summed, into one conv (structural reparameterization)",
))
