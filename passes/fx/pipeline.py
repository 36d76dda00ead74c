"""The FX pass manager: trace → capture activations → drop identities → fold → factorize →
reverse → fuse → lint → channels_last layout (when sites were fused).

Each pass runs to a bounded fixed point over each traced region (a pass stops when a sweep
applies nothing, or after MAX_SWEEPS), then the region's graph is linted, dead submodules are
dropped and the code is regenerated.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.options import RewriteOptions
from rewrite.report import Report

from .capture import capture_conv_inputs
from .context import FxContext
from .factorize import run_factorize
from .fold import run_fold
from .graph import INPUT_KEY, remove_identities
from .layout import keep_channels_last, wants_channels_last
from .reverse import run_reverse
from .trace import install, trace_regions

MAX_SWEEPS = 4


def _fx_passes():
    passes = {"fold": run_fold, "factorize": run_factorize, "reverse": run_reverse}
    try:
        from .fuse import run_fuse
    except ImportError:  # the fuse pass lands with the kernels
        return passes
    passes["fuse"] = run_fuse
    return passes


def shared_parameter_ids(model: nn.Module) -> set[int]:
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return {pid for pid, n in owners.items() if n > 1}


def optimize_fx(model: nn.Module, example_inputs: tuple, options: RewriteOptions, dtype: torch.dtype) -> tuple[nn.Module, Report]:
    """Rewrite `model` (modified in place: pass a copy) and return (new root, report)."""
    report = Report(target=options.cost_model.profile.name if hasattr(options.cost_model, "profile") else options.target,
                    dtype=str(dtype).replace("torch.", ""))
    regions = trace_regions(model, notes=report.notes)
    if not regions:
        report.notes.append("no part of the model could be traced: nothing rewritten")
        return model, report
    root = model
    for region in regions:
        root = install(root, region)
    shared_modules = capture_conv_inputs(root, example_inputs, regions)
    shared_params = shared_parameter_ids(root)
    passes = _fx_passes()
    missing = [name for name in options.passes if name not in passes]
    if missing:
        report.notes.append(f"pass(es) {missing} not available in this build")
    for region in regions:
        remove_identities(region.module)
        ctx = FxContext(region.module, region.path, options, report, dtype, shared_modules, shared_params)
        for name in (n for n in options.passes if n in passes):
            for _ in range(MAX_SWEEPS):
                if not passes[name](ctx):
                    break
        gm = region.module
        for node in gm.graph.nodes:
            node.meta.pop(INPUT_KEY, None)
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    if wants_channels_last(options.channels_last, report):
        report.notes.append(keep_channels_last(root, example_inputs))
    return root, report
