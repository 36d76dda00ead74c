"""The ONNX front end: import (onnx-graphsurgeon) → the shared passes (passes/manager.py) over
the ONNX adapter → export. The exported model keeps the graph's inputs and outputs exactly as
they were (see OnnxAdapter.model)."""
from __future__ import annotations

from typing import Callable

import onnx
from onnx_graphsurgeon.logger import G_LOGGER
import torch

from rewrite.options import RewriteOptions, RunState
from rewrite.report import RunFacts

from ..manager import run_passes
from .adapter import OnnxAdapter


def optimize_graph(model: onnx.ModelProto, options: RewriteOptions, dtype: torch.dtype, feeds: dict | None = None,
                   state: RunState = RunState(), progress: Callable | None = None, verbose: bool = False,
                   runtime: str = "onnxruntime") -> tuple[onnx.ModelProto, RunFacts]:
    """Rewrite `model` into a new ModelProto; returns it and what the run found. `options` are
    resolved for the CPU (the entry point's RewriteOptions.resolved); `state` is what the driver
    tells this run; `feeds` are the inputs the site checks capture activations with (None: static
    shapes only); `runtime` is where the measured cost model times a site's forms
    (runtimes.RUNTIMES). `model` itself is read, never changed."""
    profile = getattr(getattr(options.cost_model, "profile", None), "name", options.target)
    with G_LOGGER.suppress(G_LOGGER.ERROR):   # e.g. duplicate node names: the model's, not ours
        adapter = OnnxAdapter(model, dtype, feeds, progress, timing_runtime=runtime)
        notes = []
        if adapter.overridable:
            notes.append(f"{len(adapter.overridable)} initializer(s) are also graph inputs (overridable): "
                         "the convs and BatchNorms reading them are left alone")
        swept = run_passes(adapter, options, dtype, state, verbose=verbose)
        notes += list(adapter.notes) + list(swept.notes)
        return adapter.model(), RunFacts(tuple(swept.sites), tuple(notes), profile, str(dtype).replace("torch.", ""),
                                         adapter.runtime if options.measured else "")
