"""native_act: an activation written out over more nodes than the shortest standard form the format
has for it ⇒ that form (the same function, fewer passes over the tensor).

    x·Clip(x + 3, 0, 6)/6  = x·HardSigmoid(x; α = 1/6, β = 1/2)  = HardSwish(x)     (opset ≥ 14)
    Clip(x + 3, 0, 6)/6    = HardSigmoid(x; 1/6, 1/2)
    x·(1 + erf(x/√2))/2    = Gelu(x)                                                (opset ≥ 20)

since clip(x + 3, 0, 6)/6 = clip(x/6 + 1/2, 0, 1) (rewrite.ir.ACTIVATIONS gives each function).
Paddle2ONNX below opset 14 writes every hardswish as Add → Clip → Mul → Div, four passes that
onnxruntime runs one by one (it fuses none of them); the standard HardSigmoid · Mul is two, HardSwish
one. The view says how many nodes each activation's standard form takes in the format
(View.native_acts: passes/onnx/lower.py writes them at the model's opset), and an act op lifted
from more nodes than that is a site. SiLU has no standard op before ONNX's newest opsets (x·Sigmoid(x)
is its shortest form) and the Erf GELU none below opset 20, so neither is a site there. In FX every
activation is one module (View.native_acts: 1 each), and the same written-out hardswish and
hardsigmoid (rewrite.composite_acts: one pattern for both views) are sites: onnx2torch turns
Paddle's four ONNX nodes into four aten ops (add → hardtanh → mul → div), each a pass in eager.

Exact up to rounding, and it only removes work: applied without timing wherever it matches, each
site still checked on the spot. It runs after the folds and before the rules that are timed, so
their timings and the fuse rule see the short form (the fuse rule takes a hardswish act whatever
its nodes).
"""
from __future__ import annotations

from ..ir import Activation
from ..view import Op, View
from .base import Match, Plan, Rule, register


def check_native_act(op: Op, native: int | None) -> str | None:
    """Why the act op stays as it is written (None: the format's standard form is shorter);
    native: the node count of that form, None where the format has none."""
    if native is None:
        return f"the format has no standard form of {op.act}"
    if len(op.nodes) <= native:
        return f"{op.act} is already written in its shortest standard form ({native} node(s))"
    return None


def native_act_matches(view: View):
    """Act ops written over more nodes than their standard form. Acts already in it are not sites
    (every SiLU would be one)."""
    for op in view.ops:
        if op.kind == "act" and len(op.nodes) > 1 and check_native_act(op, view.native_acts.get(op.act)) is None:
            yield Match("native_act", op.name, [op], [Activation(op.act)], op.inputs[0], op.output,
                        parts=(len(op.nodes), view.native_acts[op.act]))


def plan_native_act(act: Activation, nodes: int, native: int, input_shape, dtype, options) -> Plan:
    """The activation in its standard form (the front end writes it); predicted as one elementwise
    pass per node."""
    speedup = options.cost_model.speedup([act] * nodes, [act] * native, input_shape, dtype)
    return Plan("native_act", [act], [act], speedup, note=f"{nodes} nodes → {native}", removes_work=True)


RULE = register(Rule(
    "native_act", order=24, matches=native_act_matches, timed=False,
    plan=lambda match, shape, dtype, options: plan_native_act(match.layers[0], *match.parts, shape, dtype, options),
    summary="an activation written out over several nodes into its shortest standard form (Paddle's hardswish)",
    captures=("act",),
))
