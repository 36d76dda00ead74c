"""native_act: an activation written out over more nodes than the format's standard form of it
becomes that form. ONNX: Paddle2ONNX's hardswish Add → Clip → Mul → Div is HardSigmoid · Mul below
opset 14 and HardSwish from it, its hardsigmoid HardSigmoid; the Erf GELU is Gelu from opset 20
and stays below; SiLU (x·Sigmoid(x)) has no shorter form. Applied untimed, checked on the spot,
and the fuse rule still fuses the short form. FX: the same pattern (rewrite.composite_acts) finds
torch's written-out hardswish (onnx2torch's conversion of Paddle's) as one act, lowered as one module."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from rewrite.ir import Activation
from rewrite.options import RewriteOptions
from rewrite.rules import RULES
from rewrite.rules.native_act import plan_native_act
from tests.rules.formats import fresh_error, optimized, optimized_graph, outcomes

C = 16


def onnx_model(act, opset):
    from tests.onnx.onnx_graphs import G
    g = G(opset=opset)
    x = g.input("x", ["N", C, 12, 12])
    h = act(g, g.conv(x, C, C, groups=C))
    g.output(g.conv(h, C, C, k=1, pads=[0] * 4), ["N", C, 12, 12])
    return g.model()


def rewritten(model, **options):
    from rewrite import optimize_onnx
    from tests.onnx.onnx_graphs import max_rel, ops, run
    out, report = optimize_onnx(model, target="cpu", cost_model="analytic", **options)
    x = {"x": np.random.default_rng(1).standard_normal((3, C, 12, 12)).astype(np.float32) * 3}   # past ±3
    assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-5
    return ops(out), report


@pytest.mark.parametrize("act, opset, want", [
    (lambda g, h: g.hard_clip(h), 12, ["HardSigmoid", "Mul"]),                       # Paddle2ONNX
    (lambda g, h: g.hard_clip(h, form="c*(1/6)*x", swap=True), 13, ["HardSigmoid", "Mul"]),
    (lambda g, h: g.hard_clip(h), 14, ["HardSwish"]),
    (lambda g, h: g.hard_clip(h, form="c/6"), 12, ["HardSigmoid"]),                  # hardsigmoid
    (lambda g, h: g.hardswish_decomposed(h), 14, ["HardSwish"]),                     # HardSigmoid · Mul at 14
    (lambda g, h: g.gelu_erf(h), 20, ["Gelu"]),
])
def test_written_out_activation_becomes_its_standard_form(act, opset, want):
    op_types, report = rewritten(onnx_model(act, opset))
    (site,) = [s for s in report.sites if s.kind == "native_act"]
    assert site.status == "applied" and site.rel_error < 1e-6 and site.measured_s is None   # never timed
    assert site.reason.endswith(f"→ {len(want)} ({' → '.join(want)})")
    assert op_types == ["Conv", *want, "Conv"]


@pytest.mark.parametrize("act, opset", [
    (lambda g, h: g.silu(h), 17),                     # x·Sigmoid(x): no Silu op
    (lambda g, h: g.gelu_erf(h), 17),                 # no Gelu op below opset 20
    (lambda g, h: g.hardswish_decomposed(h), 13),     # no HardSwish op below opset 14
    (lambda g, h: g.node("HardSwish", [h]), 14),
    (lambda g, h: g.hard_clip(h, three=2.9), 12),     # a near miss is not an activation
])
def test_shortest_forms_and_near_misses_are_not_sites(act, opset):
    model = onnx_model(act, opset)
    op_types, report = rewritten(model)
    assert not [s for s in report.sites if s.kind == "native_act"]
    assert set(op_types) <= {n.op_type for n in model.graph.node}      # no form written anew (a fold may remove a Div)


def test_the_fuse_rule_still_fuses_the_short_form():
    from rewrite import optimize_onnx
    from tests.onnx.onnx_graphs import ops
    model = onnx_model(lambda g, h: g.hard_clip(h), 12)
    out, report = optimize_onnx(model, target="h100")
    assert outcomes(report, "native_act") == {"applied": 1}
    assert [s.after for s in report.sites if s.kind == "fuse" and s.status == "applied"] == [
        f"fused[dw3x3 {C}->{C} → hardswish → pw {C}->{C}]"]
    assert ops(out) == ["FusedSepConv_hardswish_none"]


def test_runs_after_the_folds_and_before_the_timed_rules_and_is_untimed():
    order = list(RULES)
    assert order.index("fold_concat") < order.index("native_act") < order.index("merge_mixed_dw")
    assert not RULES["native_act"].timed


def test_plan_predicts_one_pass_per_node():
    opts = RewriteOptions(target="cpu").resolved("cpu")
    plan = plan_native_act(Activation("hardswish"), 4, 2, (1, C, 64, 64), torch.float32, opts)
    assert plan.removes_work and plan.after == [Activation("hardswish")] and plan.predicted_speedup == pytest.approx(2)


class ByHand(nn.Module):
    """dw → an activation written out in torch ops → pw, the way onnx2torch converts Paddle2ONNX's
    hardswish (add → hardtanh → mul → div) and the ways people write it."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.dw, self.pw = nn.Conv2d(C, C, 3, padding=1, groups=C), nn.Conv2d(C, C, 1)
        self.register_buffer("three", torch.tensor([3.0]))
        self.register_buffer("six", torch.tensor(6.0))

    def forward(self, x):
        h = self.dw(x)
        act = {
            "clamp/6": lambda: h * torch.clamp(h + 3, 0, 6) / 6,
            "buffers": lambda: h * nn.functional.relu6(h + self.three) / self.six,     # onnx2torch's constants
            "3+h, *1/6 first": lambda: h * (nn.functional.hardtanh(3 + h, 0, 6) * (1 / 6)),
            "hardsigmoid": lambda: torch.clamp(h + 3, 0, 6) / 6,
            "no sixth": lambda: h * torch.clamp(h + 3, 0, 6),                          # 6·hardswish
            "near miss": lambda: h * torch.clamp(h + 2.9, 0, 6) / 6,
            "read twice": lambda: self.read_twice(h),
        }[self.form]()
        return self.pw(act)

    @staticmethod
    def read_twice(h):
        gate = torch.clamp(h + 3, 0, 6)
        return h * gate / 6 + gate            # the clip is read by more than the activation


