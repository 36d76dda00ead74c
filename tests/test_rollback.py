"""Culprit-only rollback (rewrite/entry/retry.py): when the whole-model check fails, bisection finds the
sites responsible and only those are rolled back, in both formats."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from rewrite import optimize
from rewrite.entry.retry import find_culprits
from tests.helpers import batchnorm, max_rel


# ------------------------------------------------------------------------- the bisection itself
def _predicate(bad: set, together: tuple = ()):
    calls = []

    def fails(keep: frozenset) -> bool:
        calls.append(keep)
        return bool(keep & bad) or (bool(together) and set(together) <= keep)
    return fails, calls


@pytest.mark.parametrize("bad", [{"s0"}, {"s17"}, {"s39"}, {"s3", "s30"}, {"s5", "s6", "s7"}])
def test_bisection_finds_exactly_the_culprits(bad):
    applied = [f"s{i}" for i in range(40)]
    fails, calls = _predicate(bad)
    culprits, runs = find_culprits(applied, fails)
    assert set(culprits) == bad and runs == len(calls)
    assert runs <= len(bad) * (6 + 1)          # ⌈log2 40⌉ + 1 re-runs per culprit


def test_bisection_breaks_a_failing_pair_by_dropping_one():
    applied = [f"s{i}" for i in range(10)]
    fails, _ = _predicate(set(), together=("s2", "s8"))
    culprits, _ = find_culprits(applied, fails)
    assert culprits == ["s8"]                   # the later of the two; s2 alone passes


def test_bisection_gives_up_within_its_budget():
    applied = [f"s{i}" for i in range(64)]
    fails, calls = _predicate(set(applied))     # everything fails: 64 culprits
    culprits, runs = find_culprits(applied, fails, max_runs=10)
    assert culprits is None and runs == 10 == len(calls)


def test_every_site_a_culprit_is_found_when_the_budget_allows():
    applied = ["a", "b", "c"]
    culprits, _ = find_culprits(applied, _predicate(set(applied))[0])
    assert sorted(culprits) == applied


# ------------------------------------------------------------------------- FX, end to end
class ThreeBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1, self.b2, self.b3 = (nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), batchnorm(8), nn.ReLU())
                                     for _ in range(3))

    def forward(self, x):
        return self.b3(self.b2(self.b1(x)))


def _corrupt_fx_site(monkeypatch, name: str):
    """Break one site after its own check passed: the whole model then fails with it applied."""
    from passes.fx.adapter import FxAdapter
    real = FxAdapter.commit

    def commit(self, match, plan, lowered):
        if self.site_name(match) == name:
            with torch.no_grad():
                lowered[0].weight.mul_(1.01)
        return real(self, match, plan, lowered)
    monkeypatch.setattr(FxAdapter, "commit", commit)


def test_fx_rolls_back_only_the_culprit(monkeypatch):
    model = ThreeBlocks().eval()
    x = torch.randn(2, 8, 10, 10)
    _corrupt_fx_site(monkeypatch, "b2.0")
    opt = optimize(model, x, passes=("fold",), target="h100")
    r = opt.rewrite_report
    status = {s.name: s.status for s in r.sites}
    assert status == {"b1.0": "applied", "b2.0": "rolled_back", "b3.0": "applied"}
    culprit = next(s for s in r.sites if s.name == "b2.0")
    assert "found by bisection" in culprit.reason
    assert any("bisection over the 3 applied sites" in n and "fold:b2.0" in n for n in r.notes)
    assert "passed the whole-model check with 1 site(s) rolled back" in r.notes
    with torch.no_grad():
        assert max_rel(opt(x), model(x)) < 1e-5
    assert r.model_rel_error <= r.model_tolerance


def test_fx_tolerance_nothing_meets_returns_the_original():
    model = ThreeBlocks().eval()
    x = torch.randn(2, 8, 10, 10)
    opt = optimize(model, x, passes=("fold",), model_tolerance=1e-30, target="h100")
    r = opt.rewrite_report
    assert not r.applied and {s.status for s in r.sites} == {"rolled_back"}
    with torch.no_grad():
        assert torch.equal(opt(x), model(x))


# ------------------------------------------------------------------------- ONNX, end to end
def test_onnx_rolls_back_only_the_culprit(monkeypatch):
    from passes.onnx.adapter import OnnxAdapter
    from rewrite import optimize_onnx
    from tests.onnx.onnx_graphs import G, run, sites

    g = G()
    h = g.input("x", ["N", 8, 10, 10])
    for _ in range(3):
        h = g.relu(g.bn(g.conv(h, 8, 8), 8))
    g.output(h, ["N", 8, 10, 10])
    model = g.model()
    conv_nodes = [n.name for n in model.graph.node if n.op_type == "Conv"]

    real = OnnxAdapter.commit

    def commit(self, match, plan, lowered):
        if match.ops[0].nodes[0].name == conv_nodes[1]:
            weight = lowered[0].inputs[1]
            weight.values = (weight.values * 1.01).astype(weight.values.dtype)
        return real(self, match, plan, lowered)
    monkeypatch.setattr(OnnxAdapter, "commit", commit)

    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert len(sites(report, "fold", "applied")) == 2, str(report)
    (culprit,) = sites(report, "fold", "rolled_back")
    assert "found by bisection" in culprit.reason
    assert report.model_rel_error <= report.model_tolerance
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 8, 10, 10)).astype(np.float32)}
    assert max_rel(torch.from_numpy(run(out, feeds)[0]), torch.from_numpy(run(model, feeds)[0])) < 1e-5


def test_bisection_reuses_one_capture(monkeypatch):
    """Every re-run of the passes starts from the same torch.export capture: export runs once."""
    import passes.fx.pipeline as pipeline
    from tests.fx_models import ControlFlow

    exports = []
    real = pipeline.capture_regions
    monkeypatch.setattr(pipeline, "capture_regions", lambda *a, **k: exports.append(1) or real(*a, **k))
    _corrupt_fx_site(monkeypatch, "b2.0")
    model = ThreeBlocks().eval()
    x = torch.randn(2, 8, 10, 10)
    opt = optimize(model, x, passes=("fold",), target="h100")
    assert len(exports) == 1 and [s.status for s in opt.rewrite_report.sites].count("rolled_back") == 1
    model = ControlFlow().eval()                # regions: the submodules torch.export can capture
    x = torch.randn(2, 3, 12, 12)
    opt = optimize(model, x, model_tolerance=1e-30, target="h100")
    assert len(exports) == 2 and not opt.rewrite_report.applied
    with torch.no_grad():
        assert torch.equal(opt(x), model(x))


def test_bisection_stops_at_its_deadline(monkeypatch):
    """A deadline bounds the bisection on top of the re-run cap: the clock here advances one
    second per re-run, and the deadline falls after the third."""
    import rewrite.entry.retry as retry
    clock = [0.0]
    monkeypatch.setattr(retry.time, "perf_counter", lambda: clock[0])
    applied = [f"s{i}" for i in range(64)]
    fails_, calls = _predicate(set(applied))

    def fails(keep):
        clock[0] += 1.0
        return fails_(keep)
    culprits, runs = find_culprits(applied, fails, deadline=2.5)
    assert culprits is None and runs == 3 == len(calls)
    assert find_culprits(applied, fails, deadline=-1.0) == (None, 0)
    culprits, _ = find_culprits(["a", "b"], _predicate({"b"})[0], deadline=1e9)   # time left: found
    assert culprits == ["b"]
