"""The ONNX pass manager: import → capture activations → fold → factorize → reverse → fuse → export.

Each pass runs to a bounded fixed point (a pass stops when a sweep applies nothing, or after
MAX_SWEEPS); the activations every site check runs on are captured again in onnxruntime before
a sweep when the graph changed. The export keeps the model's graph inputs and outputs exactly as
they were (names, dtypes, symbolic dimensions, initializers listed as inputs), its opset
imports, metadata and IR version (raised to 8 only when local functions were added).
"""
from __future__ import annotations

from typing import Callable

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER
import torch

from rewrite.options import RewriteOptions
from rewrite.report import Report

from . import runtime
from .context import OnnxContext
from .factorize import run_factorize
from .fold import run_fold
from .fuse import DOMAIN, fuse_enabled, run_fuse
from .graph import is_op
from .io import default_opset, too_big
from .reverse import run_reverse
from .verify import FUNCTION_IR_VERSION

MAX_SWEEPS = 4
PASSES = {"fold": run_fold, "factorize": run_factorize, "reverse": run_reverse, "fuse": run_fuse}


def optimize_graph(model: onnx.ModelProto, options: RewriteOptions, dtype: torch.dtype, feeds: dict | None = None,
                   progress: Callable | None = None, verbose: bool = False) -> tuple[onnx.ModelProto, Report]:
    """Rewrite a copy of `model`; `feeds` are the inputs the site checks capture activations with."""
    with G_LOGGER.suppress(G_LOGGER.ERROR):   # e.g. duplicate node names: the model's, not ours
        return _optimize_graph(model, options, dtype, feeds, progress, verbose)


def _optimize_graph(model, options, dtype, feeds, progress, verbose):
    profile = options.cost_model.profile.name if hasattr(options.cost_model, "profile") else str(options.target)
    report = Report(target=profile, dtype=str(dtype).replace("torch.", ""))
    graph = gs.import_onnx(model)
    graph.import_domains = [onnx.helper.make_opsetid(i.domain, i.version) for i in model.opset_import]
    init = {t.name for t in model.graph.initializer}
    ctx = OnnxContext(
        graph, options, report, dtype, default_opset(model), list(graph.import_domains), model.ir_version,
        overridable={i.name for i in model.graph.input} & init, static_spatial=_static_spatial(model),
        functions={f.name: f for f in model.functions if f.domain == DOMAIN}, progress=progress, verbose=verbose,
    )
    if ctx.overridable:
        report.notes.append(f"{len(ctx.overridable)} initializer(s) are also graph inputs (overridable): "
                            "the convs and BatchNorms reading them are left alone")
    stale = True
    for name in options.passes:
        if name == "fuse" and not fuse_enabled(options):
            run_fuse(ctx)               # records why it does not run
            continue
        if progress:
            progress(f"{name} pass")
        for _ in range(MAX_SWEEPS):
            if stale:
                _capture(ctx, model, feeds)
                stale = False
            if not PASSES[name](ctx):
                break
            stale = True
            graph.cleanup().toposort()
    return export(ctx, model), report


def export(ctx: OnnxContext, original: onnx.ModelProto) -> onnx.ModelProto:
    graph = ctx.graph
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    used = {(n.domain, n.op_type) for n in out.graph.node}
    present = {(f.domain, f.name) for f in out.functions}
    out.functions.extend(f for f in ctx.functions.values()
                         if (f.domain, f.name) in used and (f.domain, f.name) not in present)
    out.ir_version = max(original.ir_version, FUNCTION_IR_VERSION) if out.functions else original.ir_version
    for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, key, getattr(original, key))
    out.metadata_props.extend(original.metadata_props)
    for field in ("input", "output"):
        del getattr(out.graph, field)[:]
        getattr(out.graph, field).extend(getattr(original.graph, field))
    return out


def _capture(ctx: OnnxContext, original: onnx.ModelProto, feeds: dict | None) -> None:
    """Activations at every conv input and every Add input (residuals), from the current graph."""
    ctx.values = {}
    if feeds is None:
        ctx.shapes = ctx.shapes or _inferred_shapes(original)
        return
    names = [n.inputs[0].name for n in ctx.graph.nodes if is_op(n, "Conv") and n.inputs]
    names += [t.name for n in ctx.graph.nodes if is_op(n, "Add") for t in n.inputs if isinstance(t, gs.Variable)]
    if ctx.progress:
        ctx.progress("capturing activations")
    try:
        ctx.values = runtime.capture(export(ctx, original), [n for n in names if n], feeds)
    except Exception as exc:  # noqa: BLE001 - any onnxruntime failure: fall back to static shapes
        ctx.report.notes.append(f"could not capture activations in onnxruntime ({str(exc).splitlines()[0][:200]})")
        ctx.shapes = ctx.shapes or _inferred_shapes(original)


def _static_spatial(model: onnx.ModelProto) -> bool:
    """True when no graph input has a symbolic dimension past the batch dimension."""
    for vi in runtime.graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in list(dims)[1:]):
            return False
    return True


def _inferred_shapes(model: onnx.ModelProto) -> dict:
    """Static shapes from ONNX shape inference (a symbolic batch dimension counts as 1)."""
    if too_big(model):
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort here
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if dims and all(d is not None for d in dims[1:]):
            shapes[vi.name] = tuple([dims[0] or 1] + dims[1:])
    return shapes
