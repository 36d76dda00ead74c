"""Issue 10: the target follows the model, the measured cost model decides by timing each site's
forms where the model runs, its timing cache, and the report of predicted against measured."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import rewrite.measure as measure
from rewrite import optimize
from rewrite.options import RewriteOptions
from rewrite.report import Report, Site
from rewrite.timing_cache import FORMAT, TimingCache, clear
from rewrite.timing_cache import main as cache_cli
from tests.fx_models import SeparableConv, factorable_conv


def _timed(report):
    return [s for s in report.sites if s.measured_s]


class TwoSites(nn.Sequential):
    """A factorable dense conv (factorize site) and a dw → pw pair (reverse site)."""

    def __init__(self):
        super().__init__(factorable_conv(16, 32, seed=1), SeparableConv(32, 48))


def test_a_cpu_model_is_optimized_for_the_cpu_by_measurement(tmp_path):
    model, x = TwoSites().eval(), torch.randn(2, 16, 24, 24)
    fast = optimize(model, x, timing_cache=tmp_path / "t.json")
    report = fast.rewrite_report
    assert report.target == "cpu" and any("fuse pass skipped" in n for n in report.notes)
    timed = _timed(report)
    assert {s.kind for s in timed} >= {"factorize", "reverse"}
    whole_model_slower = any("measured slower than the original" in n for n in report.notes)  # a tiny model: noise
    for s in timed:
        assert s.predicted_s[0] > 0 and s.predicted_s[1] > 0 and s.measured_s[0] > 0 and s.measured_s[1] > 0
        speedup, low, high, pairs = s.measured_ci
        assert low <= speedup <= high and pairs >= measure.MIN_REPEATS and s.measured_speedup == speedup
        if whole_model_slower:
            assert s.status != "applied"
        else:
            assert (s.status == "applied") == (speedup >= 1.05 and low > 1.0), s
    assert report.model_measured_s and all(t > 0 for t in report.model_measured_s)
    assert "whole model, measured" in str(report) and "cost model: measured on cpu" in str(report)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_an_explicit_gpu_target_on_a_cpu_model_predicts_instead(tmp_path):
    model, x = SeparableConv(32, 64, between=nn.ReLU()).eval(), torch.randn(2, 32, 16, 16)
    report = optimize(model, x, target="h100").rewrite_report
    assert report.target == "h100" and not _timed(report)
    assert [s.status for s in report.sites if s.kind == "fuse"] == ["applied"]


@pytest.mark.parametrize("options, message", [
    (dict(target="h100", cost_model="measured"), "times each site where the model runs"),
    (dict(cost_model="measured", check=False), "needs check=True"),
])
def test_impossible_measurements_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        optimize(SeparableConv().eval(), torch.randn(1, 32, 8, 8), **options)


def test_bad_cost_model_names_the_choices():
    with pytest.raises(ValueError, match="expected one of"):
        RewriteOptions(cost_model="guess")
    with pytest.raises(TypeError, match="chain_time"):
        RewriteOptions(cost_model=object())


def test_unchecked_runs_fall_back_to_the_analytic_model():
    opts = RewriteOptions(check=False).resolved("cpu")
    assert opts.target == "cpu" and not opts.measured


def _comparison(before_s, after_s, low=None, high=None, pairs=21):
    speedup = before_s / after_s
    return measure.Comparison(before_s, after_s, speedup, low or speedup * 0.95, high or speedup * 1.05, pairs)


def test_a_rewrite_measured_slower_is_declined(monkeypatch, tmp_path):
    monkeypatch.setattr(measure, "compare", lambda before, after, inputs, margin, **kw: _comparison(1e-3, 2e-3))
    model, x = TwoSites().eval(), torch.randn(2, 16, 24, 24)
    report = optimize(model, x, timing_cache=False).rewrite_report
    timed = _timed(report)
    assert timed and all(s.status == "declined" and s.reason.startswith("measured 0.50x (95% CI") for s in timed)
    assert not report.applied or {s.kind for s in report.applied} == {"fold"}


def test_an_inconclusive_timing_keeps_the_form_the_cost_model_says_removes_work(monkeypatch):
    """1.3x by the median, but the interval reaches below 1: the cost model's prediction decides."""
    monkeypatch.setattr(measure, "compare", lambda before, after, inputs, margin, **kw: _comparison(
        1.3e-3, 1e-3, low=0.97, high=1.6))
    report = optimize(TwoSites().eval(), torch.randn(2, 16, 24, 24), timing_cache=False).rewrite_report
    timed = _timed(report)
    assert timed and all("inconclusive" in s.reason for s in timed)
    for s in timed:
        assert (s.status == "applied") == (s.predicted_speedup >= 1.05), s
        assert ("removes work" in s.reason) == (s.status == "applied")


def test_a_timing_short_of_the_margin_beyond_the_noise_is_declined(monkeypatch):
    monkeypatch.setattr(measure, "compare", lambda before, after, inputs, margin, **kw: _comparison(
        1.02e-3, 1e-3, low=1.01, high=1.03))
    report = optimize(TwoSites().eval(), torch.randn(2, 16, 24, 24), timing_cache=False).rewrite_report
    timed = _timed(report)
    assert timed and all(s.status == "declined" and "< 1.05x" in s.reason for s in timed)