@pytest.mark.parametrize("form, act", [("clamp/6", "hardswish"), ("buffers", "hardswish"),
                                       ("3+h, *1/6 first", "hardswish"), ("hardsigmoid", "hardsigmoid")])
@pytest.mark.parametrize("fmt", ["fx", "onnx"])
def test_written_out_in_torch_is_found_in_both_formats(fmt, form, act):
    """One pattern (rewrite.composite_acts) for both views: the FX graph of the module and its ONNX
    export (torch writes the same nodes) each get one act op; FX lowers it as one module."""
    torch.manual_seed(0)
    model = ByHand(form).eval()
    report, run, ops = optimized_graph(fmt, model, torch.randn(2, C, 12, 12) * 3, target="cpu", cost_model="analytic")
    (site,) = [s for s in report.sites if s.kind == "native_act"]
    assert site.status == "applied" and site.before == act and site.rel_error < 1e-6
    assert fresh_error(run, model, (3, C, 12, 12)) < 1e-5
    assert not {"div", "Div", "clamp", "Clip", "hardtanh", "relu6"} & set(ops)
    if fmt == "fx":
        assert ops["ActivationModule"] == 1


@pytest.mark.parametrize("form", ["no sixth", "near miss", "read twice"])
def test_fx_near_misses_are_not_activations(form):
    torch.manual_seed(0)
    model = ByHand(form).eval()
    report, run = optimized("fx", model, torch.randn(2, C, 12, 12) * 3, target="cpu", cost_model="analytic")
    assert not outcomes(report, "native_act")
    assert fresh_error(run, model, (3, C, 12, 12)) < 1e-5


def test_fx_single_node_acts_are_not_sites():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, groups=C), nn.Hardswish(), nn.Conv2d(C, C, 1), nn.GELU()).eval()
    report, run = optimized("fx", model, torch.randn(2, C, 12, 12), target="cpu", cost_model="analytic")
    assert not outcomes(report, "native_act")
    assert fresh_error(run, model, (3, C, 12, 12)) < 1e-5


class Tricky(nn.Module):
    """Graphs near the pattern that must not become a hardswish, or must not stop the other rules:
    an integer tensor + 3 (the fold beside it still applies), x written through a view between the
    add and the product, a float64 [1] constant (the written-out chain computes in float64), and
    a constant that raises the rank."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.conv, self.bn = nn.Conv2d(C, C, 3, padding=1), nn.BatchNorm2d(C)
        self.register_buffer("three64", torch.tensor([3.0], dtype=torch.float64))
        self.register_buffer("three5d", torch.full((1, 1, 1, 1, 1), 3.0))

    def forward(self, x):
        h = self.bn(self.conv(x))
        if self.form == "integer":
            return h * (h.argmax(1, keepdim=True) + 3)
        if self.form == "view write":
            t = h + 3
            h.view(h.shape).mul_(2)
            return h * torch.clamp(t, 0, 6) / 6
        if self.form == "float64":
            return h * torch.clamp(h + self.three64, 0, 6) / 6
        return h * torch.clamp(h + self.three5d, 0, 6) / 6


@pytest.mark.parametrize("form", ["integer", "view write", "float64", "rank"])
def test_fx_lookalikes_are_left_and_the_rest_still_runs(form):
    torch.manual_seed(0)
    model = Tricky(form).eval()
    x = torch.randn(2, C, 6, 6)
    report, run = optimized("fx", model, x, target="cpu", cost_model="analytic", check=False)
    assert not outcomes(report, "native_act")
    assert outcomes(report, "fold")["applied"] == 1              # the BatchNorm still folds
    with torch.no_grad():
        fresh = torch.randn(2, C, 6, 6, generator=torch.Generator().manual_seed(1))
        expected, got = model(fresh.clone()), run(fresh.clone())
    assert got.dtype == expected.dtype
    assert fresh_error(run, model, (2, C, 6, 6)) < 1e-5
