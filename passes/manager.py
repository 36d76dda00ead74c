"""The pass manager both front ends share: fixed order, bounded fixed point, verify-then-apply.

For each pass in pipeline order (merge → fold → factorize → reverse → fuse), sweep: build the adapter's
view of the graph, match the pass's pattern, ask the rule for a Plan or a Decline, and hand a
Plan to the adapter, which lowers it into its format, checks it on the activation captured at
the site (passes/verify.py) and splices it in only if it passes. A pass stops when a sweep
applies nothing, or after MAX_SWEEPS. Every site considered lands in the report exactly once.

An adapter provides:
    view() -> View                         the graph as it is now
    live(match) -> bool                    no op of the match was removed by an earlier rewrite
    value(v) -> Tensor | None              the activation captured for value v (full shape in view.shapes)
    lower(match, plan) -> object           the replacement, built but not yet in the graph
    original(match), reference(match)      callables running the original ops (model dtype / float64)
    candidate(lowered, match)              callable running the replacement
    commit(match, plan, lowered)           splice the replacement in
    discard(lowered)                       drop a replacement that failed its check
    reference_is_lifted: bool              reference() evaluates the lifted IR, not the original ops
    site_name(match) -> str                the site's name in the user's model, for the report
    progress(message)                      a one-line progress message
    timed(match, lowered) -> (f, g, xs)    callables running the original and the replacement as
                                           they will run (onnxruntime: optimizations on), and random
                                           inputs of the full shapes reaching the site
    runtime: str                           the libraries that run the forms, for the timing cache

With a measured cost model (options.measured), a site of MEASURED_KINDS that passed its check is
then timed both ways (rewrite.measure) on random inputs of the full shapes that reach it, and
applied only if it is at least min_speedup times faster; rules do not decline such sites on a
prediction. A plan that only removes work (a fold; a merge into a conv shaped like one of its
branches: Plan.removes_work) is not timed, since timing noise could only decline it wrongly.
Re-runs of the whole-model retry find the same timings in the cost model's cache.
"""
from __future__ import annotations

import torch

from rewrite.report import Report, Site
from rewrite.retry import site_key
from rewrite.rules import Decline, plan_factorize, plan_fold, plan_fuse, plan_merge, plan_reverse
from rewrite.rules.fuse import fuse_enabled

from .patterns import MATCHERS, Match
from .verify import check_site

MAX_SWEEPS = 4
MEASURED_KINDS = ("merge", "factorize", "reverse", "fuse")   # a fold only removes work: never timed
PROGRESS_MIN_SITES = 50    # a sweep over more sites than this reports each one (a verbose run always does)
NOT_IN_CHECKED_SET = ("not applied: this site appeared only once other sites were rolled back, after the "
                      "whole-model check; it was not part of the set that passed")
FUSE_SKIPPED = "fuse pass skipped: the target is not a GPU (force_fuse=True fuses anyway)"


def run_passes(adapter, options, report: Report, dtype: torch.dtype, verbose: bool = False) -> int:
    """Run options.passes over the adapter's graph; returns the number of rewrites applied.
    Each site is announced through adapter.progress when verbose or the sweep is long."""
    visited: dict = {}     # (kind, id(head node)) → head node, which keeps the id unique
    total = 0
    for kind in options.passes:
        if kind == "fuse" and not fuse_enabled(options):
            if FUSE_SKIPPED not in report.notes:
                report.notes.append(FUSE_SKIPPED)
            continue
        adapter.progress(f"{kind} pass")
        for _ in range(MAX_SWEEPS):
            view = adapter.view()
            applied = 0
            matches = list(MATCHERS[kind](view))
            per_site = verbose or len(matches) > PROGRESS_MIN_SITES
            for i, match in _progress_bar(enumerate(matches, 1), len(matches), kind, options):
                head = match.ops[0].nodes[0]
                if not adapter.live(match) or (kind, id(head)) in visited:
                    continue
                visited[(kind, id(head))] = head
                if per_site:
                    adapter.progress(f"[{i}/{len(matches)}] {kind} {match.name}")
                applied += _site(adapter, view, match, options, report, dtype)
            total += applied
            if not applied:
                break
    return total


def _progress_bar(items, total: int, kind: str, options):
    """A tqdm bar over a sweep's sites while they are timed, on a terminal only (and if tqdm is there)."""
    if not options.measured or kind not in MEASURED_KINDS:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=f"{kind}: timing sites", unit="site", leave=False, disable=None)


