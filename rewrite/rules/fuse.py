"""fuse: dw(+bias)(+act1)(+SE(+act)) → pw(+bias)(+act2)(+residual) ⇒ one fused kernel (kernels/).

The rewrite is the identity on the maths — y = act2(pw(act1(dw(x)))) [+ r] — so it is exact
up to summation order; what it buys is that the dw result never goes to device memory and three
to five launches become one. BatchNorm must already be folded into the convs. The fused kernel
covers: depthwise kh x kw with 1 ≤ kh, kw ≤ 7 (square or not: GhostNet-V2's 1x5 and 5x1),
stride 1 or 2 equal on both axes, zero padding (ph, pw) the same on both sides of each axis,
dilation 1, any multiplier; pointwise 1x1 stride 1; activations in FUSABLE_ACTIVATIONS;
fp32/fp16/bf16 (these facts, and the matcher the whole-block rules share: rules/fusable.py).

A squeeze-excitation between the convs is taken through soundly, because its gate is a
per-image, per-channel scale: pw(a · s[b]) = (pw · diag(s[b])) a. Only s needs all of a (its
spatial mean), so the fused form makes two passes over x — channel means of a (a is never
written), the small excitation MLP on [B, K], then the fused kernel scaling a by s on chip —
and the unfused block's write of a, its re-reads for the mean and the scale, and its write of
a · s all go away. An activation after the gate (ReXNet: pw(relu6(dw(x) · s))) runs on chip
too, after the scale: y = act2(pw(act_after_gate(act1(dw(x)) · s))) — it is applied to the
gated product, never moved across the gate (relu6(a · s) ≠ relu6(a) · s).

Planned without timing for a GPU target, a fused form that a GPU run measured slower than eager
is declined: the cost model says which and why (rewrite.cost_model.measured_fuse_loss, from
results/gpu/2026-11-25-h100/fuse_losses.json); timed on the GPU, the measurement decides.
"""
from __future__ import annotations

from ..cost_model import measured_fuse_loss
from ..ir import ConvSpec, FusedSepConv, SqueezeExcite
from .base import Decline, Match, Plan, Rule, register
from .fusable import check_fuse, check_se, fuse_matches, fuse_skipped, unfused_layers, unfused_time


def plan_fuse(dw: ConvSpec, act1: str | None, pw: ConvSpec, act2: str | None, residual: bool,
              input_shape, dtype, options, se: SqueezeExcite | None = None,
              act_after_gate: str | None = None) -> Plan | Decline:
    """Plan act2(pw(act_after_gate(act1(dw(x)) [· se]))) [+ r] as one fused kernel (act_after_gate
    only with an se: the matcher takes an activation after the gate into the site)."""
    before = unfused_layers(FusedSepConv(dw, act1, pw, act2, residual, se, act_after_gate))
    reason = check_fuse(dw, act1, pw, act2, dtype, act_after_gate) or (check_se(se, dw.out_channels) if se else None)
    if reason:
        return Decline("fuse", reason, before)
    fused = FusedSepConv(dw, act1, pw, act2, residual, se, act_after_gate)
    model = options.cost_model
    oh, ow = dw.output_hw(input_shape[2], input_shape[3])
    loss = None if options.measured or options.force_fuse else measured_fuse_loss(model, dw, se, (oh, ow))
    if loss:
        return Decline("fuse", f"{loss}; optimize the model on its GPU to time it there, or force_fuse=True", before)
    unfused = unfused_time(fused, input_shape, dtype, model)
    speedup = unfused / model.chain_time([fused], input_shape, dtype)
    if not options.measured and speedup < options.min_speedup:
        return Decline("fuse", f"cost model predicts the fused kernel at {speedup:.2f}x (< {options.min_speedup:g}x)",
                       before, speedup)
    return Plan("fuse", before, [fused], speedup, note="one fused Triton launch on CUDA (torch fallback on CPU)")


def _plan_match(match: Match, shape, dtype, options) -> Plan | Decline:
    f = match.parts
    return plan_fuse(f.dw, f.act1, f.pw, f.act2, match.residual is not None, shape, dtype, options, f.se,
                     f.act_after_gate)


RULE = register(Rule(
    "fuse", order=50, matches=fuse_matches, plan=_plan_match, timed=True, skipped=fuse_skipped, channels_last=True,
    summary="depthwise kh x kw (+act) (+squeeze-excitation (+act)) → pointwise (+act) (+residual) into one "
            "Triton kernel",
))
