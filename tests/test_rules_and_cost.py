"""Rules decide with reasons; the cost model ranks forms the way the roofline says."""
import json

import pytest
import torch

from rewrite.algebra import collapse_dw_pw
from rewrite.cost_model import CPU, H100, RooflineCostModel, profile_for
from rewrite.ir import Activation, ConvSpec
from rewrite.options import RewriteOptions
from rewrite.report import Report, Site
from rewrite.rules import Decline, Plan, plan_factorize, plan_fold, plan_reverse
from tests.helpers import dw_spec, pw_spec, rand, random_affine

F32 = torch.float32


def test_fold_plan_is_a_single_conv_and_predicted_faster():
    plan = plan_fold(dw_spec(8), random_affine(8), (1, 8, 32, 32), F32, RewriteOptions(target="h100").resolved("cpu"))
    assert isinstance(plan, Plan) and len(plan.after) == 1 and plan.predicted_speedup > 1


def test_reverse_applied_on_wide_shallow_layer_declined_on_deep_one():
    """EfficientNetV2's observation: dense wins early (large H, few channels), loses late (against
    the separate convs: the fuse pass does not run here)."""
    opts = RewriteOptions(target="h100", passes=("fold", "reverse")).resolved("cpu")
    early = plan_reverse(dw_spec(32, bias=False).to(F32), pw_spec(32, 64).to(F32), (64, 32, 112, 112), F32, opts)
    late = plan_reverse(dw_spec(512, bias=False).to(F32), pw_spec(512, 512).to(F32), (64, 512, 14, 14), F32, opts)
    assert isinstance(early, Plan) and early.predicted_speedup > 1.05
    assert isinstance(late, Decline) and "cost model" in late.reason and late.predicted_speedup < 1


def test_reverse_must_beat_the_fused_kernel_when_fusion_runs():
    dw, pw = dw_spec(32, bias=False).to(F32), pw_spec(32, 64).to(F32)
    plan = plan_reverse(dw, pw, (64, 32, 112, 112), F32, RewriteOptions(target="h100").resolved("cpu"))
    assert isinstance(plan, Decline) and "against the fused dw+pw kernel" in plan.reason


def test_reverse_declines_non_complementary_pair():
    kxk = ConvSpec(rand(8, 8, 3, 3).float(), padding=(1, 1, 1, 1))
    d = plan_reverse(kxk, kxk, (1, 8, 8, 8), F32, RewriteOptions(target="h100").resolved("cpu"))
    assert isinstance(d, Decline) and "neither conv is a plain 1x1 conv" in d.reason
    expand_project = plan_reverse(pw_spec(8, 32), pw_spec(32, 8), (1, 8, 8, 8), F32, RewriteOptions(target="h100").resolved("cpu"))
    assert not isinstance(expand_project, Decline)     # pw → pw collapses (general pair)


def test_factorize_declines_full_rank_and_grouped():
    opts = RewriteOptions(target="h100").resolved("cpu")
    full = plan_factorize(ConvSpec(rand(16, 8, 3, 3).float()), (1, 8, 16, 16), F32, opts)
    assert isinstance(full, Decline) and "not factorable" in full.reason
    grouped = plan_factorize(ConvSpec(rand(16, 4, 3, 3).float(), groups=2), (1, 8, 16, 16), F32, opts)
    assert isinstance(grouped, Decline) and "groups=2" in grouped.reason


def test_factorize_exact_when_cost_model_wins():
    dense = collapse_dw_pw(dw_spec(64, bias=False), pw_spec(64, 64)).to(F32)
    plan = plan_factorize(dense, (8, 64, 56, 56), F32, RewriteOptions(target="cpu", cost_model="analytic").resolved("cpu"))
    assert isinstance(plan, Plan) and plan.tolerance is None and "exact dw→pw" in plan.note
    assert plan.after[0].is_depthwise and plan.after[1].is_pointwise


