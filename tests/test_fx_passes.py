"""FX passes: each rule matches (node count changes), declines with its reason, numbers agree."""
import pytest
import torch
import torch.nn as nn

from passes.fx.lower import PaddedConv2d
from rewrite import optimize
from tests.fx_models import ConvBN, ControlFlow, SeparableConv, SharedConv, TiedWeights, factorable_conv
from tests.helpers import count_ops, max_rel


def sites(model, kind=None, status=None):
    return [s for s in model.rewrite_report.sites
            if (kind is None or s.kind == kind) and (status is None or s.status == status)]


def count(model, cls):
    """Modules of `cls`, plus the ATen calls that stand for one in an exported graph."""
    aten = {nn.Conv2d: "conv2d", nn.BatchNorm2d: "batch_norm"}.get(cls)
    return sum(isinstance(m, cls) for m in model.modules()) + (count_ops(model, aten) if aten else 0)


def check_same(opt, ref, x, tol=1e-5):
    with torch.no_grad():
        assert max_rel(opt(x), ref(x)) < tol


X8 = torch.randn(2, 8, 12, 12)


def test_fold_removes_batchnorm():
    m = ConvBN().eval()
    opt = optimize(m, X8, passes=("fold",), target="h100")
    assert count(opt, nn.BatchNorm2d) == 0 and count(m, nn.BatchNorm2d) == 1
    (s,) = sites(opt, "fold")
    assert s.status == "applied" and s.name == "conv" and s.rel_error < 1e-5 and s.predicted_speedup > 1
    check_same(opt, m, X8)


def test_fold_declines_when_conv_output_has_other_users():
    m = ConvBN(extra_user=True).eval()
    opt = optimize(m, X8, passes=("fold",), target="h100")
    (s,) = sites(opt, "fold")
    assert s.status == "declined" and "2 readers" in s.reason
    assert count(opt, nn.BatchNorm2d) == 1
    check_same(opt, m, X8)


def test_fold_declines_batchnorm_without_running_stats():
    m = ConvBN().eval()
    m.bn = nn.BatchNorm2d(16, track_running_stats=False).eval()
    opt = optimize(m, X8, passes=("fold",), target="h100")
    (s,) = sites(opt, "fold")
    assert s.status == "declined" and "batch statistics" in s.reason


def test_shared_module_and_tied_weights_fold_on_a_private_copy():
    """Each call of a shared conv folds its own BatchNorm into new weights; the other readers of
    the shared weight keep the original."""
    for model in (SharedConv(), TiedWeights()):
        opt = optimize(model.eval(), X8, passes=("fold",), target="h100")
        folds = sites(opt, "fold")
        assert folds and all(s.status == "applied" for s in folds)
        check_same(opt, model, X8)


def test_reverse_collapses_linear_separable_conv_when_cost_model_wins():
    m = SeparableConv(32, 64).eval()
    x = torch.randn(8, 32, 56, 56)
    opt = optimize(m, x, target="h100", passes=("fold", "reverse"))    # no fused kernel to beat
    assert count(opt, nn.Conv2d) == 1
    (s,) = sites(opt, "reverse")
    assert s.status == "applied" and s.predicted_speedup > 1 and "conv3x3 32->64" in s.after
    check_same(opt, m, x)


def test_reverse_declined_by_cost_model_on_cpu():
    m = SeparableConv(32, 64).eval()
    opt = optimize(m, torch.randn(1, 32, 16, 16), target="cpu", cost_model="analytic")
    (s,) = sites(opt, "reverse")
    assert s.status == "declined" and "cost model" in s.reason and count(opt, nn.Conv2d) == 2


@pytest.mark.parametrize("between, reason", [(nn.ReLU6(), "nonlinearity (relu6)"), (nn.Hardswish(), "nonlinearity (hardswish)")])
def test_reverse_declines_across_nonlinearity(between, reason):
    m = SeparableConv(32, 64, between=between).eval()
    x = torch.randn(2, 32, 28, 28)
    opt = optimize(m, x, target="h100")
    (s,) = sites(opt, "reverse")
    assert s.status == "declined" and reason in s.reason
    check_same(opt, m, x)


