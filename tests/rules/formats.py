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
    if fmt == "fx":
        result = optimize(model, x, **options)
        return result.rewrite_report, lambda t: result(t)
    pytest.importorskip("onnx_graphsurgeon")
    import onnxruntime as ort

    from rewrite import optimize_onnx

    proto, report = optimize_onnx(to_onnx(model, x), **options)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return report, lambda t: torch.from_numpy(session.run(None, {"x": t.numpy()})[0])


def fresh_error(run, model: torch.nn.Module, shape, seed: int = 1) -> float:
    """The result's relative error against the original model in float64, on an input it never saw."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return max_rel(run(x).double(), copy.deepcopy(model).double()(x.double()))


def outcomes(report, kind: str) -> Counter:
    """How many sites of `kind` ended in each status."""
    return Counter(s.status for s in report.sites if s.kind == kind)