def test_factorize_respects_min_speedup():
    dense = collapse_dw_pw(dw_spec(64, bias=False), pw_spec(64, 64)).to(F32)
    d = plan_factorize(dense, (8, 64, 56, 56), F32, RewriteOptions(target="cpu", min_speedup=100.0, cost_model="analytic").resolved("cpu"))
    assert isinstance(d, Decline) and "< 100x" in d.reason


def test_approximate_factorization_only_with_budget():
    g = torch.Generator().manual_seed(0)
    dense = collapse_dw_pw(dw_spec(32, r=2, bias=False, gen=g), pw_spec(64, 64, gen=g))
    noisy = ConvSpec((dense.weight + 1e-3 * rand(*dense.weight.shape, gen=g)).float(), padding=(1, 1, 1, 1))
    shape = (8, 32, 56, 56)
    assert isinstance(plan_factorize(noisy, shape, F32, RewriteOptions(target="cpu", cost_model="analytic").resolved("cpu")), Decline)
    plan = plan_factorize(noisy, shape, F32, RewriteOptions(target="cpu", factorize_error_budget=0.05, cost_model="analytic").resolved("cpu"))
    assert isinstance(plan, Plan) and plan.tolerance == 0.05 and "approximate" in plan.note


def test_cost_model_roofline_numbers():
    model = RooflineCostModel("h100")
    pw = pw_spec(1024, 1024, bias=False).to(torch.float16)
    t = model.chain_time([pw], (64, 1024, 7, 7), torch.float16)
    flops = 2 * 64 * 49 * 1024 * 1024
    bytes_ = 2 * (2 * 64 * 1024 * 49 + 1024 * 1024)
    assert t == pytest.approx(max(flops / 800e12, bytes_ / 3.0e12) + H100.launch_overhead)
    assert model.chain_time([Activation("relu")], (1, 8, 4, 4), F32) > 0


def test_cost_model_profiles_and_injection():
    assert profile_for("cpu") is CPU and profile_for(H100) is H100
    with pytest.raises(ValueError, match="unknown target"):
        profile_for("tpu")

    class Flat:
        profile = CPU

        def chain_time(self, layers, input_shape, dtype):
            return float(len(layers))

    dense = collapse_dw_pw(dw_spec(8, bias=False), pw_spec(8, 8)).to(F32)
    plan = plan_factorize(dense, (1, 8, 8, 8), F32, RewriteOptions(cost_model=Flat(), min_speedup=0.1).resolved("cpu"))
    assert plan.predicted_speedup == pytest.approx(0.5)


def test_options_validate():
    with pytest.raises(ValueError, match="unknown pass"):
        RewriteOptions(passes=("fold", "magic"), target="h100")
    with pytest.raises(ValueError, match="unknown target"):
        RewriteOptions(target="a100x")
    with pytest.raises(ValueError, match="budget"):
        RewriteOptions(factorize_error_budget=2.0, target="h100")
    assert RewriteOptions(passes=("reverse", "fold"), target="h100").passes == ("fold", "reverse")


def test_report_serializes_and_prints():
    sites = (Site("features.1.conv", "fold", "applied", "", 1.9, 2e-7, "dw3x3 32->32 → affine", "dw3x3 32->32"),
             Site("features.2.conv", "reverse", "declined", "nonlinearity (relu6) between", None, None, "dw → pw"))
    r = Report(sites, target="h100", dtype="float32", model_rel_error=1e-6, model_max_abs_error=1e-5,
               model_tolerance=1e-4)
    d = json.loads(r.to_json())
    assert d["counts"]["fold"]["applied"] == 1 and d["sites"][1]["status"] == "declined"
    text = str(r)
    assert "features.1.conv" in text and "1.90x" in text and "relu6" in text and "whole-model check" in text
    with pytest.raises(ValueError):
        Site("x", "explode", "applied")
    with pytest.raises(ValueError):
        Site("x", "fold", "maybe")
