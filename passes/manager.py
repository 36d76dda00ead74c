"""The pass manager both front ends share: fixed order, bounded fixed point, verify-then-apply.

For each rule in pipeline order (rewrite.rules.RULES: merge → fold → factorize → reverse → fuse),
sweep: build the adapter's view of the graph, run the rule's matcher, ask its planner for a Plan
or a Decline, and hand a Plan to the adapter, which lowers it into its format; the site check
(passes/verify.py) judges it on the activation captured at the site, and it is spliced in only
if it passes. A pass stops when a sweep applies nothing, or after MAX_SWEEPS. Every site
considered becomes exactly one `Site` record, built in one place (`_record`) once its outcome is
known; run_passes returns the records and notes, and the front end puts them in its Report.

What the manager needs from a front end is the Adapter protocol (passes/protocol.py).

With a measured cost model (options.measured), a site of a timed rule (Rule.timed) that passed
its check is then timed both ways (rewrite.measure.compare) on random inputs of the full shapes
that reach it, and applied only if it is at least min_speedup times faster beyond the noise (the
confidence interval of its speedup lies above 1; an inconclusive timing keeps the original);
rules do not decline such sites on a prediction. A plan that only removes work (a fold; a merge into a conv shaped like one
of its branches: Plan.removes_work) is not timed, since timing noise could only decline it wrongly.
Re-runs of the whole-model retry find the same timings in the cost model's cache.

A Decline with `until` set is provisional: it holds only while that later pass is still to run
(fold keeps a pad the fused kernel cannot absorb, for the fuse pass). Once that pass has run, its
rule is swept again over those sites alone, on the graph as it is then, and the decline's `then`
plan is applied where the site is still there; the outcome replaces the provisional record; a
site whose ops a rewrite has since consumed (the conv fused) keeps its record. So a pad kept for
a fuse that did not happen is still absorbed. Which passes have run is the manager's to know,
never the planners'.

The driver's RunState (rewrite.options) says which sites to roll back (skip_sites), which alone
to apply (only_sites), and whether sites are checked on the spot; the user's options never
change between runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from rewrite.ir import chain_shapes, channels_last_input
from rewrite.numerics import rms_rel_error, within
from rewrite.report import Site, site_key
from rewrite.options import RewriteOptions, RunState
from rewrite.rules import RULES, Decline, Match, Plan, Rule

from .protocol import Adapter
from .verify import SiteCheck, check_site

MAX_SWEEPS = 4
PROGRESS_MIN_SITES = 50    # a sweep over more sites than this reports each one (a verbose run always does)
NOT_IN_CHECKED_SET = ("not applied: this site appeared only once other sites were rolled back, after the "
                      "whole-model check; it was not part of the set that passed")
SKIPPED_BY_RETRY = "rolled back: the whole-model check failed with it applied"


@dataclass
class Swept:
    """What run_passes did: a Site per site considered, and notes for the report."""

    sites: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    covered: dict = field(default_factory=dict)   # id() → format node, of every site's ops, any outcome (the
                                                  # node held, so that its id is not reused)


@dataclass(frozen=True)
class Timing:
    """A site timed both ways: [original, rewritten] seconds predicted, and the measured
    comparison (rewrite.measure.Comparison), or taken from the timing cache."""

    predicted_s: list
    measured: object
    cached: bool


NOTHING_TO_APPLY = "no pass was run: no site was to be applied"


def run_passes(adapter: Adapter, options: RewriteOptions, dtype: torch.dtype, state: RunState = RunState(),
               verbose: bool = False) -> Swept:
    """Run options.passes (resolved options: a concrete target and cost model) over the adapter's
    graph, as `state` says. Each site is announced through adapter.progress when verbose or the
    sweep is long."""
    visited: dict = {}     # (kind, id(head node)) → head node, which keeps the id unique
    swept = Swept()
    if state.only_sites is not None and not state.only_sites:
        swept.notes.append(NOTHING_TO_APPLY)   # the retries' last step: no site to apply, no graph to read
        return swept
    held: dict = {}        # pass kind → {id(head node): (rule, head node, index in swept.sites)} waiting on it
    run = []
    for kind in options.passes:
        rule = RULES[kind]
        skipped = rule.skipped(options)
        if skipped:
            swept.notes.append(skipped)
            continue
        done = frozenset(run)
        adapter.progress(f"{kind} pass")
        for _ in range(MAX_SWEEPS):
            view = adapter.view()
            applied = 0
            matches = list(rule.matches(view))
            if rule.statistics is not None and options.calibration is not None:
                applied = _fitted_sweep(adapter, view, matches, rule, options, state, dtype, swept, visited)
                if not applied:
                    break
                continue
            per_site = verbose or len(matches) > PROGRESS_MIN_SITES
            for i, match in _progress_bar(enumerate(matches, 1), len(matches), rule, options):
                head = match.ops[0].nodes[0]
                if not adapter.live(match) or (kind, id(head)) in visited:
                    continue
                visited[(kind, id(head))] = head
                if per_site:
                    adapter.progress(f"[{i}/{len(matches)}] {kind} {match.name}")
                site, until = _site(adapter, view, match, rule, options, state, dtype, done)
                swept.covered.update((id(node), node) for op in match.ops for node in op.nodes)
                if until is not None:
                    held.setdefault(until, {})[id(head)] = (rule, head, len(swept.sites))
                swept.sites.append(site)
                applied += site.status == "applied"
            if not applied:
                break
        run.append(kind)
        _revisit(adapter, swept, held.pop(kind, {}), options, state, dtype, frozenset(run))
    for waiting in held.values():    # provisional declines on a pass that did not run: they held for nothing
        _revisit(adapter, swept, waiting, options, state, dtype, frozenset(run) | set(held))
    swept.sites.extend(left_over(adapter, adapter.view(), swept.covered, run))
    return swept


@dataclass
class _Fitted:
    """A site of an approximate rule that passed its check (and timing), not yet in the graph."""

    name: str
    match: Match
    plan: Plan
    lowered: object
    reason: str
    check: SiteCheck | None
    timing: Timing | None
    predicted_before_s: float

    @property
    def saved_per_error(self) -> float:
        """Seconds saved (measured where timed, else predicted) per unit of the fitted held-out error."""
        if self.timing is not None and self.timing.measured is not None:
            saved = self.timing.measured.before_s - self.timing.measured.after_s
        else:
            saved = self.predicted_before_s * (1.0 - 1.0 / max(self.plan.predicted_speedup, 1e-9))
        return saved / max(self.plan.fitted_error or 0.0, 1e-12)


def _fitted_sweep(adapter, view, matches: list, rule: Rule, options, state: RunState, dtype, swept: Swept,
                  visited: dict) -> int:
    """One sweep of a rule whose plans are fitted on calibration samples (Rule.statistics): the
    samples' statistics streamed to the planner, every site planned, lowered, checked and timed
    as any other, then kept by `_choose` against the budget before any enters the graph. Returns
    the number applied."""
    fresh = []
    for match in matches:
        head = match.ops[0].nodes[0]
        if adapter.live(match) and (rule.kind, id(head)) not in visited:
            visited[(rule.kind, id(head))] = head
            swept.covered.update((id(node), node) for op in match.ops for node in op.nodes)
            fresh.append(match)
    started = time.perf_counter()
    _stream_statistics(adapter, rule, fresh, options.calibration)
    streamed = time.perf_counter()
    records, fitted = [], []
    for match in fresh:
        name = adapter.site_name(match)
        shape = None if match.reason else _as_conv_shape(view.shape(match.input), match)
        plan = None if match.reason or shape is None else rule.plan(match, tuple(shape), dtype, options)
        if plan is None or isinstance(plan, Decline):
            why = match.reason or (plan.reason if plan is not None else
                                   "the shape of the activation reaching this site is unknown")
            records.append(_record(name, match, "declined", why, plan))
            continue
        status, reason, check, timing, lowered = _try(adapter, name, match, plan, rule, options, state, dtype)
        if status != "applied":
            records.append(_record(name, match, status, reason, plan, check, timing))
            continue
        before_s = options.cost_model.chain_time(plan.before, tuple(shape), dtype)
        fitted.append(_Fitted(name, match, plan, lowered, reason, check, timing, before_s))
        records.append(fitted[-1])
    planned = time.perf_counter()
    kept = _choose(adapter, fitted, options)
    if fresh:
        swept.notes.append(f"{rule.kind}: {len(fresh)} site(s); calibration streamed in {streamed - started:.1f} s, "
                           f"fitted, checked and timed in {planned - streamed:.1f} s, {len(kept)} of {len(fitted)} "
                           f"chosen against the held-out budget in {time.perf_counter() - planned:.1f} s")
    for i, item in enumerate(records):
        if not isinstance(item, _Fitted):
            continue
        if item in kept:
            adapter.commit(item.match, item.plan, item.lowered)
            records[i] = _record(item.name, item.match, "applied", item.reason, item.plan, item.check, item.timing)
        else:
            adapter.discard(item.lowered)
            records[i] = _record(item.name, item.match, "declined", item.reason, item.plan, item.check, item.timing)
    swept.sites.extend(records)
    return len(kept)


def _choose(adapter, fitted: list, options) -> list:
    """The fitted sites to apply: greedily, in order of time saved per unit of fitted error, each
    kept while the whole model's relative error on the held-out samples (rms_rel_error against
    the graph as it is before any of them) stays within options.approximate. Per-layer error is
    not whole-model error, so each step runs the model: the kept sites and the candidate with
    their fitted weights (adapter.outputs), no graph edit. Sets each site's reason."""
    calibration = options.calibration
    if not fitted:
        return []
    if "reference" not in calibration.cache:
        calibration.cache["reference"] = adapter.outputs(calibration.held, [])
    reference = calibration.cache["reference"]
    budget, kept = options.approximate, []
    adapter.progress(f"choosing among {len(fitted)} fitted sites on {len(calibration.held)} held-out samples")
    for item in sorted(fitted, key=lambda f: f.saved_per_error, reverse=True):
        outputs = adapter.outputs(calibration.held, [(f.match, f.plan.reference[0]) for f in kept + [item]])
        error = rms_rel_error((o, r) for out, ref in zip(outputs, reference) for o, r in zip(out, ref)
                              if _is_float(r))
        if within(error, budget):
            kept.append(item)
            item.reason += f"; the whole model with it and the {len(kept) - 1} kept before: held-out error {error:.1e}"
        else:
            item.reason = (f"{item.reason}; not kept: with it the model's held-out error would be {error:.1e} > the "
                           f"budget {budget:g} (sites saving more time per unit of fitted error come first)")
    return kept