def test_reverse_through_batchnorm_needs_fold():
    m = SeparableConv(32, 64, between=nn.BatchNorm2d(32)).eval()
    x = torch.randn(8, 32, 56, 56)
    kept = optimize(m, x, passes=("reverse",), target="h100")
    assert "batch_norm between" in sites(kept, "reverse")[0].reason
    folded = optimize(m, x, passes=("fold", "reverse"), target="h100")
    assert sites(folded, "reverse", "applied") and count(folded, nn.Conv2d) == 1
    check_same(folded, m, x)


def test_factorize_exact_low_rank_conv_on_cpu_target():
    m = nn.Sequential(factorable_conv(32, 48)).eval()
    x = torch.randn(2, 32, 32, 32)
    opt = optimize(m, x, target="cpu", cost_model="analytic")
    (s,) = sites(opt, "factorize")
    assert s.status == "applied" and "exact dw→pw" in s.reason and s.rel_error < 1e-5
    convs = [c for c in opt.modules() if isinstance(c, nn.Conv2d)]
    assert [c.groups for c in convs] == [32, 1] and convs[1].kernel_size == (1, 1)
    check_same(opt, m, x)


def test_factorize_handles_asymmetric_same_padding():
    """padding='same' with an even kernel pads asymmetrically: lowered as a PaddedConv2d."""
    conv = factorable_conv(32, 48, k=4, padding="same")
    m = nn.Sequential(conv).eval()
    x = torch.randn(2, 32, 33, 31)
    opt = optimize(m, x, target="cpu", cost_model="analytic")
    assert sites(opt, "factorize", "applied")
    assert count(opt, PaddedConv2d) == 1
    check_same(opt, m, x)


def test_factorize_declines_full_rank_conv():
    m = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)).eval()
    opt = optimize(m, X8, target="cpu", cost_model="analytic")
    (s,) = sites(opt, "factorize")
    assert s.status == "declined" and "not factorable" in s.reason


def test_factorize_declines_grouped_conv():
    m = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=2)).eval()
    (s,) = sites(optimize(m, X8, target="h100"), "factorize")
    assert s.status == "declined" and "groups=2" in s.reason


def test_reflect_padding_is_not_absorbed():
    """padding_mode="reflect" is captured as a reflect pad, then a conv: the pad is no zero pad."""
    m = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect")).eval()
    opt = optimize(m, X8, target="h100")
    (s,) = sites(opt, "fold")
    assert s.status == "declined" and "reflect padding is not a zero pad" in s.reason
    check_same(opt, m, X8)


def test_untraceable_top_level_falls_back_to_submodules():
    m = ControlFlow().eval()
    x = torch.randn(2, 3, 32, 31)
    opt = optimize(m, x, target="h100", dynamic_spatial=True)
    assert any("could not be captured by torch.export" in n for n in opt.rewrite_report.notes)
    assert type(opt) is ControlFlow
    names = {s.name for s in sites(opt, "fold", "applied")}
    assert {"head.conv", "sep.pw"} <= names
    check_same(opt, m, x)
    check_same(opt, m, torch.randn(2, 3, 32, 32))


def test_site_rolled_back_when_it_misses_tolerance():
    m = ConvBN().eval()
    opt = optimize(m, X8, passes=("fold",), site_tolerance=1e-30, target="h100")
    (s,) = sites(opt, "fold")
    assert s.status == "rolled_back" and "exceeds tolerance" in s.reason
    assert count(opt, nn.BatchNorm2d) == 1
    check_same(opt, m, X8, 1e-7)


def test_check_off_applies_without_measuring():
    opt = optimize(ConvBN().eval(), X8, passes=("fold",), check=False, target="h100")
    (s,) = sites(opt, "fold")
    assert s.status == "applied" and s.rel_error is None and opt.rewrite_report.model_rel_error is None


def test_round_trip_reverse_then_factorize_recovers_a_separable_chain():
    """Collapse dw→pw on the H100 profile, then the CPU profile factorizes the dense conv back."""
    m = SeparableConv(32, 64).eval()
    x = torch.randn(8, 32, 56, 56)
    dense = optimize(m, x, target="h100", passes=("fold", "reverse"))
    assert count(dense, nn.Conv2d) == 1
    back = optimize(dense, x, target="cpu", passes=("factorize",), cost_model="analytic")
    (s,) = sites(back, "factorize", "applied")
    assert "exact dw→pw, multiplier 1" in s.reason
    convs = [c for c in back.modules() if isinstance(c, nn.Conv2d)]
    assert [c.groups for c in convs] == [32, 1]
    check_same(back, m, x)
