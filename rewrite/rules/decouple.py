"""decouple: a dense KxK conv ⇒ a fitted dw→pw or pw→dw chain (approximate; opt-in, with calibration inputs).

Trained dense convs are never exactly factorable (rule factorize's rank test declines them), but
on the inputs a conv really sees a depthwise/pointwise chain can come close. With `approximate=REL`
and calibration samples, the pass manager streams the samples through the graph and hands this
rule the second moments of each candidate conv's input patches, on a fit split and a held-out
split (Rule.statistics); the plan fits each form by least squares on the fit split
(rewrite/algebra/decouple.py), measures its error on the held-out split, and proposes the
form that saves the most predicted time per unit of held-out error, unless no form explains the conv.
A dw→pw fit with multiplier r ≥ 2 also offers the same function as r parallel (dw, pw) pairs
summed (Plan.alternatives): where sites are timed, the form that runs faster there is lowered.

    W'[n, m, t] = Σ_i P[n, m, i] D[m, i, t]      dw (multiplier r) → pw
    W'[n, m, t] = Σ_i Q[n, i, m] D[n, i, t]      pw (M → N·r) → conv(groups N)
    b' = b + (W − W') μ                         the mean output kept

    fitted error = sqrt(E_held ‖ΔW_a p_a‖² / E_held ‖W_a p_a‖²)   (patches p_a = [p; 1])

The site check compares the lowered chain with the fit's own effective conv (W', b') in float64
(Plan.reference): it catches a wrong lowering, not the approximation, which the whole-model check
judges on the held-out samples against REL; where the whole model misses it, the driver keeps the
sites that save the most measured time per unit of fitted error (rewrite/entry/approximate.py).
Without `approximate` the pass does not run: nothing approximate is ever applied by default.
"""
from __future__ import annotations

from ..algebra.decouple import PatchMoments, fit_dw_pw, fit_pw_dw, output_error, parallel_pairs
from ..ir import ConvSpec
from ..view import View
from .base import Decline, Match, Plan, Rule, conv_reason, declined, register

FORMS = (("dw→pw", 1), ("pw→dw", 1), ("dw→pw", 2))
# a fit this far off explains little of the conv's output: not worth a whole-model try. Below it,
# per-layer error says little about the model's (a detector's head loses 10% of a conv's output
# energy and none of its detections), so the whole-model check on held-out samples decides.
MAX_SITE_ERROR = 0.5
MAX_PW_DW_WORK = 4e7           # N·M²·K above this: the pw→dw normal equations are too big to form
FACTORED = ("factorize", "reverse", "decouple")


def decouple_matches(view: View):
    """Every dense KxK conv (K > 1) over NCHW, stride ≤ 2, not made by a factorize/reverse/decouple rewrite."""
    for op in view.ops:
        if op.kind != "conv" or op.origin in FACTORED or op.conv is None:
            continue
        conv = op.conv
        if conv.is_depthwise or conv.kernel_size == (1, 1):
            continue
        why = conv_reason(op) or _conv_reason(conv)
        if why:
            yield declined("decouple", op, why)
            continue
        yield Match("decouple", op.name, [op], [conv], op.inputs[0], op.output)


def _conv_reason(conv: ConvSpec) -> str | None:
    if not conv.is_dense:
        return f"grouped conv (groups={conv.groups}): only dense convs are decoupled"
    if max(conv.stride) > 2:
        return f"stride {conv.stride}: decoupled at stride 1 or 2 only"
    return None


def patch_moments(match: Match) -> PatchMoments:
    """The statistic the pass manager streams for a site: its conv's input-patch moments."""
    return PatchMoments(match.layers[0])


def plan_decouple(match: Match, input_shape, dtype, options) -> Plan | Decline:
    conv = match.layers[0]
    if match.parts is None:
        return Decline("decouple", "no calibration sample reached this conv", [conv])
    fit_moments, held_moments = match.parts
    n, m, kh, kw = conv.weight.shape
    fits = []
    for form, r in FORMS:
        if form == "pw→dw" and n * m * m * kh * kw > MAX_PW_DW_WORK:
            continue
        fit = (fit_dw_pw if form == "dw→pw" else fit_pw_dw)(conv, fit_moments, r)
        if fit.multiplier != r:
            continue                        # r above the slab rank: the exact factorization's business
        held = output_error(conv, fit.weight, fit.bias, held_moments)
        before = options.cost_model.chain_time([conv], input_shape, dtype)
        speedup = before / options.cost_model.chain_time(fit.layers, input_shape, dtype)
        fits.append((fit, held, speedup))
    useful = [f for f in fits if f[1] < MAX_SITE_ERROR]
    if not useful:
        best = min(fits, key=lambda f: f[1], default=None)
        said = f"the best, {best[0].name}, is off by {best[1]:.2f} of the output" if best else "no form fits"
        return Decline("decouple", f"no fitted form reproduces this conv on held-out samples: {said}", [conv])
    # the form saving the most predicted time per unit of held-out error, the greedy choice's own
    # measure; one predicted slower only when all are, then the least slow
    fit, held, speedup = max(useful, key=lambda f: (f[2] > 1, (1 - 1 / f[2]) / max(f[1], 1e-12) if f[2] > 1 else f[2]))
    if not options.measured and speedup < options.min_speedup:
        return Decline("decouple", f"{fit.name} (held-out error {held:.1e}), but the cost model predicts "
                       f"{speedup:.2f}x (< {options.min_speedup:g}x)", [conv], speedup)
    effective = ConvSpec(fit.weight, fit.bias, conv.stride, conv.padding, conv.dilation)       # float64
    # a dw conv with multiplier r > 1 is slow in some runtimes (onnxruntime's CPU provider): the same
    # fit as r parallel (dw, pw) pairs is timed against it where sites are timed
    alternatives = ((parallel_pairs(*fit.layers),),) if fit.form == "dw→pw" and fit.multiplier > 1 else ()
    return Plan("decouple", [conv], fit.layers, speedup, fitted_error=held, reference=[effective],
                alternatives=alternatives,
                note=f"approximate {fit.name}: held-out output error {held:.1e} (fit {fit.fit_error:.1e}, "
                     f"{fit_moments.count} + {held_moments.count} patches)")


def decouple_skipped(options) -> str | None:
    if options.approximate is None:
        return "decouple: off (exact rewrites only; approximate=REL with calibration inputs opts in)"
    if options.calibration is None:
        return "decouple: approximate= was given without calibration inputs: nothing approximate applied"
    return None


RULE = register(Rule(
    "decouple", order=31, matches=decouple_matches, timed=True, skipped=decouple_skipped,
    plan=lambda match, shape, dtype, options: plan_decouple(match, shape, dtype, options),
    statistics=patch_moments,
    summary="dense KxK conv into a depthwise/pointwise chain fitted on calibration inputs (approximate, opt-in)",
))