def _is_float(x) -> bool:
    return (x.is_floating_point() if isinstance(x, torch.Tensor) else
            getattr(getattr(x, "dtype", None), "kind", "") == "f")


def _stream_statistics(adapter, rule: Rule, matches: list, calibration) -> None:
    """Give each undeclined match the pair (fit, held-out) of its rule's statistics over the
    calibration samples (Rule.statistics), as match.parts: the samples run through the graph once
    per split, each activation a site reads added to every accumulator that reads it. Statistics
    are cached per site across the re-runs of one optimize call."""
    cache = calibration.cache
    wanted = []
    for m in matches:
        if m.reason:
            continue
        key = (rule.kind, adapter.site_name(m))
        if key in cache:
            m.parts = cache[key]
        else:
            m.parts = cache[key] = (rule.statistics(m), rule.statistics(m))
            wanted.append(m)
    if not wanted:
        return
    adapter.progress(f"{rule.kind}: streaming {len(calibration.fit) + len(calibration.held)} calibration samples")
    for split, samples in enumerate((calibration.fit, calibration.held)):
        readers: dict = {}
        for m in wanted:
            readers.setdefault(m.input, []).append(m.parts[split])

        def each(value, activation, readers=readers):
            for accumulator in readers.get(value, ()):
                accumulator.add(activation)

        adapter.stream(list(readers), samples, each)


