"""What a pass needs while it walks the graph, and the verify-then-apply step.

`apply_site` is the only place a rewrite enters the graph. With checks on, the original nodes
and the replacement are each run on their own in onnxruntime, at the model's dtype, on the
activation that reaches the site; the reference is the lifted IR chain evaluated in float64.
The original's error against that reference first confirms the lift read the nodes right (a
site whose IR does not reproduce onnxruntime within the whole-model tolerance is left alone) and
is the baseline the default site tolerance widens to (rewrite.numerics.site_tolerance); the
replacement's error is the site's error, and a replacement that misses its tolerance is recorded
as rolled back and the graph is left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import onnx_graphsurgeon as gs
import torch

from rewrite.ir import ConvSpec, run_chain
from rewrite.numerics import model_tolerance, rel_error, site_tolerance, within
from rewrite.options import RewriteOptions
from rewrite.report import Report, Site
from rewrite.rules import Decline, Plan

from .graph import Names, detach, replace_nodes
from .lift import conv_spec
from .verify import SiteError, run_site

# Fewer sites than this in a pass: no per-site progress lines unless verbose.
PROGRESS_MIN_SITES = 50


@dataclass
class OnnxContext:
    graph: gs.Graph
    options: RewriteOptions
    report: Report
    dtype: torch.dtype
    opset: int
    opset_imports: list
    ir_version: int
    overridable: set                      # initializers that are also graph inputs (not constant)
    static_spatial: bool                  # no graph input has a symbolic non-batch dimension
    shapes: dict = field(default_factory=dict)      # tensor name → static shape from shape inference
    values: dict = field(default_factory=dict)      # tensor name → activation captured in onnxruntime
    functions: dict = field(default_factory=dict)   # op name → FunctionProto of the local functions added
    progress: Callable | None = None
    verbose: bool = False
    names: Names = None
    visited: set = field(default_factory=set)
    origin: dict = field(default_factory=dict)      # id(node) → (pass kind that created it, node)
    site_names: dict = field(default_factory=dict)  # id(node) → site name, kept across rewrites

    def __post_init__(self):
        self.names = self.names or Names(self.graph)

    def site_name(self, node: gs.Node) -> str:
        if id(node) not in self.site_names:
            self.site_names[id(node)] = node.name or f"{node.op}:{node.outputs[0].name}"
        return self.site_names[id(node)]

    def first_visit(self, kind: str, node: gs.Node) -> bool:
        """True once per (pass, node): a fixed-point sweep does not record a site twice."""
        key = (kind, id(node))
        if key in self.visited:
            return False
        self.visited.add(key)
        self.origin.setdefault(id(node), (None, node))   # keeps the node alive: ids stay unique
        return True

    def made_by(self, node: gs.Node) -> str | None:
        return self.origin.get(id(node), (None, None))[0]

    def shape(self, t: gs.Tensor) -> tuple | None:
        if t.name in self.values:
            return tuple(self.values[t.name].shape)
        return self.shapes.get(t.name)

    def conv_at(self, node: gs.Node) -> ConvSpec | str:
        shape = self.shape(node.inputs[0]) if node.inputs else None
        spatial = tuple(shape[2:]) if shape is not None and len(shape) == 4 and self.static_spatial else None
        spec = conv_spec(node, self.overridable, spatial)
        if isinstance(spec, ConvSpec) and spec.weight.dtype != self.dtype:
            return f"conv weight dtype {spec.weight.dtype} differs from the model's {self.dtype}"
        return spec

    def cost_shape(self, t: gs.Tensor, name: str, kind: str, before: str) -> tuple | None:
        """The NCHW shape the cost model is asked about, or None (and the site declined)."""
        shape = self.shape(t)
        if shape is None or len(shape) != 4:
            self.decline_reason(name, kind, "the shape of the activation reaching this site is unknown", before)
            return None
        return shape

    def decline(self, name: str, decline: Decline) -> None:
        self.report.add(Site(name, decline.kind, "declined", decline.reason, decline.predicted_speedup,
                             None, decline.describe_before))

    def decline_reason(self, name: str, kind: str, reason: str, before: str = "") -> None:
        self.report.add(Site(name, kind, "declined", reason, None, None, before))

    def step(self, kind: str, i: int, total: int, name: str) -> None:
        if self.progress is not None and (self.verbose or total > PROGRESS_MIN_SITES):
            self.progress(f"[{i}/{total}] {kind} {name}")


def chain_reference(layers: list, residual: bool = False) -> Callable:
    """float64 evaluation of the lifted IR chain (+ a residual input when the site adds one)."""
    layers64 = [layer.to(torch.float64) if isinstance(layer, ConvSpec) else layer for layer in layers]

    def reference(x, *extras):
        y = run_chain(layers64, x)
        return y + extras[0] if residual else y
    return reference


def apply_site(ctx: OnnxContext, name: str, plan: Plan, old: list, new: list, output: gs.Variable,
               inputs: list, reference: Callable) -> bool:
    """Verify `new` against `old` on the captured activations, then splice it into the graph.

    `inputs` are the runtime tensors the site reads (the chain input, and a residual), `output`
    the tensor the site produces; `new[-1]` produces a placeholder that `output` replaces.
    """
    site = Site(name, plan.kind, "applied", plan.note, plan.predicted_speedup, None,
                plan.describe_before, plan.describe_after)
    if f"{plan.kind}:{name}" in ctx.options.skip_sites:
        site.status, site.reason = "rolled_back", "rolled back: the whole-model check failed with it applied"
        return _reject(ctx, site, new)
    if ctx.options.check:
        values = [ctx.values.get(t.name) for t in inputs]
        if any(v is None for v in values):
            site.status, site.reason = "declined", "no activation reached this site with the check inputs"
            return _reject(ctx, site, new)
        args = (ctx.opset_imports, ctx.ir_version, ctx.functions)
        try:
            before = run_site(old, inputs, values, output, *args)
            after = run_site(new, inputs, values, new[-1].outputs[0], *args)
        except SiteError as exc:
            site.status, site.reason = "rolled_back", str(exc)
            return _reject(ctx, site, new)
        with torch.no_grad():
            ref = reference(*(torch.from_numpy(v).double() for v in values))
        baseline = _error(before, ref)     # the original's own error vs float64
        if not within(baseline, model_tolerance(ctx.dtype)):
            site.status = "declined"
            site.reason = (f"the lifted chain does not reproduce onnxruntime's output of the original nodes "
                           f"(rel error {baseline:.1e}); left alone")
            return _reject(ctx, site, new)
        site.rel_error = _error(after, ref)
        tol = plan.tolerance if plan.tolerance is not None else \
            site_tolerance(ctx.dtype, ctx.options.site_tolerance, baseline)
        if not within(site.rel_error, tol):
            site.status, site.reason = "rolled_back", f"rel error {site.rel_error:.2e} exceeds tolerance {tol:.0e}"
            return _reject(ctx, site, new)
    head_name = ctx.site_name(old[0])
    replace_nodes(ctx.graph, old, new, output)
    if len(new) == 1:
        new[0].name = old[0].name or new[0].name
    for node in new:
        ctx.origin[id(node)] = (plan.kind, node)
        ctx.site_names[id(node)] = head_name
    ctx.report.add(site)
    return True


def _error(y, ref: torch.Tensor) -> float:
    """rel_error, with a wrong shape counting as infinitely wrong."""
    return rel_error(torch.from_numpy(y), ref) if tuple(y.shape) == tuple(ref.shape) else float("inf")


def _reject(ctx: OnnxContext, site: Site, new: list) -> bool:
    detach(new)
    ctx.report.add(site)
    return False
