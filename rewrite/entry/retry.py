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

from ..cost_model import SLOWER, measured_slower
from ..measure import DECISIVE_PAIRS
from ..options import RewriteOptions
from ..report import Report
from ..rules import RULES

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


def finish_measured(report: Report, options: RewriteOptions, timed=None, runtime: str = ""):
    """With the measured cost model, after the whole-model check: record what was measured and,
    when `timed` = (original, optimized, inputs) is given, the whole model timed both ways.

    Returns (the keys of the sites to roll back, the whole-model Comparison or None): the sites
    applied on a timing, when the whole model measured slower beyond the noise by more than the
    margin (measured_slower). Sites that only remove work (folds, merges into a conv shaped like
    a branch; never timed) are not rolled back for that timing: after_whole_model_timing times
    them as groups when the whole model measured slower at all."""
    note, comparison = options.cost_model.finish(timed, options.min_speedup, runtime)
    report.notes.append(note)
    _record_timing(report, comparison)
    slower = measured_slower(comparison, options.min_speedup)
    if not slower:
        return frozenset(), comparison
    timed_sites = frozenset(site.key for site in report.applied if site.measured_s is not None)
    report.notes.append(slower + (f": the {len(timed_sites)} site(s) applied on a timing are rolled back"
                                  if timed_sites else ""))
    return timed_sites, comparison


def _record_timing(report: Report, comparison) -> None:
    if comparison is not None:
        report.model_measured_s = [comparison.before_s, comparison.after_s]
        report.model_measured_ci = [comparison.speedup, comparison.low, comparison.high, comparison.pairs]


def _rebuilt(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt, keys: frozenset):
    """The passes run again applying exactly what `final`'s report has applied less the sites
    `keys`: the Attempt, or None when it fails its check."""
    applied = frozenset(site.key for site in final.report.applied)
    again = run(dataclasses.replace(options, skip_sites=options.skip_sites | keys | frozenset(final.rolled_back),
                                    only_sites=applied - keys))
    return again if again.passed else None


def _adopt(final: Attempt, again: Attempt, keys, reason: str) -> None:
    """Record in final's report that `keys` are rolled back for `reason`, and the new model's errors."""
    report = final.report
    report.record_rollback(dict.fromkeys(keys, reason))
    report.model_rel_error, report.model_max_abs_error = again.report.model_rel_error, again.report.model_max_abs_error


def without(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt, keys: frozenset):
    """The result of the passes run again applying exactly what `final` applied less the sites
    `keys`, recorded in final's report (every site as it was decided, `keys` now rolled back, the
    new whole-model error); None when that result fails its check."""
    again = _rebuilt(run, options, final, keys)
    if again is None:
        return None
    _adopt(final, again, keys, SLOWER)
    return again.result


def refuted(comparison) -> bool:
    """The whole optimized model measured slower than the original beyond the noise: enough pairs,
    and the interval of original / optimized lies wholly below 1. Then "it only removes work" is a
    hypothesis the measurement refuted (a fold that drops a LayerNorm's affine picks torch's slower
    kernel; a re-captured graph loses a fast path), and the kinds applied are timed as groups."""
    return comparison is not None and comparison.pairs >= DECISIVE_PAIRS and comparison.high < 1.0


