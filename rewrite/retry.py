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
with the site checks on. When bisection runs out of re-runs (MAX_BISECTION_RUNS) or of time
(BISECTION_TIME_FACTOR x the first run's wall time, at most BISECTION_MAX_S), or the final run
still fails, the old conservative ladder follows: folds only (exact up to rounding; skipped once
that time is spent), then nothing. When the original model itself is further from float64 than
the tolerance (an explicit tolerance below its own rounding error), no rewritten model can pass
and fails(∅) holds: the bisection's premise is false, so nothing is retried but the original.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

from .cost_model import SLOWER, measured_slower
from .options import RewriteOptions
from .report import Report

MAX_BISECTION_RUNS = 24
# the bisection (and the folds-only retry after it) stops once it has taken this many times the
# first run's wall time, or BISECTION_MAX_S: a model that cannot be satisfied comes back
# unchanged in bounded time
BISECTION_TIME_FACTOR = 4.0
BISECTION_MAX_S = 10.0
ROLLED_BACK = "rolled back: with this site applied the whole model missed its tolerance (found by bisection)"
KEPT_FAILING = "rolled back: the whole-model check kept failing"


@dataclass
class Attempt:
    """One run of the passes and the whole-model check on its result. From rewrite_checked also
    what the retries decided, which the entry point records (Report.record_rollback): `rolled_back`
    maps the keys of the sites rolled back to the reason, `history` says what was tried, `verdict`
    how it ended."""

    result: object           # the optimized model (format-specific)
    report: Report
    passed: bool
    why: str = ""            # why the whole-model check failed, e.g. "rel error 3.1e-02 > 1.0e-04"
    rolled_back: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    verdict: str = ""


def find_culprits(applied: list[str], fails: Callable[[frozenset], bool],
                  max_runs: int | None = None, deadline: float | None = None) -> tuple[list[str] | None, int]:
    """(the sites to roll back, re-runs used), or (None, runs) when max_runs (default
    MAX_BISECTION_RUNS) did not suffice or time.perf_counter() passed `deadline` before a re-run.
    `applied` is in application order and fails(frozenset(applied)) is known to hold."""
    max_runs = MAX_BISECTION_RUNS if max_runs is None else max_runs
    culprits: list[str] = []
    remaining = list(applied)
    runs = 0

    def spent() -> bool:
        return runs == max_runs or (deadline is not None and time.perf_counter() > deadline)

    while remaining:
        lo, hi = 0, len(remaining)          # fails(prefix of length hi), not fails(prefix of length lo)
        while hi - lo > 1:
            if spent():
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
        if spent():
            return None, runs
        runs += 1
        if not fails(frozenset(remaining)):
            break
    return culprits, runs


def rewrite_checked(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions,
                    say: Callable[[str], None] = lambda message: None) -> Attempt:
    """Run the passes; on a failed whole-model check roll back the culprits only, else fewer rewrites.

    Returns the first attempt that passed, or the last one tried (passed=False) with every
    applied site in its rolled_back: the caller then returns or refuses the original."""
    started = time.perf_counter()
    first = run(options)
    if first.passed:
        return first
    one_run = time.perf_counter() - started
    budget = min(BISECTION_TIME_FACTOR * one_run, BISECTION_MAX_S)
    deadline = time.perf_counter() + budget
    failure = f"whole-model check failed ({first.why})"
    history = list(first.report.notes)
    applied = [s.key for s in first.report.applied]
    baseline, tolerance = first.report.model_baseline_error, first.report.model_tolerance
    if baseline is not None and tolerance is not None and baseline > tolerance:
        history.append(f"{failure}; the original model's own error ({baseline:.1e}) is over the tolerance "
                       f"{tolerance:.1e}: no rewrite can pass it, so none is retried")
        deadline, applied = 0.0, []
    if applied:
        say(f"{failure}; bisecting over {len(applied)} applied sites")
        unchecked = dataclasses.replace(options, check=False)

        def fails(keep: frozenset) -> bool:
            return not run(dataclasses.replace(unchecked, only_sites=keep)).passed

        bisect_start = time.perf_counter()
        culprits, runs = find_culprits(applied, fails, deadline=deadline)
        if culprits is not None:
            final = run(dataclasses.replace(options, skip_sites=options.skip_sites | frozenset(culprits),
                                            only_sites=frozenset(applied) - frozenset(culprits)))
            note = (f"{failure}; bisection over the {len(applied)} applied sites ({runs} re-runs) rolled back "
                    f"{len(culprits)}: {', '.join(culprits[:8])}{' ...' if len(culprits) > 8 else ''}")
            if final.passed:
                return dataclasses.replace(final, rolled_back=dict.fromkeys(culprits, ROLLED_BACK),
                                           history=history + [note], verdict=f"passed the whole-model check with "
                                           f"{len(culprits)} site(s) rolled back")
            history += [note, f"the model without those sites still failed ({final.why})"]
        else:
            took = time.perf_counter() - bisect_start
            limit = ("its time budget" if runs < MAX_BISECTION_RUNS else f"its cap of {MAX_BISECTION_RUNS} re-runs")
            history.append(f"{failure}; bisection found no culprit set within {runs} re-runs ({took:.1f} s; stopped "
                           f"at {limit}: {budget:.1f} s, the lesser of {BISECTION_TIME_FACTOR:g}x the first run's "
                           f"{one_run:.1f} s and {BISECTION_MAX_S:g} s, or {MAX_BISECTION_RUNS} re-runs)")
    # the conservative ladder: folds only (while time is left), then nothing
    skip = {s.key for s in first.report.applied if s.kind != "fold"}
    if skip and len(skip) < len(first.report.applied):
        if time.perf_counter() > deadline:
            history.append("not retried with the folds only: the retries' time budget is spent")
        else:
            say("retrying without the non-fold rewrites")
            history.append("retrying without the non-fold rewrites")
            attempt = run(dataclasses.replace(options, skip_sites=options.skip_sites | skip))
            if attempt.passed:
                return dataclasses.replace(attempt, history=history,
                                           verdict="passed the whole-model check with the folds only")
            history.append(f"whole-model check failed ({attempt.why})")
    say("retrying without any rewrite")
    history.append("retrying without any rewrite")
    rolled_back = {s.key: KEPT_FAILING for s in first.report.applied}
    # nothing applied: the passes are not run again (only_sites=∅), the first run's sites are its record
    bare = run(dataclasses.replace(options, only_sites=frozenset()))
    bare.report.sites = [dataclasses.replace(site) for site in first.report.sites]
    if bare.passed:
        return dataclasses.replace(bare, rolled_back=rolled_back, history=history,
                                   verdict="passed the whole-model check with every rewrite rolled back")
    history.append(f"whole-model check failed ({bare.why})")
    return dataclasses.replace(bare, rolled_back=rolled_back, history=history)


def finish_measured(report: Report, options: RewriteOptions, timed=None, runtime: str = "") -> frozenset:
    """With the measured cost model, after the whole-model check: record what was measured and,
    when `timed` = (original, optimized, inputs) is given, the whole model timed both ways.

    Returns the keys of the sites to roll back: those applied on a timing, when the whole model
    measured slower beyond the noise (measured_slower). Sites that only remove work (folds, merges
    into a conv shaped like a branch; never timed) are never rolled back for a timing: the noise
    of a busy machine could only undo them wrongly."""
    note, comparison = options.cost_model.finish(timed, options.min_speedup, runtime)
    report.notes.append(note)
    if comparison is not None:
        report.model_measured_s = [comparison.before_s, comparison.after_s]
        report.model_measured_ci = [comparison.speedup, comparison.low, comparison.high, comparison.pairs]
    slower = measured_slower(comparison, options.min_speedup)
    if not slower:
        return frozenset()
    timed_sites = frozenset(site.key for site in report.applied if site.measured_s is not None)
    report.notes.append(slower + (f": the {len(timed_sites)} site(s) applied on a timing are rolled back"
                                  if timed_sites else "; every applied rewrite only removes work, so all stay"))
    return timed_sites


def without(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt, keys: frozenset):
    """The result of the passes run again applying exactly what `final` applied less the sites
    `keys`, recorded in final's report (every site as it was decided, `keys` now rolled back, the
    new whole-model error); None when that result fails its check."""
    applied = frozenset(site.key for site in final.report.applied)
    again = run(dataclasses.replace(options, skip_sites=options.skip_sites | keys | frozenset(final.rolled_back),
                                    only_sites=applied - keys))
    if not again.passed:
        return None
    report = final.report
    report.record_rollback(dict.fromkeys(keys, SLOWER))
    report.model_rel_error, report.model_max_abs_error = again.report.model_rel_error, again.report.model_max_abs_error
    return again.result


def after_whole_model_timing(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt,
                             result, timed=None, runtime: str = ""):
    """With the measured cost model, the result to return, recorded in final's report: `result`
    itself, unless the whole model measured slower beyond the noise; then the result rebuilt
    without the sites applied on a timing, or None (return the original) when that fails its check."""
    slower = finish_measured(final.report, options, timed, runtime)
    if not slower:
        return result
    rebuilt = without(run, options, final, slower)
    if rebuilt is None:
        final.report.record_rollback(dict.fromkeys(slower, SLOWER), verdict="the model without the timed sites "
                                     "failed its check: returned the original model unchanged")
    return rebuilt
