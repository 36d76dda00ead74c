"""fold_norm, through both front ends: a LayerNorm's affine into the Linear (NHWC MLP), the 1x1 conv
(LayerNorm2d: permute → LayerNorm → permute) and the head's Linear after a flatten; declined where
the LayerNorm also feeds a residual; the same on an ONNX export below opset 17, where torch writes
each LayerNorm out as ReduceMean / Sub / Pow / Sqrt / Div / Mul / Add; and the plan's algebra
against run_chain."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite import optimize
from rewrite.ir import Affine, ConvSpec, LayerNorm, Linear, Permute, run_chain
from rewrite.options import RewriteOptions
from rewrite.rules import RULES, Decline, Plan
from rewrite.rules.fold_norm import plan_fold_norm
from tests.helpers import max_rel, rand
from tests.rules.formats import FORMATS, fresh_error, optimized, outcomes


def _randomize(norm: nn.LayerNorm, seed: int) -> nn.LayerNorm:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=g) * 0.3)
    return norm


class NormBlocks(nn.Module):
    """stem conv → LayerNorm2d (feeds the block and its shortcut: declined) → [dw7x7 → NHWC
    LayerNorm → Linear → GELU → Linear → permute] + x → LayerNorm2d → 1x1 conv → pool → LayerNorm2d
    → flatten → Linear: three folds, one decline."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, 2)
        self.norms = nn.ModuleList(_randomize(nn.LayerNorm(w, eps=1e-6), i) for i, w in enumerate((c, c, c, 2 * c)))
        self.dw, self.fc1, self.fc2 = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.pw, self.head = nn.Conv2d(c, 2 * c, 1), nn.Linear(2 * c, 5)

    @staticmethod
    def norm2d(norm, x):
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x):
        x = self.norm2d(self.norms[0], self.stem(x))
        y = self.norms[1](self.dw(x).permute(0, 2, 3, 1))
        x = x + self.fc2(F.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        x = self.pw(self.norm2d(self.norms[2], x))
        return self.head(self.norm2d(self.norms[3], x.mean((2, 3), keepdim=True)).flatten(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_norm_folds_each_layernorm_affine_into_the_linear_after_it(fmt):
    torch.manual_seed(0)
    model = NormBlocks().eval()
    report, run = optimized(fmt, model, torch.randn(2, 3, 24, 24), passes=("fold_norm",), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_norm") == {"applied": 3, "declined": 1}
    declined = next(s for s in report.sites if s.kind == "fold_norm" and s.status == "declined")
    assert "reads it alone" in declined.reason
    assert fresh_error(run, model, (3, 3, 24, 24)) < 1e-5


@pytest.mark.parametrize("opset", (13, 16))
def test_fold_norm_folds_layernorms_written_out_below_opset_17(opset):
    pytest.importorskip("onnx_graphsurgeon")
    import io

    import onnx
    import onnxruntime as ort

    from rewrite import optimize_onnx

    torch.manual_seed(0)
    model = NormBlocks().eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 3, 24, 24),), buffer, opset_version=opset, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})
    proto = onnx.load_from_string(buffer.getvalue())
    assert not any(n.op_type == "LayerNormalization" for n in proto.graph.node)   # written out, 4 times
    assert sum(n.op_type == "Sqrt" for n in proto.graph.node) == 4
    new, report = optimize_onnx(proto, passes=("fold_norm",), target="cpu", cost_model="analytic")
    assert outcomes(report, "fold_norm") == {"applied": 3, "declined": 1}
    assert sum(n.op_type == "Sqrt" for n in new.graph.node) == 4          # each still normalizes
    assert {(d.domain or "ai.onnx", d.version) for d in new.opset_import} == {("ai.onnx", opset)}
    session = ort.InferenceSession(new.SerializeToString(), providers=["CPUExecutionProvider"])
    run = lambda t: torch.from_numpy(session.run(None, {"x": t.numpy()})[0])   # noqa: E731
    assert fresh_error(run, model, (3, 3, 24, 24)) < 1e-5


