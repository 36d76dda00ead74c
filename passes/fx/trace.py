"""Tracing with fallback.

`symbolic_trace` the whole model when it can; when Python control flow (or anything else)
defeats the tracer, descend into the children and trace the largest submodules that do trace.
Each traced *region* is optimized on its own and installed back in place of its submodule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

PLAIN_ATTRIBUTE_TYPES = (int, float, bool, str, tuple, type(None))


@dataclass
class Region:
    path: str              # qualified name of the traced submodule ("" = the whole model)
    module: fx.GraphModule


def trace_regions(model: nn.Module, path: str = "", notes: list | None = None) -> list[Region]:
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracer failure means: try the children
        if notes is not None:
            notes.append(f"{path or '<model>'} is not symbolically traceable ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]}); optimizing its traceable submodules")
        regions = []
        for name, child in model.named_children():
            regions.extend(trace_regions(child, f"{path}.{name}" if path else name, notes))
        return regions
    _carry_plain_attributes(model, gm)
    return [Region(path, gm)]


def _carry_plain_attributes(source: nn.Module, gm: fx.GraphModule) -> None:
    """An untraced parent may read plain attributes (sizes, flags) of the child it calls."""
    for key, value in vars(source).items():
        if not key.startswith("_") and isinstance(value, PLAIN_ATTRIBUTE_TYPES) and not hasattr(gm, key):
            setattr(gm, key, value)


def install(model: nn.Module, region: Region) -> nn.Module:
    """Put the region's GraphModule back into `model`; returns the (possibly new) root."""
    if region.path == "":
        return region.module
    parent_path, _, name = region.path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, region.module)
    return model
