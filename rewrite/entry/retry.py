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
from ..options import RewriteOptions, RunState
from ..report import ModelCheck, RunFacts
from ..rules import RULES

MAX_BISECTION_RUNS = 24
# the bisection (and the folds-only retry after it) stops once it has taken this many times the
# first run's wall time, or BISECTION_MAX_S: a model that cannot be satisfied comes back
# unchanged in bounded time
BISECTION_TIME_FACTOR = 4.0
BISECTION_MAX_S = 10.0
ROLLED_BACK = "rolled back: with this site applied the whole model missed its tolerance (found by bisection)"
KEPT_FAILING = "rolled back: the whole-model check kept failing"


@dataclass(frozen=True)
class Attempt:
    """One run of the passes and the whole-model check on its result: what the run found (`facts`)
    and what the check measured (`check`). From rewrite_checked also what the retries decided:
    `rolled_back` maps the keys of the sites rolled back to the reason, `history` says what was
    tried, `verdict` how it ended. The driver (rewrite/entry/driver.py) builds the report from it."""

    result: object           # the optimized model (format-specific)
    facts: RunFacts
    check: ModelCheck
    passed: bool
    why: str = ""            # why the whole-model check failed, e.g. "rel error 3.1e-02 > 1.0e-04"
    rolled_back: dict = field(default_factory=dict)
    history: tuple = ()
    verdict: str = ""

    @property
    def notes(self) -> list:
        """The run's notes, then the whole-model check's."""
        return list(self.facts.notes) + list(self.check.notes)

    def applied(self, rolled_back=()) -> list:
        """The keys of the sites this run applied, less `rolled_back` (and its own rollbacks)."""
        gone = set(rolled_back) | set(self.rolled_back)
        return [s.key for s in self.facts.applied if s.key not in gone]


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


def rewrite_checked(run: Callable[[RunState], Attempt], state: RunState = RunState(),
                    say: Callable[[str], None] = lambda message: None) -> Attempt:
    """Run the passes; on a failed whole-model check roll back the culprits only, else fewer rewrites.

    Returns the first attempt that passed, or the last one tried (passed=False) with every
    applied site in its rolled_back: the caller then returns or refuses the original."""
    started = time.perf_counter()
    first = run(state)
    if first.passed:
        return first
    one_run = time.perf_counter() - started
    budget = min(BISECTION_TIME_FACTOR * one_run, BISECTION_MAX_S)
    deadline = time.perf_counter() + budget
    failure = f"whole-model check failed ({first.why})"
    history = list(first.notes)
    applied = first.applied()
    baseline, tolerance = first.check.baseline_error, first.check.tolerance
    if baseline is not None and tolerance is not None and baseline > tolerance:
        history.append(f"{failure}; the original model's own error ({baseline:.1e}) is over the tolerance "
                       f"{tolerance:.1e}: no rewrite can pass it, so none is retried")
        deadline, applied = 0.0, []
    if applied:
        say(f"{failure}; bisecting over {len(applied)} applied sites")
        unchecked = dataclasses.replace(state, site_checks=False)

        def fails(keep: frozenset) -> bool:
            return not run(dataclasses.replace(unchecked, only_sites=keep)).passed

        bisect_start = time.perf_counter()
        culprits, runs = find_culprits(applied, fails, deadline=deadline)
        if culprits is not None:
            final = run(dataclasses.replace(state.skipping(culprits), only_sites=frozenset(applied) - frozenset(culprits)))
            note = (f"{failure}; bisection over the {len(applied)} applied sites ({runs} re-runs) rolled back "
                    f"{len(culprits)}: {', '.join(culprits[:8])}{' ...' if len(culprits) > 8 else ''}")
            if final.passed:
                return dataclasses.replace(final, rolled_back=dict.fromkeys(culprits, ROLLED_BACK),
                                           history=tuple(history + [note]), verdict=f"passed the whole-model check "
                                           f"with {len(culprits)} site(s) rolled back")
            history += [note, f"the model without those sites still failed ({final.why})"]
        else:
            took = time.perf_counter() - bisect_start
            limit = ("its time budget" if runs < MAX_BISECTION_RUNS else f"its cap of {MAX_BISECTION_RUNS} re-runs")
            history.append(f"{failure}; bisection found no culprit set within {runs} re-runs ({took:.1f} s; stopped "
                           f"at {limit}: {budget:.1f} s, the lesser of {BISECTION_TIME_FACTOR:g}x the first run's "
                           f"{one_run:.1f} s and {BISECTION_MAX_S:g} s, or {MAX_BISECTION_RUNS} re-runs)")
    # the conservative ladder: the conservative rules' sites only (while time is left), then nothing
    applied_sites = first.facts.applied
    skip = {s.key for s in applied_sites if not RULES[s.kind].conservative}
    if skip and len(skip) < len(applied_sites):
        if time.perf_counter() > deadline:
            history.append("not retried with the folds only: the retries' time budget is spent")
        else:
            say("retrying without the non-fold rewrites")
            history.append("retrying without the non-fold rewrites")
            attempt = run(state.skipping(skip))
            if attempt.passed:
                return dataclasses.replace(attempt, history=tuple(history),
                                           verdict="passed the whole-model check with the folds only")
            history.append(f"whole-model check failed ({attempt.why})")
    say("retrying without any rewrite")
    history.append("retrying without any rewrite")
    rolled_back = {s.key: KEPT_FAILING for s in applied_sites}
    # nothing applied: the passes are not run again (only_sites=∅), the first run's sites are its record
    bare = run(dataclasses.replace(state, only_sites=frozenset()))
    bare = dataclasses.replace(bare, facts=dataclasses.replace(bare.facts, sites=first.facts.sites))
    if bare.passed:
        return dataclasses.replace(bare, rolled_back=rolled_back, history=tuple(history),
                                   verdict="passed the whole-model check with every rewrite rolled back")
    history.append(f"whole-model check failed ({bare.why})")
    return dataclasses.replace(bare, rolled_back=rolled_back, history=tuple(history))