def _site(adapter, view, match: Match, options, report: Report, dtype) -> int:
    name = adapter.site_name(match)
    if match.reason:
        report.add(Site(name, match.kind, "declined", match.reason, before=match.before))
        return 0
    shape = _as_conv_shape(view.shape(match.input), match)
    if shape is None or len(shape) != 4:
        report.add(Site(name, match.kind, "declined", "the shape of the activation reaching this site is "
                        "unknown", before=match.before))
        return 0
    plan = _plan(match, tuple(shape), dtype, options)
    if isinstance(plan, Decline):
        report.add(Site(name, match.kind, "declined", plan.reason, plan.predicted_speedup,
                        before=_named(match, plan.describe_before)))
        return 0
    return _apply(adapter, name, match, plan, options, report, dtype)


def _as_conv_shape(shape, match: Match):
    """A linear's [N, C] is a 1x1 conv's [N, C, 1, 1] to the rules and the cost model."""
    return (*shape, 1, 1) if shape is not None and len(shape) == 2 and match.layout == "nc" else shape


def _named(match: Match, chain: str) -> str:
    """A chain's description in the graph's terms: the 1x1 convs of a linear site are linears."""
    return chain.replace("pw ", "linear ") if match.layout == "nc" else chain


def _plan(match: Match, shape, dtype, options):
    layers = match.layers
    if match.kind == "merge":
        return plan_merge(layers[0], shape, dtype, options)
    if match.kind == "fold":
        return plan_fold(layers[0], layers[1], shape, dtype, options)
    if match.kind == "factorize":
        return plan_factorize(layers[0], shape, dtype, options)
    if match.kind == "reverse":
        return plan_reverse(layers[0], layers[1], shape, dtype, options)
    f = match.fuse
    return plan_fuse(f["dw"], f["act1"], f["pw"], f["act2"], match.residual is not None, shape, dtype, options,
                     f["se"])


def _apply(adapter, name: str, match: Match, plan, options, report: Report, dtype) -> int:
    site = Site(name, plan.kind, "applied", plan.note, plan.predicted_speedup, None,
                _named(match, plan.describe_before), _named(match, plan.describe_after))
    report.add(site)
    key = site_key(site)
    if key in options.skip_sites:
        site.status, site.reason = "rolled_back", "rolled back: the whole-model check failed with it applied"
        return 0
    if options.only_sites is not None and key not in options.only_sites:
        site.status, site.reason = "declined", NOT_IN_CHECKED_SET
        return 0
    lowered = adapter.lower(match, plan)
    site.reason = plan.note                # the lowering may say what it built
    if options.check:
        inputs = [adapter.value(v) for v in match.runtime_inputs]
        if any(x is None for x in inputs):
            site.status, site.reason = "declined", "no activation reached this site with the example inputs"
            adapter.discard(lowered)
            return 0
        try:
            passed = check_site(site, plan, dtype, options, inputs, adapter.original(match), adapter.reference(match),
                                adapter.candidate(lowered, match), reference_is_lifted=adapter.reference_is_lifted)
        except Exception as exc:  # noqa: BLE001 - a site that cannot run on its own is left alone
            site.status = "rolled_back"
            site.reason = f"the site could not be checked ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
            passed = False
        if not passed:
            adapter.discard(lowered)
            return 0
        if options.measured and plan.kind in MEASURED_KINDS and not plan.removes_work and \
                not _faster(adapter, site, match, plan, lowered, options, dtype):
            adapter.discard(lowered)
            return 0
    adapter.commit(match, plan, lowered)
    return 1


def _faster(adapter, site: Site, match: Match, plan, lowered, options, dtype) -> bool:
    """Time both forms (or take them from the timing cache); decline the site when the rewrite is
    not min_speedup times faster."""
    model = options.cost_model
    before, after, full_inputs = adapter.timed(match, lowered)
    shapes = tuple(tuple(x.shape) for x in full_inputs)
    predicted_after = model.chain_time(plan.after, _as_conv_shape(shapes[0], match), dtype)
    site.predicted_s = [predicted_after * plan.predicted_speedup, predicted_after]
    key = (adapter.runtime, str(dtype).replace("torch.", ""), plan.kind, plan.describe_before, plan.describe_after,
           shapes)
    before_s, after_s, cached = model.times(key, before, after, full_inputs)
    site.measured_s, site.measured_cached = [before_s, after_s], cached
    speedup = before_s / after_s
    if speedup >= options.min_speedup:
        return True
    site.status = "declined"
    site.reason = (f"measured {speedup:.2f}x (< {options.min_speedup:g}x): {before_s * 1e6:.0f} µs as it is, "
                   f"{after_s * 1e6:.0f} µs rewritten" + (" (timing cache)" if cached else ""))
    return False