def left_over(adapter, view, covered: dict, run: list) -> list:
    """A "left" record for each op of the final view that a rule owns (Rule.owns: a BatchNorm, an
    affine, a LayerNorm's affine) and that no site of any rule took up: its reason says what stands
    around it (the kinds of the op before it and of its readers), or that its pass did not run."""
    owners = [rule for rule in RULES.values() if rule.owns is not None]
    out = []
    for op in view.ops:
        rule = next((r for r in owners if r.owns(op)), None)
        if rule is None or any(id(node) in covered for node in op.nodes):
            continue
        producer = view.producer(op.inputs[0]) if op.inputs else None
        readers = view.readers(op.output)
        around = (f"after {producer.describe() if producer is not None else 'a graph input'}, "
                  + (f"{readers} readers: " if readers > 1 else "read by ") + view.describe_readers(op.output))
        reason = f"no rule matches: {around}" if rule.kind in run else f"the {rule.kind} pass was not run ({around})"
        if op.reason:
            reason += f"; {op.reason}"
        match = Match(rule.kind, op.name, [op])
        out.append(Site(adapter.site_name(match), rule.kind, "left", reason, before=op.describe()))
    return out


def _revisit(adapter, swept: Swept, waiting: dict, options, state: RunState, dtype, done: frozenset) -> None:
    """Plan again the sites declined until a pass that has now run (Decline.until; `done`: the
    passes run, or not to be waited for), each rule's sites in one sweep of its matcher over the
    graph as it is now; the new outcome replaces the site's provisional record."""
    by_rule: dict = {}
    for rule, head, index in waiting.values():
        by_rule.setdefault(rule.kind, (rule, {}))[1][id(head)] = index
    for rule, indices in by_rule.values():
        view = adapter.view()
        for match in list(rule.matches(view)):
            index = indices.pop(id(match.ops[0].nodes[0]), None)
            if index is None or not adapter.live(match):
                continue
            site, _ = _site(adapter, view, match, rule, options, state, dtype, done)
            swept.sites[index] = site


