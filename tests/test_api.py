"""optimize(): the public contract — copies, errors users can act on, the whole-model check."""
import copy

import pytest
import torch
import torch.nn as nn

from rewrite import Report, optimize
from tests.fx_models import ConvBN, SaturatedHead, SeparableConv
from tests.helpers import batchnorm, max_rel

X8 = torch.randn(2, 8, 12, 12)


def _conv_bn_relu_conv():
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), batchnorm(16, seed=4), nn.ReLU(),
                         nn.Conv2d(16, 8, 3, padding=1), nn.ReLU()).eval()


def test_input_model_untouched_unless_inplace():
    m = ConvBN().eval()
    before = copy.deepcopy(m.state_dict())
    opt = optimize(m, X8, target="h100")
    assert opt is not m and isinstance(m.bn, nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    # a copy: no parameter of the result is a tensor of the input
    inputs = {p.data_ptr() for p in m.parameters()}
    assert not any(p.data_ptr() in inputs for p in opt.parameters())


def test_inplace_reuses_the_input_weights_and_is_correct_on_fresh_inputs():
    """inplace=True promises: no copy of the weights is made (the conv no rewrite touched runs on
    the input's own Parameter objects), and the returned module computes the original function."""
    m = _conv_bn_relu_conv()
    reference = copy.deepcopy(m).double()
    untouched = m[3]
    opt = optimize(m, X8, inplace=True, target="h100")
    assert isinstance(opt.rewrite_report, Report)
    assert [s.kind for s in opt.rewrite_report.applied] == ["fold"]
    reused = [p for p in opt.parameters() if p is untouched.weight or p is untouched.bias]
    assert len(reused) == 2, "inplace=True copied the weights of a conv it did not rewrite"
    fresh = torch.randn(3, 8, 12, 12) * 2 + 0.5
    with torch.no_grad():
        assert max_rel(opt(fresh).double(), reference(fresh.double())) <= 1e-5
    # the same call without inplace copies those weights
    other = _conv_bn_relu_conv()
    copied = optimize(other, X8, target="h100")
    assert not any(p is other[3].weight or p is other[3].bias for p in copied.parameters())


def test_training_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        optimize(ConvBN().train(), X8, target="h100")


def test_non_float_model_and_inputs_are_clear_errors():
    m = ConvBN().eval()
    m.register_parameter("q", nn.Parameter(torch.zeros(3, dtype=torch.int8), requires_grad=False))
    with pytest.raises(TypeError, match="float models"):
        optimize(m, X8, target="h100")
    with pytest.raises(TypeError, match="float inputs"):
        optimize(ConvBN().eval(), X8.to(torch.int32), target="h100")
    with pytest.raises(TypeError, match="at least one tensor"):
        optimize(ConvBN().eval(), (3,), target="h100")


def test_unknown_option_is_a_clear_error():
    with pytest.raises(TypeError, match="unknown option"):
        optimize(ConvBN().eval(), X8, passes_to_run=("fold",), target="h100")
    with pytest.raises(TypeError, match="nn.Module"):
        optimize(lambda x: x, X8, target="h100")


def test_report_api():
    opt = optimize(SeparableConv(32, 64).eval(), torch.randn(8, 32, 56, 56), target="h100")
    r = opt.rewrite_report
    d = r.to_dict()
    assert {"sites", "counts", "model_rel_error", "target", "dtype"} <= set(d)
    for s in d["sites"]:
        assert {"name", "kind", "status", "reason", "predicted_speedup", "rel_error"} <= set(s)
    assert r.model_rel_error < 1e-4 and "whole-model check" in str(r)
    assert r.to_json().startswith("{")


def test_whole_model_failure_retries_and_never_returns_a_wrong_model():
    m = SeparableConv(32, 64).eval()
    x = torch.randn(8, 32, 56, 56)
    opt = optimize(m, x, model_tolerance=1e-30, target="h100")
    r = opt.rewrite_report
    assert any("whole-model check failed" in n for n in r.notes)
    assert not r.applied and any(s.status == "rolled_back" for s in r.sites)
    with torch.no_grad():
        assert torch.equal(opt(x), m(x))


def test_multiple_outputs_and_float64_model():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = ConvBN(), ConvBN()

        def forward(self, x):
            return {"a": self.a(x), "b": self.b(x)}

    m = Two().eval().double()
    x = X8.double()
    opt = optimize(m, x, target="h100")
    assert opt.rewrite_report.dtype == "float64"
    assert len(opt.rewrite_report.applied) == 2 and opt.rewrite_report.model_rel_error < 1e-8
    out, ref = opt(x), m(x)
    assert max_rel(out["a"], ref["a"]) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_is_held_to_its_own_accuracy(dtype):
    """In fp16/bf16 the original is itself far from float64: the tolerance scales with that."""
    import models_under_test as zoo

    model = zoo.get("mobilenet_v1").to(dtype)
    x = zoo.example_input("mobilenet_v1").to(dtype)
    opt = optimize(model, x, target="h100", force_fuse=True)   # every site, the 7x7 ones too
    r = opt.rewrite_report
    assert r.dtype == str(dtype).replace("torch.", "")
    assert all(s.status == "applied" for s in r.sites if s.kind in ("fold", "fuse"))
    assert r.model_baseline_error > 0 and r.model_rel_error <= r.model_tolerance
    assert r.model_tolerance >= 2 * r.model_baseline_error
    assert not any("check failed" in n for n in r.notes)


def test_returned_original_is_not_reported_as_passing():
    m = SeparableConv(32, 64).eval()
    opt = optimize(m, torch.randn(8, 32, 56, 56), model_tolerance=1e-30, target="h100")
    assert not any("passed the whole-model check" in n for n in opt.rewrite_report.notes)
    assert "returned the original model unchanged" in opt.rewrite_report.notes


def test_failed_attempt_is_reported_when_a_retry_passes(monkeypatch):
    """A rewritten model that crashes is rolled back; the final report says what happened."""
    import passes.fx.pipeline as pipeline

    real = pipeline.optimize_fx
    calls = []

    def flaky(model, example_inputs, options, dtype, **kwargs):
        calls.append(kwargs["state"].skip_sites)
        optimized, report = real(model, example_inputs, options, dtype, **kwargs)
        if len(calls) == 1:
            optimized.forward = lambda *a: (_ for _ in ()).throw(RuntimeError("injected"))
        return optimized, report

    monkeypatch.setattr(pipeline, "optimize_fx", flaky)
    m = SeparableConv(32, 64).eval()
    x = torch.randn(8, 32, 56, 56)
    opt = optimize(m, x, target="h100")
    notes = opt.rewrite_report.notes
    # first run, two bisection re-runs, then the final run without the culprit (the later site)
    assert len(calls) == 4 and calls[-1] == {"fuse:dw"}
    assert any("failed to run (RuntimeError: injected)" in n for n in notes)
    assert any("whole-model check failed" in n for n in notes)
    assert "passed the whole-model check with 1 site(s) rolled back" in notes
    with torch.no_grad():
        assert max_rel(opt(x), m(x)) < 1e-5


def test_inplace_rollback_rebuilds_the_original():
    m = SeparableConv(32, 64).eval()
    x = torch.randn(8, 32, 56, 56)
    with torch.no_grad():
        expected = m(x)
    opt = optimize(m, x, inplace=True, model_tolerance=1e-30, target="h100")
    assert "returned the original model unchanged" in opt.rewrite_report.notes
    with torch.no_grad():
        assert torch.equal(opt(x), expected)


def test_check_inputs_that_only_measure_rounding_give_a_warning_not_a_silent_pass():
    m = SaturatedHead().eval()
    with pytest.warns(UserWarning, match="the whole-model check is weak on these inputs"):
        opt = optimize(m, X8)
    report = opt.rewrite_report
    assert report.model_baseline_error > 1e-3 and len(report.warnings) == 1
    assert "pass example_inputs the model is used on" in report.warnings[0]
    assert "warning: the whole-model check is weak" in str(report)
    # an ordinary model: no warning
    assert optimize(_conv_bn_relu_conv(), X8).rewrite_report.warnings == ()


def test_weak_check_threshold_follows_the_dtype():
    from rewrite.numerics import weak_check_warning
    assert weak_check_warning(torch.float32, None, 1e-4, "x") is None
    assert weak_check_warning(torch.float32, 5e-4, 1e-3, "x") is None
    assert "is 2.0e-03 away" in weak_check_warning(torch.float32, 2e-3, 4e-3, "x")
    assert weak_check_warning(torch.float16, 5e-2, 1e-1, "x") is None       # fp16 originals are often this far
    assert weak_check_warning(torch.bfloat16, 0.2, 0.4, "x (how)").endswith("(x (how))")
