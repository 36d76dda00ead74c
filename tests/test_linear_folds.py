"""Linears over [N, C] (classifier heads) are 1x1 convs to the fold and reverse passes, in both
formats: BatchNorm1d / a constant affine folds into the neighbouring linear, two linears with
nothing between collapse, and the report names them as linears."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from rewrite import optimize, optimize_onnx
from tests.helpers import batchnorm, to_onnx


def bn1d(c, seed):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn.eval()


class Heads(nn.Module):
    """RepViT / LeViT style: BN1d → Linear (pre-norm head), Linear → BN1d → ReLU, then two
    linears with nothing between (a low-rank classifier)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), batchnorm(16, 1), nn.ReLU())
        self.norm, self.fc1 = bn1d(16, 2), nn.Linear(16, 24)
        self.bn2, self.fc2, self.fc3 = bn1d(24, 3), nn.Linear(24, 12), nn.Linear(12, 10)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        x = torch.relu(self.bn2(self.fc1(self.norm(x))))
        return self.fc3(self.fc2(x))


def _sites(report, kind):
    return [s for s in report.sites if s.kind == kind and s.status == "applied" and "linear" in s.before]


@pytest.mark.parametrize("fmt", ["fx", "onnx"])
def test_affines_fold_into_linears_and_linear_pairs_collapse(fmt):
    torch.manual_seed(0)
    model, x, fresh = Heads().eval(), torch.randn(2, 3, 8, 8), torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        want = model.double()(fresh.double())
        model.float()
    options = dict(target="cpu", cost_model="analytic", min_speedup=0.0)
    if fmt == "fx":
        fast = optimize(model, x, **options)
        report = fast.rewrite_report
        with torch.no_grad():
            got = fast(fresh).double()
        ops = [str(n.target) for n in fast.graph.nodes if n.op == "call_function"]
        linears = [n for n in fast.graph.nodes
                   if n.op == "call_module" and isinstance(fast.get_submodule(n.target), nn.Linear)]
        assert not any("batch_norm" in o or "linear" in o for o in ops) and len(linears) == 2, fast.code
    else:
        import onnxruntime as ort
        out, report = optimize_onnx(to_onnx(model, x), **options)
        counts = {op: sum(n.op_type == op for n in out.graph.node) for op in ("Gemm", "BatchNormalization")}
        assert counts == {"Gemm": 2, "BatchNormalization": 0}, counts
        session = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(np.asarray(session.run(None, {"x": fresh.numpy()})[0], np.float64))
    assert len(_sites(report, "fold")) == 2, str(report)      # BN1d → fc1, fc1 → BN1d
    assert len(_sites(report, "reverse")) == 1, str(report)   # fc2 → fc3
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_a_sum_of_linears_is_not_merged():
    class Sum(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            x = x.mean((2, 3))
            return self.a(x) + self.b(x)

    model, x = Sum().eval(), torch.randn(3, 8, 4, 4)
    fast = optimize(model, x, target="cpu", cost_model="analytic")
    merges = [s for s in fast.rewrite_report.sites if s.kind == "merge"]
    assert not any(s.status == "applied" for s in merges), str(fast.rewrite_report)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))


def test_the_measured_cost_model_times_a_linear_collapse_in_both_formats():
    """The default on a CPU model: the linear pair's two forms are timed (on [N, C] inputs)."""
    torch.manual_seed(0)
    model, x = Heads().eval(), torch.randn(2, 3, 8, 8)
    fx_report = optimize(model, x, timing_cache=False).rewrite_report
    _, onnx_report = optimize_onnx(to_onnx(model, x), timing_cache=False)
    for report in (fx_report, onnx_report):
        pair = [s for s in report.sites if s.kind == "reverse" and "linear 24->12" in s.before]
        assert len(pair) == 1 and pair[0].measured_s is not None, str(report)
