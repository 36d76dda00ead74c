"""The ONNX front end: import (onnx-graphsurgeon) → the shared passes (passes/manager.py) over
the ONNX adapter → export. The exported model keeps the graph's inputs and outputs exactly as
they were (see OnnxAdapter.model)."""
from __future__ import annotations

from typing import Callable

import onnx
from onnx_graphsurgeon.logger import G_LOGGER
import torch

from rewrite.options import RewriteOptions
from rewrite.report import Report

from ..manager import run_passes
from .adapter import OnnxAdapter


def optimize_graph(model: onnx.ModelProto, options: RewriteOptions, dtype: torch.dtype, feeds: dict | None = None,
                   progress: Callable | None = None, verbose: bool = False,
                   runtime: str = "onnxruntime") -> tuple[onnx.ModelProto, Report]:
    """Rewrite `model` into a new ModelProto; `feeds` are the inputs the site checks capture
    activations with (None: static shapes only); `runtime` is where the measured cost model times
    a site's forms (runtimes.RUNTIMES). `model` itself is read, never changed."""
    options = options.resolved("cpu")   # onnxruntime's CPU provider
    profile = getattr(getattr(options.cost_model, "profile", None), "name", options.target)
    report = Report(target=profile, dtype=str(dtype).replace("torch.", ""))
    with G_LOGGER.suppress(G_LOGGER.ERROR):   # e.g. duplicate node names: the model's, not ours
        adapter = OnnxAdapter(model, dtype, feeds, report.notes, progress, timing_runtime=runtime)
        if options.measured:
            report.runtime = adapter.runtime
        if adapter.overridable:
            report.notes.append(f"{len(adapter.overridable)} initializer(s) are also graph inputs (overridable): "
                                "the convs and BatchNorms reading them are left alone")
        swept = run_passes(adapter, options, dtype, verbose=verbose)
        report.sites.extend(swept.sites)
        report.notes.extend(swept.notes)
        return adapter.model(), report
