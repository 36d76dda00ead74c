"""factorize: dense KxK conv ⇒ dw→pw or pw→dw, when the rank test allows and the cost model wins.

Candidates (see rewrite.algebra.rank / factorize):
* pw→dw, exact when every output-channel slab W[n] has rank 1;
* dw→pw with multiplier r = max over input channels of rank W[:, m], exact by construction;
* with an error budget (opt-in): dw→pw with the smallest r whose SVD truncation keeps the
  relative weight error under the budget; the site is then verified against the budget.
The cheapest candidate under the cost model is applied if it beats `min_speedup`.

    pw→dw:  W[n, m, :, :] = D[n] · P[n, m]                   (rank W[n] = 1 for every n)
    dw→pw:  W[n, m, :, :] = Σ_{i<r} P[n, m·r+i] · D[m·r+i]   (rank W[:, m] ≤ r for every m)

Convs a factorize or reverse rewrite made are not looked at again, and depthwise and 1x1 convs
are already in factored form.
"""
from __future__ import annotations

from ..algebra import dw_pw_rank_for_budget, factorize_dw_pw, factorize_pw_dw, rank_test
from ..ir import ConvSpec
from ..view import View
from .base import Decline, Match, Plan, Rule, declined, register


def factorize_matches(view: View):
    """Every dense conv that is not already in factored form (depthwise or 1x1)."""
    for op in view.ops:
        if op.kind != "conv" or op.origin in ("factorize", "reverse", "decouple"):
            continue
        if op.conv is not None and (op.conv.is_depthwise or op.conv.kernel_size == (1, 1)):
            continue                # already in factored form
        if op.reason:
            yield declined("factorize", op, op.reason)
            continue
        yield Match("factorize", op.name, [op], [op.conv], op.inputs[0], op.output)


def plan_factorize(conv: ConvSpec, input_shape, dtype, options) -> Plan | Decline:
    if not conv.is_dense:
        return Decline("factorize", f"grouped conv (groups={conv.groups}) is neither dense nor depthwise", [conv])
    n, m, kh, kw = conv.weight.shape
    rank = rank_test(conv)
    full = min(n, kh * kw)
    candidates = []
    if rank.pw_dw_exact:
        pw, dw = factorize_pw_dw(conv)
        candidates.append(Plan("factorize", [conv], [pw, dw], 0.0, note="exact pw→dw (rank 1 per output channel)"))
    if rank.dw_pw_rank < full:
        dw, pw = factorize_dw_pw(conv, max(rank.dw_pw_rank, 1))
        candidates.append(Plan("factorize", [conv], [dw, pw], 0.0, note=f"exact dw→pw, multiplier {max(rank.dw_pw_rank, 1)}"))
    budget = options.factorize_error_budget
    if budget is not None:
        r, weight_err = dw_pw_rank_for_budget(conv, budget)
        if r < max(rank.dw_pw_rank, 1):
            dw, pw = factorize_dw_pw(conv, r)
            candidates.append(Plan(
                "factorize", [conv], [dw, pw], 0.0, tolerance=budget,
                note=f"approximate dw→pw, multiplier {r} (weight error {weight_err:.1e}, budget {budget:g})",
            ))
    if not candidates:
        return Decline(
            "factorize",
            f"not factorable: per-input-channel rank {rank.dw_pw_rank} (full {full}), "
            f"per-output-channel rank {rank.pw_dw_rank} > 1",
            [conv],
        )
    before = options.cost_model.chain_time([conv], input_shape, dtype)
    for plan in candidates:
        plan.predicted_speedup = before / options.cost_model.chain_time(plan.after, input_shape, dtype)
    best = max(candidates, key=lambda p: p.predicted_speedup)
    if not options.measured and best.predicted_speedup < options.min_speedup:
        return Decline(
            "factorize",
            f"{best.note}, but the cost model predicts {best.predicted_speedup:.2f}x (< {options.min_speedup:g}x)",
            [conv], best.predicted_speedup,
        )
    return best


RULE = register(Rule(
    "factorize", order=30, matches=factorize_matches, timed=True,
    plan=lambda match, shape, dtype, options: plan_factorize(match.layers[0], shape, dtype, options),
    summary="dense KxK conv into depthwise → pointwise or pointwise → depthwise, by the rank test",
))
