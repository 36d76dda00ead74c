"""Concat (fold_concat's record: convs on several inputs, concatenated on the channel axis).

FX: ConcatConvs, the form the site is checked in; the adapter splices its branches in as modules
of their own and joins their outputs with `join` (aten.cat on axis 1). ONNX: one Conv (Gemm over
[N, C]) per branch, each named after the conv it replaces, and the Concat of their outputs."""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.ir import Concat

from .conv import conv_module, conv_node, gemm_node, linear_module
from .registry import LoweringSite, fx_lowering, onnx_lowering


class ConcatConvs(nn.Module):
    """cat([conv_i(x_i)], 1): the form a Concat site is checked in. `branches` read one input each;
    `join` is the (aten op, extra args) the FX adapter joins their outputs with."""

    join = (torch.ops.aten.cat.default, 1)

    def __init__(self, convs):
        super().__init__()
        self.convs = nn.ModuleList(convs)

    @property
    def branches(self) -> nn.ModuleList:
        return self.convs

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv, x in zip(self.convs, xs)], 1)


def concat_module(concat: Concat, linear: bool) -> ConcatConvs:
    """The convs of `concat` as nn.Conv2d (nn.Linear where `linear`: a concat of linears over [N, C])."""
    return ConcatConvs([(linear_module if linear else conv_module)(conv) for conv in concat.convs])


@fx_lowering(Concat)
def concat_to_modules(concat: Concat, site: LoweringSite) -> list:
    return [concat_module(concat, site.layout == "nc")]


@onnx_lowering(Concat)
def concat_to_nodes(concat: Concat, site) -> list:
    inputs = [site.tensor(v) for v in site.match.runtime_inputs]
    names_ = [op.name for op in site.match.ops[:len(inputs)]]
    linear = site.layout == "nc"
    nodes = [(gemm_node if linear else conv_node)(conv, x, name, site)
             for conv, x, name in zip(concat.convs, inputs, names_)]
    out = site.variable(f"{names_[0]}_concat", nodes[0].outputs[0].dtype)
    nodes.append(site.node("Concat", f"{names_[0]}_concat", {"axis": 1}, [node.outputs[0] for node in nodes], [out]))
    return nodes
