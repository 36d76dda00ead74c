"""Error measurement and per-dtype tolerances shared by every front end.

Relative error of an output against its float64 reference is the normwise max ratio

    rel_error(y, ref) = max|y − ref| / max|ref|

(∞ when y has a NaN/Inf the reference lacks, or ref is all zero while y is not), which is the
figure every site check and the whole-model check compare with their tolerance.
"""
from __future__ import annotations

import math

import torch

# A rewrite of one site changes summation order and rounding of folded weights: it should land
# within a few ulp-scaled steps of the original. The whole model accumulates many sites.
SITE_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
MODEL_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

FLOAT_DTYPES = tuple(SITE_TOLERANCE)

# By default a rewrite may be as inaccurate as the original computation itself, times this: in
# fp16/bf16 the original model is often 1e-2..1e-1 away from float64 on its own. A tolerance
# the user sets explicitly is a hard bound.
BASELINE_FACTOR = 2.0
# A site is one conv chain whose rounding error is a random quantity of the order of the
# original's: a folded or collapsed conv on an ill-conditioned activation (large inputs whose
# products cancel) lands at 1-3x the original's own error, so a single site gets more room.
SITE_BASELINE_FACTOR = 4.0


# Past this the check inputs measure rounding, not the model: a float32 original more than 1e-3 from
# its own float64 evaluation (typically outputs squashed to ~0 by a sigmoid that noise inputs
# saturate, so that every output value is rounding) leaves the whole-model check, whose tolerance
# widens with that error, unable to tell a wrong model from a right one on those inputs.
WEAK_CHECK_BASELINE = {dtype: min(10 * tol, 0.1) for dtype, tol in MODEL_TOLERANCE.items()}


def weak_check_warning(dtype: torch.dtype, baseline_error: float | None, tolerance: float, remedy: str) -> str | None:
    """The warning to give when the original's own error on the check inputs makes the whole-model
    check unable to discriminate (None when it can); `remedy` says how to pass better inputs."""
    if baseline_error is None or not baseline_error > WEAK_CHECK_BASELINE[dtype]:
        return None
    return (f"the whole-model check is weak on these inputs: the original model itself is {baseline_error:.1e} away "
            f"from its reference evaluation on them (outputs that are mostly rounding, e.g. a sigmoid that random "
            f"inputs saturate), so its tolerance {tolerance:.1e} cannot tell a wrong model from a right one; each "
            f"rewrite was still checked on the spot; check the whole model on representative inputs ({remedy})")


def effective_tolerance(tol: float, baseline_error: float, factor: float = BASELINE_FACTOR) -> float:
    """max(tol, factor · error of the original in its own dtype vs float64)."""
    if baseline_error != baseline_error or baseline_error == float("inf"):
        return tol
    return max(tol, factor * baseline_error)


def site_tolerance(dtype: torch.dtype, override: float | None = None, baseline_error: float = 0.0) -> float:
    """The user's tolerance as given, else the dtype default widened to the original's own error."""
    if override is not None:
        return override
    return effective_tolerance(SITE_TOLERANCE[dtype], baseline_error, SITE_BASELINE_FACTOR)


def model_tolerance(dtype: torch.dtype, override: float | None = None, baseline_error: float = 0.0) -> float:
    """The user's tolerance as given, else the dtype default widened to the original's own error."""
    return override if override is not None else effective_tolerance(MODEL_TOLERANCE[dtype], baseline_error)


def rms_rel_error(pairs) -> float:
    """‖y − ref‖₂ / ‖ref‖₂ over every (y, ref) pair together: the relative output error an
    approximate rewrite is budgeted in (held-out samples, all float outputs). Unlike rel_error's
    max, one pixel of a probability map crossing from 0.3 to 0.6 does not decide it alone."""
    err = ref_sq = 0.0
    for y, ref in pairs:
        y, ref = torch.as_tensor(y).detach().double(), torch.as_tensor(ref).detach().double()
        if y.shape != ref.shape:
            raise ValueError(f"shape mismatch: {tuple(y.shape)} vs reference {tuple(ref.shape)}")
        if not torch.isfinite(y).all():
            return math.inf
        err += (y - ref).square().sum().item()
        ref_sq += ref.square().sum().item()
    return math.sqrt(err / ref_sq) if ref_sq > 0 else (0.0 if err == 0 else math.inf)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach().double(), ref.detach().double()
    if y.shape != ref.shape:
        raise ValueError(f"shape mismatch: {tuple(y.shape)} vs reference {tuple(ref.shape)}")
    if not torch.isfinite(y).all():
        return math.inf
    scale = ref.abs().max().item() if ref.numel() else 0.0
    diff = (y - ref).abs().max().item() if ref.numel() else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def max_abs_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach().double(), ref.detach().double()
    if not torch.isfinite(y).all():
        return math.inf
    return (y - ref).abs().max().item() if ref.numel() else 0.0


def within(err: float, tol: float) -> bool:
    """NaN never passes."""
    return err == err and err <= tol
