"""One rule through both front ends: optimize() on the torch model (FX), optimize_onnx() on its
ONNX export, each result run on fresh inputs against the original in float64."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from rewrite import optimize
from tests.helpers import max_rel, to_onnx

FORMATS = ("fx", "onnx")


def optimized(fmt: str, model: torch.nn.Module, x: torch.Tensor, **options):
    """(report, run) of `model` optimized through the front end `fmt`: run(t) evaluates the result
    (the returned module, or the written ONNX model in onnxruntime)."""
    report, run, _ = optimized_graph(fmt, model, x, **options)
    return report, run


def optimized_graph(fmt: str, model: torch.nn.Module, x: torch.Tensor, **options):
    """(report, run, ops) as optimized() gives them, with `ops` counting what the result's graph
    runs: FX, its ATen ops and the types of the modules it calls; ONNX, its nodes' op types."""
    if fmt == "fx":
        import torch.fx as fx

        from passes.fx.graph import op_name
        result = optimize(model, x, **options)
        ops = Counter(op_name(n.target) if n.op == "call_function" else type(gm.get_submodule(n.target)).__name__
                      for gm in result.modules() if isinstance(gm, fx.GraphModule)
                      for n in gm.graph.nodes if n.op in ("call_function", "call_module"))
        return result.rewrite_report, lambda t: result(t), ops
    pytest.importorskip("onnx_graphsurgeon")
    import onnxruntime as ort

    from rewrite import optimize_onnx

    proto, report = optimize_onnx(to_onnx(model, x), **options)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in proto.graph.node)
    return report, lambda t: torch.from_numpy(session.run(None, {"x": t.numpy()})[0]), ops


def fresh_error(run, model: torch.nn.Module, shape, seed: int = 1) -> float:
    """The result's relative error against the original model in float64, on an input it never saw."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return max_rel(run(x).double(), copy.deepcopy(model).double()(x.double()))


def outcomes(report, kind: str) -> Counter:
    """How many sites of `kind` ended in each status."""
    return Counter(s.status for s in report.sites if s.kind == kind)