def test_median_interval_is_the_order_statistics_interval():
    assert measure.median_interval(list(range(1, 21))) == (6, 15)      # n = 20: P(Bin ≤ 5) = 0.021 ≤ 0.025
    assert measure.median_interval([5, 1, 4, 2, 3]) == (1, 5)          # n = 5: no k reaches 95%
    values = [1.0 + 0.01 * ((i * 37) % 11) for i in range(40)]
    low, high = measure.median_interval(values)
    assert low <= sorted(values)[19] <= high


def test_compare_extends_an_inconclusive_timing_and_stops_a_settled_one(monkeypatch):
    def timer_of(durations):       # a clock that reads the next duration for each call, whatever runs
        sequence = iter(durations)
        monkeypatch.setattr(measure, "_timer", lambda cuda: lambda fn, inputs: next(sequence))

    timer_of([2e-3, 1e-3] * 1000)                      # always 2x faster: settled after enough pairs
    few = measure.compare(lambda: None, lambda: None, (), 1.05, budget_s=0.0, min_repeats=5, extend=0)
    assert few.pairs == 5 and not few.faster(1.05) and not few.short_of(1.05)   # too few pairs decide nothing
    timer_of([2e-3, 1e-3] * 1000)
    settled = measure.compare(lambda: None, lambda: None, (), 1.05, budget_s=0.0, min_repeats=10, extend=3)
    assert settled.pairs == 10 and settled.faster(1.05) and settled.describe().startswith("2.00x (95% CI 2.00-2.00")
    timer_of(([2e-3, 1e-3] * measure.CALLS_PER_PAIR + [1e-3, 2e-3] * measure.CALLS_PER_PAIR) * 100)  # 2x faster,
    # then 2x slower, pair after pair: never settled
    unsettled = measure.compare(lambda: None, lambda: None, (), 1.05, budget_s=0.0, min_repeats=10, extend=3)
    assert unsettled.pairs == 40 and unsettled.low == 0.5 and unsettled.high == 2.0  # 1 + extend budgets
    assert not unsettled.faster(1.05) and not unsettled.slower(1.05)


def test_cache_command_line(tmp_path, capsys):
    path = tmp_path / "c.json"
    cache = TimingCache(path)
    cache.put("a | b", [1e-3, 2e-3, 0.5, 0.45, 0.55, 21])
    cache.save()
    assert cache_cli([str(path)]) == 0 and "1 entries" in capsys.readouterr().out
    assert cache_cli(["--clear", str(path)]) == 0 and not path.exists()


def test_paired_timings_alternate_and_stop(monkeypatch):
    calls = []
    before = lambda x: calls.append("b")  # noqa: E731
    after = lambda x: calls.append("a")   # noqa: E731
    timing = measure.compare(before, after, (torch.zeros(1),), 1.05, budget_s=0.0, min_repeats=3, extend=0)
    t_before, t_after = timing.before_s, timing.after_s
    assert t_before > 0 and t_after > 0
    timed = calls[2 * measure.WARMUP:]
    assert timed == ["b", "a"] * 3 * measure.CALLS_PER_PAIR


def test_report_groups_repeated_declines_but_json_keeps_every_site():
    sites = [Site(f"block{i}", "reverse", "declined", "nonlinearity (relu) between the convs") for i in range(4)]
    report = Report(tuple(sites) + (Site("head", "reverse", "declined", "something else"),), target="cpu",
                    dtype="float32")
    text = str(report)
    assert "4 sites" in text and "block0, block1, block2, ..." in text and "head" in text
    assert text.count("nonlinearity (relu)") == 1
    assert len(json.loads(report.to_json())["sites"]) == 5


def test_plot_of_predicted_against_measured(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from rewrite.entry.plot import main as plot_main
    report = optimize(TwoSites().eval(), torch.randn(2, 16, 24, 24), timing_cache=False).rewrite_report
    saved = tmp_path / "report.json"
    saved.write_text(report.to_json())
    assert plot_main([str(saved), "-o", str(tmp_path / "sites.png")]) == 0
    assert (tmp_path / "sites.png").read_bytes()[:4] == b"\x89PNG"
    saved.write_text(Report(target="cpu").to_json())
    assert plot_main([str(saved)]) == 2 and "no timed site" in capsys.readouterr().err


def test_onnx_sites_are_timed_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from rewrite import optimize_onnx
    model = TwoSites().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 16, 24, 24),), str(path), opset_version=17, dynamo=False)
    optimized, report = optimize_onnx(path, timing_cache=tmp_path / "t.json")
    timed = _timed(report)
    assert report.target == "cpu" and {s.kind for s in timed} >= {"factorize", "reverse"}
    assert report.model_measured_s and "onnxruntime" in json.loads((tmp_path / "t.json").read_text())["entries"].__repr__()
    _, analytic = optimize_onnx(path, cost_model="analytic")
    assert not _timed(analytic)


