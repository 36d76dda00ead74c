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
        if whole_model_slower:
            assert s.status != "applied"
        else:
            assert (s.status == "applied") == (s.measured_speedup >= 1.05), s
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


def test_a_rewrite_measured_slower_is_declined(monkeypatch, tmp_path):
    monkeypatch.setattr(measure, "paired_medians", lambda before, after, inputs, **kw: (1e-3, 2e-3))
    model, x = TwoSites().eval(), torch.randn(2, 16, 24, 24)
    report = optimize(model, x, timing_cache=False).rewrite_report
    timed = _timed(report)
    assert timed and all(s.status == "declined" and s.reason.startswith("measured 0.50x") for s in timed)
    assert not report.applied or {s.kind for s in report.applied} == {"fold"}


def test_the_timing_cache_makes_a_second_run_measure_nothing(tmp_path):
    path = tmp_path / "cache.json"
    model, x = TwoSites().eval(), torch.randn(2, 16, 24, 24)
    first = optimize(model, x, timing_cache=path).rewrite_report
    entries = json.loads(path.read_text())
    assert entries["format"] == FORMAT and len(entries["entries"]) == len(_timed(first)) > 0
    assert all("cpu" in key and "float32" in key for key in entries["entries"])
    second = optimize(model, x, timing_cache=path).rewrite_report
    assert all(s.measured_cached for s in _timed(second))
    assert "(0 site(s) timed" in " ".join(second.notes)
    assert [(s.name, s.status) for s in second.sites] == [(s.name, s.status) for s in first.sites]
    assert clear(path) and not path.exists() and not clear(path)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "someone else's", "entries": {}}),
                                     json.dumps({"format": FORMAT, "entries": {"k": [1.0, -2.0]}})],
                         ids=["corrupt", "foreign", "bad-entry"])
def test_a_bad_cache_file_is_ignored_with_a_warning_and_left_alone(tmp_path, content):
    path = tmp_path / "cache.json"
    path.write_text(content)
    with pytest.warns(UserWarning, match="timing cache .* ignored"):
        report = optimize(TwoSites().eval(), torch.randn(2, 16, 24, 24), timing_cache=path).rewrite_report
    assert _timed(report) and not any(s.measured_cached for s in report.sites)
    assert path.read_text() == content


def test_cache_command_line(tmp_path, capsys):
    path = tmp_path / "c.json"
    cache = TimingCache(path)
    cache.put("a | b", 1e-3, 2e-3)
    cache.save()
    assert cache_cli([str(path)]) == 0 and "1 entries" in capsys.readouterr().out
    assert cache_cli(["--clear", str(path)]) == 0 and not path.exists()


def test_paired_medians_alternate_and_stop(monkeypatch):
    calls = []
    before = lambda x: calls.append("b")  # noqa: E731
    after = lambda x: calls.append("a")   # noqa: E731
    t_before, t_after = measure.paired_medians(before, after, (torch.zeros(1),), budget_s=0.0, min_repeats=3)
    assert t_before > 0 and t_after > 0
    timed = calls[2 * measure.WARMUP:]
    assert timed == ["b", "a"] * 3


def test_report_groups_repeated_declines_but_json_keeps_every_site():
    report = Report(target="cpu", dtype="float32")
    for i in range(4):
        report.add(Site(f"block{i}", "reverse", "declined", "nonlinearity (relu) between the convs"))
    report.add(Site("head", "reverse", "declined", "something else"))
    text = str(report)
    assert "4 sites" in text and "block0, block1, block2, ..." in text and "head" in text
    assert text.count("nonlinearity (relu)") == 1
    assert len(json.loads(report.to_json())["sites"]) == 5


def test_plot_of_predicted_against_measured(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from rewrite.plot import main as plot_main
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
    report = Report(target="cpu", dtype="float32")
    sites = [Site("a", "reverse", "applied", predicted_speedup=2.0, measured_s=[2e-3, 1e-3]),      # both apply
             Site("b", "reverse", "declined", predicted_speedup=1.5, measured_s=[1e-3, 3e-3]),     # analytic loses 2 ms
             Site("c", "factorize", "applied", predicted_speedup=0.5, measured_s=[5e-3, 4e-3]),    # analytic loses 1 ms
             Site("d", "fold", "applied", predicted_speedup=1.3)]                                   # not timed
    for s in sites:
        report.add(s)
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


def test_a_whole_model_measured_slower_is_returned_unchanged(monkeypatch):
    timings = iter([(1e-3, 0.5e-3)] * 50)

    def fake(before, after, inputs, budget_s=None, **kw):   # sites faster, the whole model slower
        return (1e-3, 2e-3) if budget_s == 2.0 else next(timings)
    monkeypatch.setattr(measure, "paired_medians", fake)
    model, x = TwoSites().eval(), torch.randn(2, 16, 24, 24)
    out = optimize(model, x, timing_cache=False)
    report = out.rewrite_report
    assert not report.applied and any("measured slower than the original" in n for n in report.notes)
    assert all(s.reason.startswith("rolled back: the whole model measured slower") for s in report.sites
               if s.status == "rolled_back") and report.by_status("rolled_back")
    assert not isinstance(out, torch.fx.GraphModule)


def test_an_onnx_model_measured_slower_is_returned_unchanged(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from rewrite import optimize_onnx

    def fake(before, after, inputs, budget_s=None, **kw):   # sites faster, the whole model slower
        return (1e-3, 2e-3) if budget_s == 2.0 else (1e-3, 0.5e-3)
    monkeypatch.setattr(measure, "paired_medians", fake)
    path = tmp_path / "m.onnx"
    torch.onnx.export(TwoSites().eval(), (torch.randn(1, 16, 24, 24),), str(path), opset_version=17, dynamo=False)
    optimized, report = optimize_onnx(path, tmp_path / "out.onnx", timing_cache=False)
    import onnx
    original = onnx.load(str(path))
    assert [n.op_type for n in optimized.graph.node] == [n.op_type for n in original.graph.node]
    assert not report.applied and any("returned the original model unchanged" in n for n in report.notes)
