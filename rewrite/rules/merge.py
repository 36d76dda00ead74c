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

import torch

from ..algebra.fold import fold_affine
from ..algebra.merge import branch_conv, check_merge, merge_convs
from ..ir import Affine, ParallelBranches
from .base import Decline, Plan


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
