"""One module per IR record (or small family of records) holding both its lowerings, FX and
ONNX, registered into the table in registry.py. Every module in this package is loaded when the
table is first read, so a new record's module needs no line anywhere else."""
from __future__ import annotations

import importlib
import pkgutil

from .registry import LoweredNodes, Lowerings, Site, fx_lowering, lower_fx, lower_onnx, lowering, onnx_lowering, table

__all__ = ["LoweredNodes", "Lowerings", "Site", "fx_lowering", "lower_fx", "lower_onnx", "lowering", "onnx_lowering",
           "table", "load_all"]

_LOADED = False


def load_all() -> None:
    """Import every record module of this package (each registers its lowerings)."""
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "registry":
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True
