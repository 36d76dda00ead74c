"""Approximate rewriting under a budget: the calibration split both entry points make.

With `approximate=REL` and calibration samples, the passes run with rule decouple on. The pass
manager streams the fit samples' statistics to it, fits each dense KxK conv, checks and times
the fitted form like any rewrite, and keeps fitted sites greedily by measured time saved per unit
of fitted error while the whole model's error on the held-out samples stays within REL
(passes/manager.py `_choose`). The entry point then checks the finished model on the same held-out
samples, never fitted on:

    ‖optimized − original‖₂ / ‖original‖₂ over the held-out samples' outputs ≤ REL

(rewrite.numerics.rms_rel_error; the exact path's max-based rel_error would let one pixel of a
probability map decide), and the culprits of a failure are rolled back by the same bisection as
the exact path's (rewrite/retry.py).
"""
from __future__ import annotations

from .options import Calibration

MIN_SAMPLES = 2


def split_samples(samples: list, what: str = "calibration") -> Calibration:
    """The fit and held-out samples: the last quarter (at least one) is held out."""
    if len(samples) < MIN_SAMPLES:
        raise ValueError(f"{what}: {len(samples)} sample(s); approximate rewriting needs at least {MIN_SAMPLES} "
                         "(a quarter, at least one, is held out to measure the error of what was fitted)")
    held = max(1, len(samples) // 4)
    return Calibration(list(samples[:-held]), list(samples[-held:]))
