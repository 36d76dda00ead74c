"""deconv_shuffle: a transposed conv whose kernel equals its stride (the 2x2 stride-2 upsampling of
U-Nets and of DBNet's text-detection head) ⇒ a 1x1 conv to C_out·s² channels, then depth_to_space:

    y[o, s·i + a, s·j + b] = bias[o] + Σ_c x[c, i, j]·W[c, o, a, b]
                           = depth_to_space(conv1x1(x; W'[o·s² + a·s + b, c] = W[c, o, a, b]), s)

(rewrite.algebra.shuffle). Exact, and the same multiply-adds: the form is a runtime's choice, not
less work. Eager PyTorch on a CPU runs conv_transpose2d through a slow path (PP-OCRv4's detector
head: 2.6 → 1.2 ms for its last 24→1 upsampling) yet runs other shapes faster as they are, so the
rule is timed like the other form-changing rules: applied where the site measures faster in the
runtime the model runs in, and with the analytic cost model only where the roofline predicts it
(it never does: the rewritten form moves the upsampled tensor once more).
"""
from __future__ import annotations

from ..algebra.shuffle import check_deconv_as_shuffle, deconv_as_shuffle
from ..ir import TransposedConv
from ..view import View
from .base import Decline, Match, Plan, Rule, declined, register


def deconv_shuffle_matches(view: View):
    """Every transposed conv with constant weights (the check says which are not kernel = stride)."""
    for op in view.ops:
        if op.kind != "deconv":
            continue
        if op.reason:
            yield declined("deconv_shuffle", op, op.reason)
            continue
        yield Match("deconv_shuffle", op.name, [op], [op.deconv], op.inputs[0], op.output)


def plan_deconv_shuffle(deconv: TransposedConv, input_shape, dtype, options) -> Plan | Decline:
    reason = check_deconv_as_shuffle(deconv)
    if reason:
        return Decline("deconv_shuffle", reason, [deconv])
    after = list(deconv_as_shuffle(deconv))
    speedup = options.cost_model.speedup([deconv], after, input_shape, dtype)
    if not options.measured and speedup < options.min_speedup:    # measured: timed after its check
        return Decline("deconv_shuffle", f"cost model predicts {speedup:.2f}x (< {options.min_speedup:g}x)",
                       [deconv], speedup)
    return Plan("deconv_shuffle", [deconv], after, speedup, note="1x1 conv, then depth_to_space")


RULE = register(Rule(
    "deconv_shuffle", order=32, matches=deconv_shuffle_matches, timed=True,
    plan=lambda match, shape, dtype, options: plan_deconv_shuffle(match.layers[0], shape, dtype, options),
    summary="a transposed conv with kernel = stride into a 1x1 conv and depth_to_space (pixel shuffle)",
    captures=("deconv",),
))