def _progress_bar(items, total: int, rule: Rule, options):
    """A tqdm bar over a sweep's sites while they are timed, on a terminal only (and if tqdm is there)."""
    if not options.measured or not rule.timed:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=f"{rule.kind}: timing sites", unit="site", leave=False, disable=None)


def _site(adapter, view, match: Match, rule: Rule, options, state: RunState, dtype,
          done: frozenset) -> tuple[Site, str | None]:
    """(the site's record, the pass a provisional decline waits on or None); `done`: the passes
    that have run (a decline until one of them takes its `then` plan)."""
    name = adapter.site_name(match)
    if match.reason:
        return _record(name, match, "declined", match.reason), None
    shape = _as_conv_shape(view.shape(match.input), match)
    if shape is None or len(shape) != 4:
        return _record(name, match, "declined", "the shape of the activation reaching this site is unknown"), None
    plan = rule.plan(match, tuple(shape), dtype, options)
    if isinstance(plan, Decline) and plan.until is not None and plan.until in done:
        plan = plan.then if plan.then is not None else replace(plan, until=None)
    if isinstance(plan, Decline):
        return _record(name, match, "declined", plan.reason, plan), plan.until
    stand_ins = _stand_ins(view, match, plan)
    if isinstance(stand_ins, str):
        return _record(name, match, "declined", stand_ins, plan), None
    plan.stand_ins = stand_ins
    status, reason, check, timing = _apply(adapter, name, match, plan, rule, options, state, dtype)
    return _record(name, match, status, reason, plan, check, timing), None


def _stand_ins(view, match: Match, plan: Plan) -> dict | str:
    """For each value the site removes (the output of every op but the last) whose shape an op
    outside the site reads (view.shape_readers: torch's reshape_as, ONNX Shape): the index of a
    layer of plan.after producing a value of that shape, −1 for the site's input. A string: the
    reason no such value exists."""
    inside = {id(op) for op in match.ops}
    stand_ins, shapes = {}, None
    for op in match.ops[:-1]:
        readers = [r for r in view.shape_readers(op.output) if id(r) not in inside]
        if not readers:
            continue
        want, given = view.shape(op.output), view.shape(match.input)
        if shapes is None:
            shapes = chain_shapes(plan.after, given) if given is not None else []
        found = [i for i, s in enumerate(shapes) if want is not None and s == want]
        found += [-1] if want is not None and given == want else []
        if not found:
            return (f"{readers[0].describe()} reads the shape of the {op.describe()}'s output, and no value of "
                    "the rewritten chain has that shape")
        stand_ins[op.output] = found[0]
    return stand_ins


