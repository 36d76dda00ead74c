"""ONNX fuse pass: dw(+act1) → pw(+act2)(+residual add) ⇒ one call marked for the fused
separable-conv kernel (rule: rewrite.rules.fuse).

Each group becomes one call of an ONNX model-local function in the domain "dwsep", whose body
is the same computation in standard ops; runtimes that run model-local functions (onnxruntime
inlines them) still execute the model, and a GPU runtime can map every call to the one-launch
kernel of kernels/fused_sep_conv.py:

    dwsep.FusedSepConv_<act1>_<act2>[_residual](X, W_dw, B_dw, W_pw, B_pw[, R]; strides, pads, group)
        = act2(Conv1x1(act1(Conv(X, W_dw, B_dw; strides, pads, group)), W_pw, B_pw)) [+ R]

Runs after fold (BatchNorm must be inside the convs) and only for a GPU target or when forced.
The rule decides what the kernel covers; a squeeze-excitation gate between the convs blocks the
group, an activation after the pw conv that the kernel lacks is left outside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch
from onnx import helper

from rewrite.ir import ConvSpec
from rewrite.rules import Decline, plan_fuse
from rewrite.rules.fuse import FUSABLE_ACTIVATIONS

from .context import OnnxContext, apply_site, chain_reference
from .graph import consumer_ops, is_op, sole_consumer
from .lift import ActMatch, match_activation

DOMAIN = "dwsep"
FUNCTION = "FusedSepConv"


@dataclass
class Group:
    dw: gs.Node
    pw: gs.Node
    pw_spec: ConvSpec
    act1: ActMatch | None
    act2: ActMatch | None
    residual: gs.Tensor | None
    nodes: list
    output: gs.Tensor

    @property
    def op(self) -> str:
        acts = [a.name if a else "none" for a in (self.act1, self.act2)]
        return f"{FUNCTION}_{acts[0]}_{acts[1]}" + ("_residual" if self.residual is not None else "")


def match_group(ctx: OnnxContext, node: gs.Node) -> Group | str:
    """The dw → (act1) → pw → (act2) → (+ residual) run starting at `node`, or why there is none."""
    out = node.outputs[0]
    user = sole_consumer(ctx.graph, out)
    if is_op(user, "BatchNormalization"):
        return "BatchNormalization after the depthwise conv is not folded (run the fold pass first)"
    act1, tip = None, out
    if not is_op(user, "Conv"):
        act1 = match_activation(ctx.graph, out, ctx.overridable)
        tip = act1.output if act1 else out
        user = sole_consumer(ctx.graph, tip)
    if not is_op(user, "Conv"):
        readers = consumer_ops(ctx.graph, tip)
        what = f"the {act1.name} output" if act1 else "the depthwise output"
        if any(is_op(n, "Mul") for n in tip.outputs) and len(tip.outputs) > 1:
            return ("squeeze-excitation (x · gate) between the depthwise and pointwise convs blocks the fusion "
                    f"({what} goes to {readers})")
        return f"no pointwise conv follows ({what} goes to {readers})"
    pw = ctx.conv_at(user)
    if isinstance(pw, str):
        return f"pointwise conv: {pw}"
    nodes = [node] + (act1.nodes if act1 else []) + [user]
    out = user.outputs[0]
    act2 = match_activation(ctx.graph, out, ctx.overridable)
    if act2 is not None and act2.name in FUSABLE_ACTIVATIONS:
        nodes += act2.nodes
        out = act2.output
    else:
        act2 = None                     # left outside the group
    residual = None
    add = sole_consumer(ctx.graph, out)
    if is_op(add, "Add") and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        shape = ctx.shape(out)
        if isinstance(other, gs.Variable) and other is not out and shape is not None and ctx.shape(other) == shape:
            residual = other
            nodes.append(add)
            out = add.outputs[0]
    return Group(node, user, pw, act1, act2, residual, nodes, out)


def fuse_enabled(options) -> bool:
    """A GPU target (the fused kernel is a Triton kernel), or forced."""
    profile = getattr(options.cost_model, "profile", None)
    return bool(profile is not None and profile.is_gpu) or options.force_fuse


def run_fuse(ctx: OnnxContext) -> int:
    options = ctx.options
    if not fuse_enabled(options):
        note = "fuse pass skipped: the target is not a GPU (force_fuse=True fuses anyway)"
        if note not in ctx.report.notes:
            ctx.report.notes.append(note)
        return 0
    applied = 0
    todo = []
    for node in ctx.graph.nodes:
        if not is_op(node, "Conv"):
            continue
        spec = ctx.conv_at(node)
        if isinstance(spec, ConvSpec) and spec.is_depthwise and ctx.first_visit("fuse", node):
            todo.append((node, spec))
    for i, (node, dw) in enumerate(todo, 1):
        if not node.outputs:
            continue
        name = ctx.site_name(node)
        ctx.step("fuse", i, len(todo), name)
        group = match_group(ctx, node)
        if isinstance(group, str):
            ctx.decline_reason(name, "fuse", group, dw.describe())
            continue
        shape = ctx.cost_shape(node.inputs[0], name, "fuse", dw.describe())
        if shape is None:
            continue
        acts = [a.name if a else None for a in (group.act1, group.act2)]
        plan = plan_fuse(dw, acts[0], group.pw_spec, acts[1], group.residual is not None, shape, ctx.dtype, options)
        if isinstance(plan, Decline):
            ctx.decline(name, plan)
            continue
        plan.note = f"marked as {DOMAIN}.{group.op} (one fused kernel on GPU)"
        if group.op not in ctx.functions:
            ctx.functions[group.op] = function_proto(group, ctx.opset, ctx.dtype)
        inputs = [node.inputs[0]] + ([group.residual] if group.residual is not None else [])
        applied += apply_site(ctx, name, plan, group.nodes, [call_node(ctx, group, dw)], group.output, inputs,
                              chain_reference(plan.before, residual=group.residual is not None))
    return applied


def call_node(ctx: OnnxContext, group: Group, dw: ConvSpec) -> gs.Node:
    def bias(conv: gs.Node, spec: ConvSpec):
        if len(conv.inputs) > 2 and conv.inputs[2].name:
            return conv.inputs[2]
        zeros = np.zeros(spec.out_channels, dtype=spec.weight.numpy().dtype)
        return gs.Constant(ctx.names.fresh(f"{conv.name or 'conv'}.bias"), zeros)

    inputs = [group.dw.inputs[0], group.dw.inputs[1], bias(group.dw, dw),
              group.pw.inputs[1], bias(group.pw, group.pw_spec)]
    if group.residual is not None:
        inputs.append(group.residual)
    out = gs.Variable(ctx.names.fresh(f"{group.output.name}_fused"), dtype=group.output.dtype)
    attrs = {"strides": list(dw.stride), "pads": [dw.padding[0]] * 4, "group": dw.groups}
    name = ctx.names.fresh(f"{group.dw.name or 'dw'}_fused")
    return gs.Node(group.op, name, attrs, inputs, [out], domain=DOMAIN)


def function_proto(group: Group, opset: int, dtype: torch.dtype) -> onnx.FunctionProto:
    """The standard-op body of one FusedSepConv variant (dw attributes are the call's)."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    dw = helper.make_node("Conv", ["X", "W_dw", "B_dw"], ["dw"])
    for attr, kind in (("strides", onnx.AttributeProto.INTS), ("pads", onnx.AttributeProto.INTS),
                       ("group", onnx.AttributeProto.INT)):
        dw.attribute.append(onnx.AttributeProto(name=attr, type=kind, ref_attr_name=attr))
    nodes = [dw] + _activation(group.act1, "dw", "act1", np_dtype, opset)
    nodes.append(helper.make_node("Conv", ["act1" if group.act1 else "dw", "W_pw", "B_pw"], ["pw"]))
    nodes += _activation(group.act2, "pw", "act2", np_dtype, opset)
    last = "act2" if group.act2 else "pw"
    inputs = ["X", "W_dw", "B_dw", "W_pw", "B_pw"]
    if group.residual is not None:
        inputs.append("R")
        nodes.append(helper.make_node("Add", [last, "R"], ["sum"]))
    nodes[-1].output[0] = "Y"   # the last node computes the function's output
    return helper.make_function(DOMAIN, group.op, inputs, ["Y"], nodes, [helper.make_opsetid("", opset)],
                                attributes=["strides", "pads", "group"],
                                doc_string="dw conv (+act) → pw conv (+act) (+residual), one fused kernel on GPU")


def _activation(act: ActMatch | None, x: str, y: str, dtype, opset: int) -> list:
    """Standard ops computing the activation `act` of tensor x into y (none: no nodes)."""
    if act is None:
        return []

    def const(name, value):
        return helper.make_node("Constant", [], [f"{y}_{name}"],
                                value=onnx.numpy_helper.from_array(np.array(value, dtype=dtype)))

    name = act.name
    if name == "relu":
        return [helper.make_node("Relu", [x], [y])]
    if name == "relu6":
        return [const("lo", 0), const("hi", 6), helper.make_node("Clip", [x, f"{y}_lo", f"{y}_hi"], [y])]
    if name == "silu":
        return [helper.make_node("Sigmoid", [x], [f"{y}_gate"]), helper.make_node("Mul", [x, f"{y}_gate"], [y])]
    if name == "hardswish":
        if opset >= 14:
            return [helper.make_node("HardSwish", [x], [y])]
        return [helper.make_node("HardSigmoid", [x], [f"{y}_gate"], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", [x, f"{y}_gate"], [y])]
    if name == "gelu":
        if opset >= 20:
            return [helper.make_node("Gelu", [x], [y])]
        return [const("sqrt2", math.sqrt(2)), const("one", 1), const("half", 0.5),
                helper.make_node("Div", [x, f"{y}_sqrt2"], [f"{y}_s"]),
                helper.make_node("Erf", [f"{y}_s"], [f"{y}_e"]),
                helper.make_node("Add", [f"{y}_e", f"{y}_one"], [f"{y}_p"]),
                helper.make_node("Mul", [x, f"{y}_p"], [f"{y}_m"]),
                helper.make_node("Mul", [f"{y}_m", f"{y}_half"], [y])]
    raise ValueError(f"no ONNX lowering for activation {name!r}")
