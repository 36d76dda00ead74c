"""ParallelBranches of conv chains: y = Σ_i chain_i(x) (+ shift), every branch reading the same x.

As a plan's `after` it is the form decouple offers for a dw→pw fit with channel multiplier r ≥ 2:
r parallel (dw, pw) pairs summed (rewrite/algebra/decouple.py parallel_pairs), which runs faster
than one depthwise conv with multiplier r where that conv is slow (onnxruntime's CPU provider).
Only branches of convs are lowered here; a branch with an affine or an empty one (the merge
rule's `before`) is merged, never lowered.

FX: `SumOfChains`, one module holding each branch as an nn.Sequential of convs. ONNX: each
branch's Conv nodes, named <site>_b<i>_<role>, then Add nodes summing the branches (and the shift).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from rewrite.ir import ConvSpec, ParallelBranches

from .conv import conv_module, conv_node
from .registry import LoweringSite, fx_lowering, onnx_lowering


class SumOfChains(nn.Module):
    """Σ_i branch_i(x) (+ shift): each branch an nn.Sequential of convs."""

    def __init__(self, branches, shift: torch.Tensor | None = None):
        super().__init__()
        # `chains`, not `branches`: a module with `branches` and `join` is spliced in branch by branch
        # (passes/fx/adapter.py), and these branches all read the one input
        self.chains = nn.ModuleList(nn.Sequential(*chain) for chain in branches)
        self.register_buffer("shift", None if shift is None else shift.detach().view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.chains[0](x)
        for branch in self.chains[1:]:
            y = y + branch(x)
        return y if self.shift is None else y + self.shift


def _convs(parallel: ParallelBranches) -> list:
    for branch in parallel.branches:
        if not branch or not all(isinstance(layer, ConvSpec) for layer in branch):
            raise TypeError(f"only branches of convs are lowered: {parallel.describe()}")
    return [list(branch) for branch in parallel.branches]


@fx_lowering(ParallelBranches)
def parallel_to_modules(parallel: ParallelBranches, site: LoweringSite) -> list:
    return [SumOfChains([[conv_module(spec) for spec in branch] for branch in _convs(parallel)],
                        parallel.shift).eval()]


@onnx_lowering(ParallelBranches)
def parallel_to_nodes(parallel: ParallelBranches, site) -> list:
    nodes, ends = [], []
    for i, branch in enumerate(_convs(parallel)):
        x = site.x
        for spec in branch:
            role = "dw" if spec.is_depthwise else "pw" if spec.is_pointwise else "conv"
            nodes.append(conv_node(spec, x, f"{site.name}_b{i}_{role}", site))
            x = nodes[-1].outputs[0]
        ends.append(x)
    total = ends[0]
    dtype = total.dtype
    for i, end in enumerate(ends[1:], 1):
        out = site.variable(f"{site.name}_sum{i}", dtype)
        nodes.append(site.node("Add", f"{site.name}_sum{i}", {}, [total, end], [out]))
        total = out
    if parallel.shift is not None:
        shift = site.constant(f"{site.name}.shift", np.ascontiguousarray(
            parallel.shift.detach().reshape(1, -1, 1, 1).numpy().astype(dtype)))
        out = site.variable(f"{site.name}_shifted", dtype)
        nodes.append(site.node("Add", f"{site.name}_shift", {}, [total, shift], [out]))
    if site.shape is not None:
        first = branch_shape = site.shape
        for spec in _convs(parallel)[0]:
            branch_shape = (first[0], spec.out_channels, *spec.output_hw(*branch_shape[2:]))
        site.shape = branch_shape
    return nodes