def _record(name: str, match: Match, status: str, reason: str, plan: Plan | Decline | None = None,
            check: SiteCheck | None = None, timing: Timing | None = None) -> Site:
    """The one place a Site is built, once its outcome is known."""
    before = match.before if plan is None else _named(match, plan.describe_before)
    after = _named(match, plan.describe_after) if isinstance(plan, Plan) else ""
    measured = timing.measured if timing else None
    return Site(name, match.kind, status, reason, plan.predicted_speedup if plan is not None else None,
                check.error if check is not None else None, before, after,
                timing.predicted_s if timing else None,
                [measured.before_s, measured.after_s] if measured else None, bool(timing and timing.cached),
                [measured.speedup, measured.low, measured.high, measured.pairs] if measured else None,
                getattr(plan, "fitted_error", None))


def _as_conv_shape(shape, match: Match):
    """A linear's [N, C] is a 1x1 conv's [N, C, 1, 1] to the rules and the cost model; a chain that
    reads channels from the last axis of [B, …, C] sees [B, C, Π…, 1]."""
    if shape is not None and match.layers and channels_last_input(match.layers[0]):
        return (shape[0], shape[-1], math.prod(shape[1:-1]), 1)
    return (*shape, 1, 1) if shape is not None and len(shape) == 2 and match.layout == "nc" else shape


def _named(match: Match, chain: str) -> str:
    """A chain's description in the graph's terms: the 1x1 convs of a linear site are linears."""
    return chain.replace("pw ", "linear ") if match.layout == "nc" else chain


def _apply(adapter, name: str, match: Match, plan: Plan, rule: Rule, options, state: RunState, dtype):
    """Lower, check, time and commit a plan: (status, reason, check, timing)."""
    status, reason, check, timing, lowered = _try(adapter, name, match, plan, rule, options, state, dtype)
    if status == "applied":
        adapter.commit(match, plan, lowered)
    return status, reason, check, timing


def _try(adapter, name: str, match: Match, plan: Plan, rule: Rule, options, state: RunState, dtype):
    """Lower, check and time a plan: (status, reason, check, timing, the lowered replacement, to
    commit when the status is "applied"; a replacement that failed is discarded here)."""
    key = site_key(plan.kind, name)
    if key in state.skip_sites:
        return "rolled_back", SKIPPED_BY_RETRY, None, None, None
    if state.only_sites is not None and key not in state.only_sites:
        return "declined", NOT_IN_CHECKED_SET, None, None, None
    lowered = adapter.lower(match, plan)
    check = timing = note = None
    if options.check and state.site_checks:
        inputs = [adapter.value(v) for v in match.runtime_inputs]
        if any(x is None for x in inputs):
            adapter.discard(lowered)
            return "declined", "no activation reached this site with the example inputs", None, None, None
        check = _check(adapter, match, plan, lowered, options, dtype, inputs)
        if not check.passed:
            adapter.discard(lowered)
            return check.status, check.reason, check, None, None
        if options.measured and rule.timed and not plan.removes_work:
            if plan.alternatives:
                lowered, check = _fastest_form(adapter, match, plan, lowered, check, options, dtype, inputs)
            timing = _time(adapter, match, plan, lowered, options, dtype)
            keep, why = _timed_choice(timing, plan, options.min_speedup)
            if not keep:
                adapter.discard(lowered)
                return "declined", why, check, timing, None
            note = why
    reason = plan.note + (f"; {note}" if note else "")   # read after lowering: the lowering may say what it built
    return "applied", reason, check, timing, lowered