def test_fold_norm_plan_is_exact_and_declines_a_shift_into_padding():
    opts = RewriteOptions(target="cpu").resolved("cpu")
    g = torch.Generator().manual_seed(0)
    affine = Affine(torch.rand(6, dtype=torch.float64, generator=g) + 0.5, rand(6, gen=g), -1)
    norm, x = LayerNorm(1e-6, affine), rand(2, 5, 7, 6, gen=g)
    linear = Linear(ConvSpec(rand(4, 6, 1, 1, gen=g), rand(4, gen=g)))
    conv = ConvSpec(rand(4, 6, 2, 2, gen=g), rand(4, gen=g), stride=(2, 2))
    for chain in ([norm, linear], [norm, Permute((0, 3, 1, 2)), conv]):
        plan = plan_fold_norm(chain, (2, 6, 35, 1), torch.float32, opts)
        assert isinstance(plan, Plan) and plan.removes_work and plan.after[0].affine is None
        assert max_rel(run_chain(plan.after, x), run_chain(chain, x)) < 1e-12
    padded = ConvSpec(rand(4, 6, 3, 3, gen=g), None, padding=(1, 1, 1, 1))
    decline = plan_fold_norm([norm, Permute((0, 3, 1, 2)), padded], (2, 6, 35, 1), torch.float32, opts)
    assert isinstance(decline, Decline) and "padding" in decline.reason


def test_the_new_fold_kinds_are_options_and_report_kinds():
    from rewrite.report import KINDS
    for kind in ("fold_norm", "fold_linear"):
        assert kind in RULES and kind in KINDS and kind in RewriteOptions().passes
        assert RewriteOptions(passes=(kind,)).passes == (kind,)


class NormThenDownsample(nn.Module):
    """ConvNeXt's downsample: LayerNorm2d → conv2x2 stride 2, whose input after fold_norm is a permute
    the rewrite made."""

    def __init__(self, c=8):
        super().__init__()
        self.stem, self.norm, self.down = nn.Conv2d(3, c, 2, 2), _randomize(nn.LayerNorm(c), 5), nn.Conv2d(c, 2 * c, 2, 2)

    def forward(self, x):
        return self.down(NormBlocks.norm2d(self.norm, self.stem(x)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_rule_after_fold_norm_sees_the_shape_of_the_values_it_made(fmt):
    torch.manual_seed(0)
    model = NormThenDownsample().eval()
    report, run = optimized(fmt, model, torch.randn(2, 3, 24, 24), passes=("fold_norm", "factorize"), target="cpu",
                            cost_model="analytic")
    assert outcomes(report, "fold_norm") == {"applied": 1}
    reasons = [s.reason for s in report.sites if s.kind == "factorize"]
    assert len(reasons) == 2 and all(r.startswith("not factorable") for r in reasons), reasons
    assert fresh_error(run, model, (3, 3, 24, 24)) < 1e-5


def test_a_folded_layernorm_still_hands_torch_its_weight_and_bias():
    """torch's CPU layer_norm without weight and bias is the slower kernel (1.74-1.77x over 1x56x56x40,
    torch 2.14): the folded LayerNorm keeps γ = 1, β = 0 as constants, and is not folded again."""
    from passes.fx.lower import UnitAffineLayerNorm

    torch.manual_seed(0)
    model, x = NormBlocks().eval(), torch.randn(2, 3, 24, 24)
    fast = optimize(model, x, passes=("fold_norm",), target="cpu", cost_model="analytic")
    plain = [m for m in fast.modules() if isinstance(m, UnitAffineLayerNorm)]
    assert len(plain) == 3 and not any(p.requires_grad for m in plain for p in m.parameters())
    calls = [node for node in fast.graph.nodes if node.op == "call_module"
             and isinstance(fast.get_submodule(node.target), UnitAffineLayerNorm)]
    assert len(calls) == 3
    traced = torch.fx.symbolic_trace(plain[0])   # the call torch sees: layer_norm with tensors, not None
    (ln,) = [n for n in traced.graph.nodes if n.target is F.layer_norm]
    assert all(isinstance(a, torch.fx.Node) for a in ln.args[2:4])
    width = plain[0].normalized_shape
    assert torch.equal(plain[0].unit_weight, torch.ones(width)) and torch.equal(plain[0].unit_bias, torch.zeros(width))
    for m in fast.modules():    # the result's eval() is another issue's (30, item 1); optimize() only reads the flags
        m.training = False
    again = optimize(fast, x, passes=("fold_norm",), target="cpu", cost_model="analytic").rewrite_report
    assert outcomes(again, "fold_norm").get("applied", 0) == 0
    torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
