"""One module per IR record (or small family of records) holding both its lowerings, FX and
ONNX, registered into the table in registry.py. Every module in this package is loaded the first
time the table is read (as rewrite/rules/ loads its rules), so a new record's module needs no line
anywhere else."""
from __future__ import annotations

from importlib import import_module
from pkgutil import iter_modules

from .registry import _TABLE, LoweredNodes, Lowerings, LoweringSite, fx_lowering, onnx_lowering

__all__ = ["LoweredNodes", "Lowerings", "LoweringSite", "fx_lowering", "fx_roles", "load_all", "lower_fx", "lower_onnx", "lowering",
           "onnx_lowering", "table"]

_LOADED = False


def load_all() -> None:
    """Import every record module of this package (each registers its lowerings)."""
    global _LOADED
    if not _LOADED:
        for info in iter_modules(__path__):
            if info.name != "registry":
                import_module(f"{__name__}.{info.name}")
        _LOADED = True


def table() -> dict[type, Lowerings]:
    """Every record type with a lowering."""
    load_all()
    return dict(_TABLE)


def lowering(record, which: str):
    """The `which` ("fx" or "onnx") lowering of the record's type; TypeError naming it where none is declared."""
    load_all()
    entry = _TABLE.get(type(record))
    fn = None if entry is None else getattr(entry, which)
    if fn is None:
        raise TypeError(f"no {which} lowering for {type(record).__name__} ({record.describe()}): "
                        f"declare one with @{which}_lowering in passes/records/")
    return fn


def lower_fx(layers: list, layout: str = "nchw", name: str = "") -> list:
    """The modules computing the chain `layers` (each record's FX lowering, in order)."""
    modules = []
    for i, layer in enumerate(layers):
        modules += lowering(layer, "fx")(layer, LoweringSite(list(layers), layout, name, i))
    return modules


def fx_roles(layers: list, layout: str = "nchw", name: str = "") -> list:
    """The name suffix of each record's module in a site lowered to several (one module per record)."""
    load_all()
    roles = []
    for i, layer in enumerate(layers):
        entry = _TABLE.get(type(layer))
        role = entry.role if entry is not None else None
        roles.append(role(layer, LoweringSite(list(layers), layout, name, i)) if role is not None else "fused")
    return roles


def lower_onnx(layers: list, site) -> LoweredNodes:
    """The nodes computing the chain `layers` on site.x (each record's ONNX lowering, in order);
    `site` is the ONNX front end's emitter (passes/onnx/lower.py OnnxSite). A lowering that
    changes the full shape sets site.shape."""
    site.layers = list(layers)
    nodes, ends = [], []
    for i, layer in enumerate(layers):
        site.index = i
        new = lowering(layer, "onnx")(layer, site)
        nodes += new
        site.x = new[-1].outputs[0]
        ends.append(site.x)
    return LoweredNodes(nodes, ends)
