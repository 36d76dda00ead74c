"""The FX front end: capture (torch.export) → per region: capture activations, run the shared
passes (passes/manager.py), clean up → channels_last layout when sites were fused."""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten

from rewrite.options import RewriteOptions, RunState
from rewrite.report import RunFacts

from ..manager import NOTHING_TO_APPLY, run_passes
from .adapter import FxAdapter
from .capture import Region, capture_regions
from .layout import keep_channels_last, wants_channels_last
from .result import optimized_module, ordinary_graph_module


class Captured:
    """One torch.export capture of a model, replayed for every re-run of the passes (the
    whole-model check's bisection re-runs them a few times): export is most of optimize()'s time.
    The first call hands out the captured graphs themselves, later calls fresh copies of them
    as they were before any pass ran."""

    def __init__(self):
        self.pristine: list | None = None
        self.notes: list = []

    def regions(self, model: nn.Module, example_inputs: tuple, dynamic_spatial: bool, notes: list) -> list:
        if self.pristine is None:
            regions = capture_regions(model, example_inputs, dynamic_spatial=dynamic_spatial, notes=self.notes)
            self.pristine = [Region(r.path, copy.deepcopy(r.module), r.inputs) for r in regions]
        else:
            regions = [Region(r.path, copy.deepcopy(r.module), r.inputs) for r in self.pristine]
        notes.extend(self.notes)
        return regions


def optimize_fx(model: nn.Module, example_inputs: tuple, options: RewriteOptions, dtype: torch.dtype,
                state: RunState = RunState(), progress=None,
                captured: Captured | None = None) -> tuple[nn.Module, RunFacts]:
    """Rewrite `model` and return (new root, what the run found). The root is the exported graph as
    an OptimizedModule (passes/fx/result.py), or `model` itself with its exportable submodules
    replaced (then `model` is modified: pass a copy). `options` are resolved (the entry point's
    RewriteOptions.resolved); `state` is what the driver tells this run; `captured`: a capture of
    the same model to reuse (see Captured)."""
    sites, notes = [], []

    def facts() -> RunFacts:
        return RunFacts(tuple(sites), tuple(notes), getattr(getattr(options.cost_model, "profile", None), "name",
                                                            options.target), str(dtype).replace("torch.", ""))

    regions = (captured or Captured()).regions(model, example_inputs, options.dynamic_spatial, notes)
    if not regions:
        notes.append("no part of the model could be captured by torch.export: nothing rewritten")
        return model, facts()
    root = model
    if regions[0].path:            # submodules replaced inside the user's model: check that it still works
        with torch.no_grad():
            before = model(*example_inputs)
        replaced = [(region.path, model.get_submodule(region.path)) for region in regions]
        for region in regions:
            _install(root, region.path, region.module)
        why = _disagreement(model, example_inputs, before)
        if why:
            for path, original in replaced:
                _install(root, path, original)
            notes.append(f"the model's forward depends on its submodules' types or attributes ({why} once "
                         "the captured submodules were installed): nothing rewritten")
            return model, facts()
    else:
        root = regions[0].module
    if regions[0].path and options.calibration is not None:
        # calibration samples are the whole model's inputs; a captured submodule sees other tensors
        notes.append("decouple: torch.export captured submodules, not the whole model, so the calibration "
                     "samples cannot be run through them: nothing approximate applied")
        options = replace(options, calibration=None)
    for region in regions:
        adapter = FxAdapter(region.module, region.inputs, region.path, progress)
        swept = run_passes(adapter, options, dtype, state)
        sites.extend(swept.sites)
        notes.extend(note for note in swept.notes if note not in notes)
        adapter.finish()
        if region.path:             # called by the model as captured: no per-call export wrapping, no hooks
            _install(root, region.path, ordinary_graph_module(region.module, region.inputs, options.dynamic_spatial,
                                                              f"the optimized submodule {region.path}"))
        else:                       # the whole model: an ordinary module (eval, torch.save, exporters)
            root = optimized_module(region.module, region.inputs, options.dynamic_spatial)
    if not sites and NOTHING_TO_APPLY not in notes:
        notes.append("no candidate site: no conv followed by a BatchNorm or preceded by a pad, no dense "
                     "KxK conv, no depthwise conv was found in the captured graph")
    if wants_channels_last(options.channels_last, facts()):
        notes.append(keep_channels_last(root, example_inputs))
    return root, facts()


def _disagreement(model: nn.Module, example_inputs: tuple, before) -> str | None:
    """Why the model's output now differs from `before` (its structure, or its values), or None."""
    try:
        with torch.no_grad():
            after = model(*example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure means the installed submodules do not fit
        return f"it fails ({type(exc).__name__})"
    (old, old_spec), (new, new_spec) = tree_flatten(before), tree_flatten(after)
    if old_spec != new_spec:
        return "it returns a different structure"
    for a, b in zip(old, new):
        if not isinstance(a, torch.Tensor):
            continue
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return "its outputs change"
        if not a.is_floating_point() or not a.numel():
            same = torch.equal(a, b)
        else:
            same = torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(a.abs().max()), equal_nan=True)
        if not same:
            return "its outputs change"
    return None


def _install(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` in place of the submodule at `path`; returns the (possibly new) root."""
    if path == "":
        return module
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, module)
    return model
