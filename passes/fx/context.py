"""What a pass needs while it walks one traced region, and the verify-then-apply step.

`apply_site` is the only place a rewrite enters a graph: the replacement modules are first run
against the original ones on the activation captured at the site (reference: the original
modules in float64); a replacement that misses its tolerance is recorded as rolled back and the
graph is left untouched.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn

from rewrite.numerics import rel_error, site_tolerance, within
from rewrite.options import RewriteOptions
from rewrite.report import Report, Site
from rewrite.rules import Decline, Plan

from .graph import INPUT_KEY, SITE_KEY, module_of, replace_chain
from .lift import conv_spec


@dataclass
class FxContext:
    gm: fx.GraphModule
    prefix: str                    # region path inside the user's model
    options: RewriteOptions
    report: Report
    dtype: torch.dtype
    shared_modules: set = field(default_factory=set)   # ids of modules run more than once
    shared_params: set = field(default_factory=set)    # ids of parameters owned by several modules

    visited: set = field(default_factory=set)          # (pass kind, node) pairs already looked at

    def site_name(self, node: fx.Node) -> str:
        if SITE_KEY not in node.meta:
            target = str(node.target) if node.op == "call_module" else node.name
            node.meta[SITE_KEY] = f"{self.prefix}.{target}" if self.prefix else target
        return node.meta[SITE_KEY]

    def first_visit(self, kind: str, node: fx.Node) -> bool:
        """True once per (pass, node): a fixed-point sweep does not record a site twice."""
        if (kind, node) in self.visited:
            return False
        self.visited.add((kind, node))
        return True

    def conv_at(self, node: fx.Node):
        """(module, ConvSpec) when `node` calls a rewritable nn.Conv2d, else (module|None, reason)."""
        module = module_of(self.gm, node)
        if not isinstance(module, nn.Conv2d):
            return module, "not a conv"
        if id(module) in self.shared_modules:
            return module, "conv module is called at several places (shared weights)"
        if any(id(p) in self.shared_params for p in module.parameters()):
            return module, "conv parameters are shared with another module"
        return module, conv_spec(module)

    def decline(self, name: str, decline: Decline) -> None:
        self.report.add(Site(name, decline.kind, "declined", decline.reason, decline.predicted_speedup,
                             None, decline.describe_before))

    def decline_reason(self, name: str, kind: str, reason: str, before: str = "") -> None:
        self.report.add(Site(name, kind, "declined", reason, None, None, before))


def sequential(modules) -> Callable:
    def run(x, *extra):
        for m in modules:
            x = m(x)
        return x
    return run


def float64_copy(modules):
    return [copy.deepcopy(m).double() for m in modules]


def sequential_pair(modules) -> tuple[Callable, Callable]:
    """(original, float64 reference) callables running `modules` in sequence."""
    return sequential(modules), sequential(float64_copy(modules))


def apply_site(ctx: FxContext, name: str, plan: Plan, chain: list[fx.Node], new_modules: list[nn.Module],
               original: Callable, reference: Callable, candidate: Callable,
               extra_args: tuple = (), extra_values: tuple = ()) -> bool:
    """Verify `candidate` against the float64 `reference` on the captured input, then edit the graph.

    original(x, *extras), reference(x64, *extras64) and candidate(x, *extras) compute the site's
    output with the original modules, their float64 copies and the replacement. The candidate
    must be within the site tolerance of the reference (by default max(dtype default, 2 × the
    original's own error); an approximate plan: within its budget). `extra_args` are FX nodes
    the last new module also takes (a residual), `extra_values` their captured values.
    """
    key = f"{plan.kind}:{name}"
    site = Site(name, plan.kind, "applied", plan.note, plan.predicted_speedup, None,
                plan.describe_before, plan.describe_after)
    if key in ctx.options.skip_sites:
        site.status, site.reason = "rolled_back", "rolled back: the whole-model check failed with it applied"
        ctx.report.add(site)
        return False
    if ctx.options.check:
        x = chain[0].meta.get(INPUT_KEY)
        extras = tuple(extra_values)
        if x is None or len(extras) != len(extra_args) or any(e is None for e in extras):
            ctx.decline_reason(name, plan.kind, "no activation reached this site with the example inputs",
                               plan.describe_before)
            return False
        with torch.no_grad():
            ref = reference(x.double(), *(e.double() for e in extras))
            out = candidate(x, *extras)
            baseline = rel_error(original(x, *extras), ref)
        site.rel_error = rel_error(out, ref)
        if plan.tolerance is not None:
            tol = plan.tolerance
        else:
            tol = site_tolerance(ctx.dtype, ctx.options.site_tolerance, baseline)
        if not within(site.rel_error, tol):
            site.status = "rolled_back"
            site.reason = f"rel error {site.rel_error:.2e} exceeds tolerance {tol:.0e}"
            ctx.report.add(site)
            return False
    for node in chain:
        ctx.site_name(node)
    new_nodes = replace_chain(ctx.gm, chain, new_modules, extra_args)
    for node in new_nodes:
        node.meta["dwsep_origin"] = plan.kind
    ctx.report.add(site)
    return True