def _check(adapter, match: Match, plan: Plan, lowered, options, dtype, inputs: list) -> SiteCheck:
    """The site check of `lowered` (passes/verify.py); a site that cannot run on its own fails it."""
    try:
        return check_site(plan, dtype, options, inputs, adapter.original(match), adapter.reference(match),
                          adapter.candidate(lowered, match), reference_is_lifted=adapter.reference_is_lifted)
    except Exception as exc:  # noqa: BLE001 - a site that cannot run on its own is left alone
        return SiteCheck(False, None, "rolled_back", f"the site could not be checked ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")


def _fastest_form(adapter, match: Match, plan: Plan, lowered, check: SiteCheck, options, dtype, inputs: list):
    """Of plan.after and each of plan.alternatives (chains computing the same function), the one
    that runs fastest where the model runs: each alternative is lowered and checked like the
    plan, then timed against the current choice (paired; the alternative is kept when its median
    per-pair speedup is above 1, else it is discarded). Sets plan.after to the form kept, says so
    in plan.note, and returns its lowering and its site check (`check`: the plan's own form's)."""
    model = options.cost_model
    for alternative in plan.alternatives:
        other = replace(plan, after=list(alternative), alternatives=(), note="")
        candidate = adapter.lower(match, other)
        checked = _check(adapter, match, other, candidate, options, dtype, inputs)
        if not checked.passed:
            adapter.discard(candidate)
            continue
        _, current, full_inputs = adapter.timed(match, lowered)
        _, contender, _ = adapter.timed(match, candidate)
        shapes = tuple(tuple(x.shape) for x in full_inputs)
        key = (adapter.runtime, str(dtype).replace("torch.", ""), plan.kind, "form " + plan.describe_after,
               "form " + other.describe_after, shapes)
        measured, cached = model.times(key, current, contender, full_inputs, 1.0)
        said = (f"{other.describe_after} against {plan.describe_after}: measured {measured.describe()}"
                + (" (timing cache)" if cached else ""))
        if measured.speedup > 1.0:
            adapter.discard(lowered)
            lowered, check, plan.after = candidate, checked, list(alternative)
            plan.note += f"; the faster form here, {said}"
        else:
            adapter.discard(candidate)
            plan.note += f"; kept over {said}"
    return lowered, check


def _timed_choice(timing: Timing, plan: Plan, margin: float) -> tuple[bool, str | None]:
    """(keep the rewrite, what to say) from a site's timing. Faster by the margin beyond the noise:
    kept. Short of the margin beyond the noise: declined. Neither (a busy machine, or forms too
    close to call): the form that removes work by the cost model's count is kept, so that noise
    cannot flip the choice either way."""
    measured = timing.measured
    said = f"measured {measured.describe()}" + (" (timing cache)" if timing.cached else "")
    times = f"{measured.before_s * 1e6:.0f} µs as it is, {measured.after_s * 1e6:.0f} µs rewritten"
    if measured.faster(margin):
        return True, None
    if measured.short_of(margin):
        return False, f"{said}, < {margin:g}x: {times}"
    if plan.predicted_speedup >= margin:
        return True, (f"{said}: inconclusive, so the form that removes work by the cost model's count "
                      f"({plan.predicted_speedup:.2f}x predicted) is kept")
    return False, (f"{said}: inconclusive, and the cost model predicts {plan.predicted_speedup:.2f}x (< {margin:g}x): "
                   f"{times}")


def _time(adapter, match: Match, plan: Plan, lowered, options, dtype) -> Timing:
    """Time both forms (or take them from the timing cache)."""
    model = options.cost_model
    before, after, full_inputs = adapter.timed(match, lowered)
    shapes = tuple(tuple(x.shape) for x in full_inputs)
    predicted_after = model.chain_time(plan.after, _as_conv_shape(shapes[0], match), dtype)
    key = (adapter.runtime, str(dtype).replace("torch.", ""), plan.kind, plan.describe_before, plan.describe_after,
           shapes)
    measured, cached = model.times(key, before, after, full_inputs, options.min_speedup)
    return Timing([predicted_after * plan.predicted_speedup, predicted_after], measured, cached)
