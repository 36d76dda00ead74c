"""The FX front end: capture (torch.export) → per region: capture activations, run the shared
passes (passes/manager.py), clean up → channels_last layout when sites were fused."""
from __future__ import annotations

import torch
import torch.nn as nn

from rewrite.options import RewriteOptions
from rewrite.report import Report

from ..manager import run_passes
from .adapter import FxAdapter
from .capture import capture_regions
from .layout import keep_channels_last, wants_channels_last


def optimize_fx(model: nn.Module, example_inputs: tuple, options: RewriteOptions, dtype: torch.dtype,
                progress=None) -> tuple[nn.Module, Report]:
    """Rewrite `model` and return (new root, report). The root is the exported GraphModule, or
    `model` itself with its exportable submodules replaced (then `model` is modified: pass a copy)."""
    report = Report(target=getattr(getattr(options.cost_model, "profile", None), "name", options.target),
                    dtype=str(dtype).replace("torch.", ""))
    regions = capture_regions(model, example_inputs, dynamic_spatial=options.dynamic_spatial, notes=report.notes)
    if not regions:
        report.notes.append("no part of the model could be captured by torch.export: nothing rewritten")
        return model, report
    root = model
    for region in regions:
        root = _install(root, region.path, region.module)
    for region in regions:
        adapter = FxAdapter(region.module, region.inputs, region.path, progress)
        run_passes(adapter, options, report, dtype)
        adapter.finish()
    if not report.sites:
        report.notes.append("no candidate site: no conv followed by a BatchNorm or preceded by a pad, no dense "
                            "KxK conv, no depthwise conv was found in the captured graph")
    if wants_channels_last(options.channels_last, report):
        report.notes.append(keep_channels_last(root, example_inputs))
    return root, report


def _install(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` in place of the submodule at `path`; returns the (possibly new) root."""
    if path == "":
        return module
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)
    return model