@dataclass
class Timed:
    """What the whole-model timing decided (after_whole_model_timing), for the report: the result
    to return (None: the original), the sites it rolled back and why, its notes, the last
    whole-model Comparison, and the whole-model check of a rebuilt result (None: the final
    attempt's stands)."""

    result: object
    rolled_back: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    timing: object = None
    check: ModelCheck | None = None


def _rebuilt(run: Callable[[RunState], Attempt], state: RunState, final: Attempt, decided: Timed, keys: frozenset):
    """The passes run again applying exactly what `final` applied, less what was rolled back since
    and the sites `keys`: the Attempt, or None when it fails its check."""
    applied = frozenset(final.applied(decided.rolled_back))
    again = run(dataclasses.replace(state.skipping(keys | frozenset(final.rolled_back) | frozenset(decided.rolled_back)),
                                    only_sites=applied - keys))
    return again if again.passed else None


def _adopt(final: Attempt, decided: Timed, again: Attempt, keys, reason: str) -> None:
    """`keys` are rolled back for `reason`, and the rebuilt model's errors are the check's."""
    decided.rolled_back.update(dict.fromkeys(keys, reason))
    check = decided.check or final.check
    decided.check = dataclasses.replace(check, rel_error=again.check.rel_error, max_abs_error=again.check.max_abs_error)
    decided.result = again.result


def refuted(comparison) -> bool:
    """The whole optimized model measured slower than the original beyond the noise: enough pairs,
    and the interval of original / optimized lies wholly below 1. Then "it only removes work" is a
    hypothesis the measurement refuted (a fold that drops a LayerNorm's affine picks torch's slower
    kernel; a re-captured graph loses a fast path), and the kinds applied are timed as groups."""
    return comparison is not None and comparison.pairs >= DECISIVE_PAIRS and comparison.high < 1.0