def test_decision_benchmark_scores_agreement_and_time_lost():
    from tests.benchmarks.bench_decisions import decisions
    sites = [Site("a", "reverse", "applied", predicted_speedup=2.0, measured_s=[2e-3, 1e-3]),      # both apply
             Site("b", "reverse", "declined", predicted_speedup=1.5, measured_s=[1e-3, 3e-3]),     # analytic loses 2 ms
             Site("c", "factorize", "applied", predicted_speedup=0.5, measured_s=[5e-3, 4e-3]),    # analytic loses 1 ms
             Site("d", "fold", "applied", predicted_speedup=1.3)]                                   # not timed
    report = Report(tuple(sites), target="cpu", dtype="float32")
    d = decisions(report, 1.05)
    assert (d["timed"], d["agree"]) == (3, 1) and d["lost_s"] == pytest.approx(3e-3)
    assert [x["site"] for x in d["disagreements"]] == ["b", "c"]


@pytest.mark.parametrize("hw, k, fused", [(16, 3, True), (7, 3, False), (16, 5, False)])
def test_analytic_gpu_model_declines_the_forms_measured_slower_on_the_h100(hw, k, fused):
    model = nn.Sequential(nn.Conv2d(32, 32, k, padding=k // 2, groups=32), nn.ReLU(), nn.Conv2d(32, 64, 1)).eval()
    x = torch.randn(2, 32, hw, hw)
    (site,) = [s for s in optimize(model, x, target="h100").rewrite_report.sites if s.kind == "fuse"]
    assert (site.status == "applied") == fused
    if not fused:
        assert "measured slower than eager" in site.reason and "2026-11-25-h100" in site.reason
        forced = optimize(model, x, target="h100", force_fuse=True).rewrite_report
        assert [s.status for s in forced.sites if s.kind == "fuse"] == ["applied"]


def _sites_faster_model_slower(before, after, inputs, margin, budget_s=None, **kw):
    return _comparison(1e-3, 2e-3) if budget_s == 2.0 else _comparison(1e-3, 0.5e-3)


def test_a_whole_model_measured_slower_loses_its_timed_sites_only(monkeypatch):
    whole = []

    def fake(before, after, inputs, margin, budget_s=None, **kw):
        """The sites faster; the whole model slower the first time, as fast as the original without
        its timed sites (a model still slower goes on to tests/test_refuted_removes_work.py's path)."""
        if budget_s == 2.0:
            whole.append(1)
            return _comparison(1e-3, 2e-3) if len(whole) == 1 else _comparison(1e-3, 1e-3, low=0.9, high=1.1)
        return _comparison(1e-3, 0.5e-3)
    monkeypatch.setattr(measure, "compare", fake)
    model = nn.Sequential(TwoSites(), nn.BatchNorm2d(48)).eval()   # the BN folds: it only removes work
    x = torch.randn(2, 16, 24, 24)
    out = optimize(model, x, timing_cache=False)
    report = out.rewrite_report
    assert any("measured slower than the original" in n and "applied on a timing are rolled back" in n
               for n in report.notes)
    rolled = report.by_status("rolled_back")
    assert rolled and {s.kind for s in rolled} >= {"factorize"} and all(
        s.reason.startswith("rolled back: the whole model measured slower") for s in rolled)
    assert report.applied and {s.kind for s in report.applied} == {"fold"}
    with torch.no_grad():
        assert torch.allclose(out(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_whole_model_within_the_noise_keeps_everything(monkeypatch):
    def fake(before, after, inputs, margin, budget_s=None, **kw):   # whole model 0.8x, but not beyond the noise
        return _comparison(1e-3, 1.25e-3, low=0.7, high=1.1) if budget_s == 2.0 else _comparison(1e-3, 0.5e-3)
    monkeypatch.setattr(measure, "compare", fake)
    report = optimize(TwoSites().eval(), torch.randn(2, 16, 24, 24), timing_cache=False).rewrite_report
    assert report.applied and not report.by_status("rolled_back")
    assert report.model_measured_ci == (0.8, 0.7, 1.1, 21)
    assert "whole model, measured: 0.80x (median of 21 paired calls, 95% CI 0.70-1.10)" in str(report)


def test_an_onnx_model_measured_slower_loses_its_timed_sites(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from rewrite import optimize_onnx

    monkeypatch.setattr(measure, "compare", _sites_faster_model_slower)
    path = tmp_path / "m.onnx"
    torch.onnx.export(TwoSites().eval(), (torch.randn(1, 16, 24, 24),), str(path), opset_version=17, dynamo=False)
    optimized, report = optimize_onnx(path, tmp_path / "out.onnx", timing_cache=False)
    import onnx
    original = onnx.load(str(path))
    assert [n.op_type for n in optimized.graph.node] == [n.op_type for n in original.graph.node]
    assert not report.applied and any("applied on a timing are rolled back" in n for n in report.notes)
    assert report.by_status("rolled_back") and all(s.reason.startswith("rolled back: the whole model measured slower")
                                                   for s in report.by_status("rolled_back"))