def drop_refuted_kinds(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt, result,
                       timed, runner: Callable):
    """The whole model measured slower than the original (refuted): find the kinds of rewrite
    responsible, as the retry ladder does, by groups. For each kind applied (in pipeline order),
    the model without that kind's sites is rebuilt (checked as ever) and timed against the
    current result; the kind is rolled back when the model runs faster without it (median of the
    paired ratios above 1: the whole model is already known to be slower, so a kind that shows no
    gain has nothing to keep it). Then the result is timed against the original once more; if it
    is still slower beyond the noise, every rewrite is rolled back and None is returned (the
    caller returns the original). `runner(model)` is a callable running a result on timed's
    inputs. Returns the result to return, recorded in final's report."""
    original, _, inputs = timed
    model, report = options.cost_model, final.report
    order = {kind: i for i, kind in enumerate(RULES)}
    kinds: dict[str, list[str]] = {}
    for site in sorted(report.applied, key=lambda s: order.get(s.kind, len(order))):
        kinds.setdefault(site.kind, []).append(site.key)
    notes = [f"the whole model measured slower than the original ({report.model_measured_ci[0]:.2f}x, interval "
             f"wholly below 1): timing the {len(kinds)} kind(s) applied as groups ({', '.join(kinds)})"]
    current = runner(result)
    for kind, keys in kinds.items():
        again = _rebuilt(run, options, final, frozenset(keys))
        if again is None:
            notes.append(f"{kind}: the model without its {len(keys)} site(s) failed its check; kept")
            continue
        candidate = runner(again.result)
        gain = model.compare_models(current, candidate, inputs, options.min_speedup)
        if gain.speedup > 1.0:
            _adopt(final, again, keys, REFUTED.format(kind=kind, timing=gain.describe()))
            result, current = again.result, candidate
            notes.append(f"{kind}: the model ran {gain.describe()} faster without its {len(keys)} site(s): rolled back")
        else:
            notes.append(f"{kind}: the model ran {gain.describe()} without its {len(keys)} site(s): kept")
    last = model.compare_models(original, current, inputs, options.min_speedup)
    _record_timing(report, last)
    report.notes.extend(notes)
    if refuted(last) and report.applied:
        report.record_rollback(dict.fromkeys((s.key for s in report.applied), STILL_SLOWER),
                               verdict=f"still measured slower than the original ({last.describe()}): "
                                       "returned the original model unchanged")
        return None
    report.notes.append(f"the result against the original: {last.describe()}")
    return result


# Below this per-call time the order of the calls in a pair, allocation and cache state outweigh a
# model's work: a 20 µs test model measured 1.23x (95% CI 1.17-1.24) faster without a merge that
# turns three convs into one. Refuting "removes work" needs a model that takes real time.
REFUTE_MIN_S = 1e-3

REFUTED = ("rolled back: the whole model measured slower than the original, and faster without the {kind} "
           "sites ({timing}); they remove work on paper, not in time here")
STILL_SLOWER = "rolled back: the whole model still measured slower than the original with the rest of the rewrites"


def after_whole_model_timing(run: Callable[[RewriteOptions], Attempt], options: RewriteOptions, final: Attempt,
                             result, timed=None, runtime: str = "", runner: Callable | None = None):
    """With the measured cost model, the result to return, recorded in final's report, or None
    (return the original). When the whole model measured slower than the original by more than
    the margin, beyond the noise, the sites applied on a timing are rolled back first (None when
    the model without them fails its check). When it is then (still) slower beyond the noise at
    all and `runner(model)` can run a rebuilt result, the kinds applied are timed as groups
    (drop_refuted_kinds)."""
    slower, comparison = finish_measured(final.report, options, timed, runtime)
    if slower:
        rebuilt = without(run, options, final, slower)
        if rebuilt is None:
            final.report.record_rollback(dict.fromkeys(slower, SLOWER), verdict="the model without the timed sites "
                                         "failed its check: returned the original model unchanged")
            return None
        result = rebuilt
        if runner is None or not final.report.applied:
            return result
        comparison = options.cost_model.compare_models(timed[0], runner(result), timed[2], options.min_speedup)
        _record_timing(final.report, comparison)
    if runner is None or not refuted(comparison) or not final.report.applied:
        return result
    if comparison.before_s < REFUTE_MIN_S:
        final.report.notes.append(f"the whole model runs in {comparison.before_s * 1e6:.0f} µs, too short for a "
                                  "wall-clock timing to refute rewrites that remove work: all stay")
        return result
    return drop_refuted_kinds(run, options, final, result, timed, runner)
