"""What to do when the whole-model check fails: roll back only the culprits (shared by FX and ONNX).

Every site passed its own check, yet the whole model can still miss its tolerance (errors that
add up across sites, or a rewrite whose effect reaches beyond the site). Rolling back every
rewrite would throw away the good ones with the bad, so the culprits are found by bisection over
the applied sites, in the order they were applied:

    fails(S) = the model with only the sites S applied misses its tolerance.
    fails(A) holds for the applied set A; fails(∅) does not (∅ is the original model).
    The shortest failing prefix A[:k] of the remaining sites ends in a culprit A[k-1];
    drop it and repeat until the rest passes: C = {culprits}, keep A \\ C.

Each culprit costs ⌈log2 |A|⌉ + 1 re-runs, with the site checks off (every kept site already
passed its own check; only the whole model is in question). The final run applies exactly A \\ C
with the site checks on. When bisection runs out of re-runs or the final run still fails, the old
conservative ladder follows: folds only (exact up to rounding), then nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from .options import RewriteOptions
from .report import Report

MAX_BISECTION_RUNS = 24
ROLLED_BACK = "rolled back: with this site applied the whole model missed its tolerance (found by bisection)"


@dataclass
class Attempt:
    """One run of the passes and the whole-model check on its result."""

    result: object           # the optimized model (format-specific)
    report: Report
    passed: bool
    why: str = ""            # why the whole-model check failed, e.g. "rel error 3.1e-02 > 1.0e-04"


def site_key(site) -> str:
    return f"{site.kind}:{site.name}"


def find_culprits(applied: list[str], fails: Callable[[frozenset], bool],
                  max_runs: int | None = None) -> tuple[list[str] | None, int]:
    """(the sites to roll back, re-runs used), or (None, runs) when max_runs (default
    MAX_BISECTION_RUNS) did not suffice. `applied` is in application order and
    fails(frozenset(applied)) is known to hold."""
    max_runs = MAX_BISECTION_RUNS if max_runs is None else max_runs
    culprits: list[str] = []
    remaining = list(applied)
    runs = 0
    while remaining:
        lo, hi = 0, len(remaining)          # fails(prefix of length hi), not fails(prefix of length lo)
        while hi - lo > 1:
            if runs == max_runs:
                return None, runs
            mid = (lo + hi) // 2
            runs += 1
            if fails(frozenset(remaining[:mid])):
                hi = mid
            else:
                lo = mid
        culprits.append(remaining.pop(hi - 1))
        if not remaining:
            break
        if runs == max_runs:
            return None, runs
        runs += 1
        if not fails(frozenset(remaining)):
            break
    return culprits, runs


def rewrite_checked(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions,
                    say: Callable[[str], None] = lambda message: None) -> Attempt:
    """Run the passes; on a failed whole-model check roll back the culprits only, else fewer rewrites.

    Returns the first attempt that passed, or the last one tried (passed=False) with every
    site marked rolled back: the caller then returns or refuses the original."""
    first = run(options)
    if first.passed:
        return first
    failure = f"whole-model check failed ({first.why})"
    history = list(first.report.notes)
    applied = [site_key(s) for s in first.report.applied]
    if applied:
        say(f"{failure}; bisecting over {len(applied)} applied sites")
        unchecked = dataclasses.replace(options, check=False)

        def fails(keep: frozenset) -> bool:
            return not run(dataclasses.replace(unchecked, only_sites=keep)).passed

        culprits, runs = find_culprits(applied, fails)
        if culprits is not None:
            final = run(dataclasses.replace(options, skip_sites=options.skip_sites | frozenset(culprits),
                                            only_sites=frozenset(applied) - frozenset(culprits)))
            note = (f"{failure}; bisection over the {len(applied)} applied sites ({runs} re-runs) rolled back "
                    f"{len(culprits)}: {', '.join(culprits[:8])}{' ...' if len(culprits) > 8 else ''}")
            if final.passed:
                _mark(final.report, culprits)
                _prepend(final.report, history + [note])
                final.report.notes.append(f"passed the whole-model check with {len(culprits)} site(s) rolled back")
                return final
            history += [note, f"the model without those sites still failed ({final.why})"]
        else:
            history.append(f"{failure}; bisection found no culprit set within {runs} re-runs")
    # the conservative ladder: folds only, then nothing
    attempt, skipped = first, set(options.skip_sites)
    for keep_folds in (True, False):
        skip = {site_key(s) for s in attempt.report.applied if not (keep_folds and s.kind == "fold")}
        if not skip:
            continue
        skipped |= skip
        note = "retrying without " + ("the non-fold rewrites" if keep_folds else "any rewrite")
        say(note)
        history.append(note)
        attempt = run(dataclasses.replace(options, skip_sites=frozenset(skipped)))
        if attempt.passed:
            _prepend(attempt.report, history)
            attempt.report.notes.append("passed the whole-model check " + (
                "with the folds only" if keep_folds else "with every rewrite rolled back"))
            return attempt
        history.append(f"whole-model check failed ({attempt.why})")
    for site in attempt.report.applied:
        site.status, site.reason = "rolled_back", "rolled back: the whole-model check kept failing"
    _prepend(attempt.report, history)
    return attempt


def _mark(report: Report, culprits: list[str]) -> None:
    for site in report.sites:
        if site.status == "rolled_back" and site_key(site) in culprits:
            site.reason = ROLLED_BACK


def _prepend(report: Report, notes: list[str]) -> None:
    report.notes[:] = list(dict.fromkeys(notes + report.notes))