def drop_refuted_kinds(run: Callable[[RunState], Attempt], options: RewriteOptions, state: RunState, final: Attempt,
                       decided: Timed, timed, runner: Callable) -> None:
    """The whole model measured slower than the original (refuted): find the kinds of rewrite
    responsible, as the retry ladder does, by groups. For each kind applied (in pipeline order),
    the model without that kind's sites is rebuilt (checked as ever) and timed against the
    current result; the kind is rolled back when the model runs faster without it (median of the
    paired ratios above 1: the whole model is already known to be slower, so a kind that shows no
    gain has nothing to keep it). Then the result is timed against the original once more; if it
    is still slower beyond the noise, every rewrite is rolled back and decided.result is None
    (the caller returns the original). `runner(model)` is a callable running a result on timed's
    inputs."""
    original, _, inputs = timed
    model = options.cost_model
    order = {kind: i for i, kind in enumerate(RULES)}
    kinds: dict[str, list[str]] = {}
    still = set(final.applied(decided.rolled_back))
    for site in sorted((s for s in final.facts.applied if s.key in still), key=lambda s: order.get(s.kind, len(order))):
        kinds.setdefault(site.kind, []).append(site.key)
    notes = [f"the whole model measured slower than the original ({decided.timing.speedup:.2f}x, interval "
             f"wholly below 1): timing the {len(kinds)} kind(s) applied as groups ({', '.join(kinds)})"]
    current = runner(decided.result)
    for kind, keys in kinds.items():
        again = _rebuilt(run, state, final, decided, frozenset(keys))
        if again is None:
            notes.append(f"{kind}: the model without its {len(keys)} site(s) failed its check; kept")
            continue
        candidate = runner(again.result)
        gain = model.compare_models(current, candidate, inputs, options.min_speedup)
        if gain.speedup > 1.0:
            _adopt(final, decided, again, keys, REFUTED.format(kind=kind, timing=gain.describe()))
            current = candidate
            notes.append(f"{kind}: the model ran {gain.describe()} faster without its {len(keys)} site(s): rolled back")
        else:
            notes.append(f"{kind}: the model ran {gain.describe()} without its {len(keys)} site(s): kept")
    last = model.compare_models(original, current, inputs, options.min_speedup)
    decided.timing = last
    decided.notes.extend(notes)
    left = final.applied(decided.rolled_back)
    if refuted(last) and left:
        decided.rolled_back.update(dict.fromkeys(left, STILL_SLOWER))
        decided.notes.append(f"still measured slower than the original ({last.describe()}): returned the original "
                             "model unchanged")
        decided.result = None
        return
    decided.notes.append(f"the result against the original: {last.describe()}")


# Below this per-call time the order of the calls in a pair, allocation and cache state outweigh a
# model's work: a 20 µs test model measured 1.23x (95% CI 1.17-1.24) faster without a merge that
# turns three convs into one. Refuting "removes work" needs a model that takes real time.
REFUTE_MIN_S = 1e-3

REFUTED = ("rolled back: the whole model measured slower than the original, and faster without the {kind} "
           "sites ({timing}); they remove work on paper, not in time here")
STILL_SLOWER = "rolled back: the whole model still measured slower than the original with the rest of the rewrites"


def after_whole_model_timing(run: Callable[[RunState], Attempt], options: RewriteOptions, state: RunState,
                             final: Attempt, result, timed=None, runtime: str = "",
                             runner: Callable | None = None) -> Timed:
    """With the measured cost model, what to return after the whole-model check: the cost model's
    note, and when `timed` = (original, optimized, inputs) is given, the whole model timed both
    ways. When it measured slower than the original by more than the margin, beyond the noise
    (measured_slower), the sites applied on a timing are rolled back first (the original is
    returned when the model without them fails its check); sites that only remove work (folds,
    merges into a conv shaped like a branch; never timed) stay. When it is then (still) slower
    beyond the noise at all and `runner(model)` can run a rebuilt result, the kinds applied are
    timed as groups (drop_refuted_kinds)."""
    note, comparison = options.cost_model.finish(timed, options.min_speedup, runtime)
    decided = Timed(result, notes=[note], timing=comparison)
    slower = measured_slower(comparison, options.min_speedup)
    if slower:
        applied = set(final.applied())
        keys = frozenset(s.key for s in final.facts.applied if s.key in applied and s.measured_s is not None)
        decided.notes.append(slower + (f": the {len(keys)} site(s) applied on a timing are rolled back" if keys else ""))
    if slower and keys:
        again = _rebuilt(run, state, final, decided, keys)
        if again is None:
            decided.rolled_back.update(dict.fromkeys(keys, SLOWER))
            decided.notes.append("the model without the timed sites failed its check: returned the original model "
                                 "unchanged")
            decided.result = None
            return decided
        _adopt(final, decided, again, keys, SLOWER)
        if runner is None or not final.applied(decided.rolled_back):
            return decided
        decided.timing = options.cost_model.compare_models(timed[0], runner(decided.result), timed[2],
                                                           options.min_speedup)
    if runner is None or not refuted(decided.timing) or not final.applied(decided.rolled_back):
        return decided
    if decided.timing.before_s < REFUTE_MIN_S:
        decided.notes.append(f"the whole model runs in {decided.timing.before_s * 1e6:.0f} µs, too short for a "
                             "wall-clock timing to refute rewrites that remove work: all stay")
        return decided
    drop_refuted_kinds(run, options, state, final, decided, timed, runner)
    return decided
