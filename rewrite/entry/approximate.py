"""Approximate rewriting under a budget: the calibration split both entry points make.

With `approximate=REL` and calibration samples, the passes run with rule decouple on. The pass
manager streams the fit samples' statistics to it, fits each dense KxK conv, checks and times
the fitted form like any rewrite, and keeps fitted sites greedily by measured time saved per unit
of fitted error while the whole model's error on the held-out samples stays within REL
(passes/manager.py `_choose`). The entry point then checks the finished model on the same held-out
samples, never fitted on:

    ‖optimized − original‖₂ / ‖original‖₂ over the held-out samples' outputs ≤ REL

(rewrite.numerics.rms_rel_error; the exact path's max-based rel_error would let one pixel of a
probability map decide), and, where given, the user's metric within its allowed drop. A failure
drops fitted sites, the least time saved per unit of fitted error first (rewrite_approximate),
before the exact path's own rollbacks (rewrite/entry/retry.py) are left to decide.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..options import Calibration, RunState
from .retry import Attempt, rewrite_checked

MIN_SAMPLES = 2


def split_samples(samples: list, what: str = "calibration") -> Calibration:
    """The fit and held-out samples: the last quarter (at least one) is held out."""
    if len(samples) < MIN_SAMPLES:
        raise ValueError(f"{what}: {len(samples)} sample(s); approximate rewriting needs at least {MIN_SAMPLES} "
                         "(a quarter, at least one, is held out to measure the error of what was fitted)")
    held = max(1, len(samples) // 4)
    return Calibration(list(samples[:-held]), list(samples[-held:]))


OVER_BUDGET = ("rolled back: with it the finished model missed the held-out budget or the metric's allowed drop; "
               "the fitted sites saving more time per unit of fitted error were kept")


def saved_per_error(site) -> float:
    """Seconds a fitted site saves (measured where timed, else predicted) per unit of its fitted error."""
    times = site.measured_s or site.predicted_s
    saved = times[0] - times[1] if times else (site.predicted_speedup or 1.0) - 1.0
    return saved / max(site.fitted_error or 0.0, 1e-12)


def rewrite_approximate(run: Callable[[RunState], Attempt], state: RunState = RunState(),
                        say: Callable[[str], None] = lambda message: None) -> Attempt:
    """rewrite_checked for a run with fitted sites: when the finished model misses the held-out
    budget (the pass manager chose its sites on the graph before the later passes) or the user's
    metric (which only the entry point can run), the fitted sites are dropped one at a time, the
    one saving the least time per unit of fitted error first, until it passes; with none left, the
    exact path's own checks and rollbacks (rewrite_checked) decide."""
    first = run(state)
    fitted = sorted((s for s in first.facts.applied if s.fitted_error is not None), key=saved_per_error)
    if first.passed or not fitted:
        return first if first.passed else rewrite_checked(run, state, say)
    dropped: list = []
    for site in fitted[:-1]:
        dropped.append(site.key)
        say(f"{first.why}: without the fitted site {site.name}")
        attempt = run(state.skipping(dropped))
        if attempt.passed:
            return dataclasses.replace(attempt, rolled_back=dict.fromkeys(dropped, OVER_BUDGET),
                                       history=(f"{first.why} with {len(fitted)} fitted sites; {len(dropped)} "
                                                "rolled back, the least time saved per unit of error first",))
    final = rewrite_checked(run, state.skipping(s.key for s in fitted), say)
    return dataclasses.replace(final, rolled_back={**dict.fromkeys((s.key for s in fitted), OVER_BUDGET),
                                                   **final.rolled_back},
                               history=(f"{first.why} with every fitted site; all rolled back",) + tuple(final.history))
