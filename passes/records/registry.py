"""The lowering table: for each IR record type (rewrite/ir.py), how it becomes FX modules and how
it becomes ONNX nodes, declared beside each other in one module per record or small family of
records (passes/records/*.py), the way onnxscript and Inductor register their patterns:

    @fx_lowering(ConvSpec)
    def conv_to_modules(spec: ConvSpec, site: LoweringSite) -> list[nn.Module]: ...

    @onnx_lowering(ConvSpec)
    def conv_to_nodes(spec: ConvSpec, site) -> list[node]: ...

The adapters lower a plan's `after` through `lower_fx` / `lower_onnx` (passes/records/__init__.py),
which look each record's type up here; no adapter names a record. A record module imports neither passes.fx nor
passes.onnx (the two front ends stay independent through it), and its ONNX lowering writes
through the emitter the ONNX adapter hands it (site.constant / site.variable / site.node /
site.function, passes/onnx/lower.py OnnxSite), so the FX path never imports onnx.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Lowerings:
    """The two lowerings of one record type (None: not declared)."""

    fx: Callable | None = None      # (record, LoweringSite) -> list of nn.Module, applied in order
    role: Callable | None = None    # (record, LoweringSite) -> the name suffix of its module where a site becomes
                                    # several modules (dw, pw, conv, linear, norm, ...); None: "fused"
    onnx: Callable | None = None    # (record, OnnxSite) -> list of nodes; the last one's first output is the result


_TABLE: dict[type, Lowerings] = {}


def _declare(which: str, types: tuple) -> Callable:
    def register(fn: Callable) -> Callable:
        for record in types:
            entry = _TABLE.setdefault(record, Lowerings())
            if getattr(entry, which) is not None and getattr(entry, which) is not fn:
                raise ValueError(f"two {which} lowerings of {record.__name__}")
            setattr(entry, which, fn)
        return fn
    return register


def fx_lowering(*types: type, role: Callable | None = None) -> Callable:
    """Declare the decorated function the FX lowering of the record types: fn(record, site) → modules;
    role(record, site): the name suffix of its module in a site lowered to several (default "fused")."""
    def register(fn: Callable) -> Callable:
        _declare("fx", types)(fn)
        if role is not None:
            for record in types:
                _TABLE[record].role = role
        return fn
    return register


def onnx_lowering(*types: type) -> Callable:
    """Declare the decorated function the ONNX lowering of the record types: fn(record, site) → nodes."""
    return _declare("onnx", types)


@dataclass
class LoweringSite:
    """Where a record is lowered: the whole chain (`layers`), this record's place in it (`index`),
    the match's layout ("nc": its convs are linears over [N, C]) and the site's name."""

    layers: list
    layout: str = "nchw"
    name: str = ""
    index: int = 0

    @property
    def single(self) -> bool:
        return len(self.layers) == 1


class LoweredNodes(list):
    """The nodes of a lowered chain, in order; `ends[i]` is the tensor its layer i produces."""

    def __init__(self, nodes=(), ends=None):
        super().__init__(nodes)
        self.ends = list(ends) if ends is not None else [node.outputs[0] for node in self]
