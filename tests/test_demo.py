"""The README's first command, `python -m rewrite.entry.demo tv/mobilenet_v2`, at its default (small)
input: it runs, the model it reports on is correct on fresh inputs, and what it prints is the
report and the timings of that model."""
import re

import torch

import models_under_test as zoo
from rewrite import measure
from rewrite.entry import demo
from tests.helpers import fresh_tolerance, max_rel


def test_demo_prints_the_report_of_a_correct_model(capsys, monkeypatch, tmp_path):
    runs, real_run = [], demo.run

    def recording_run(*args, **kwargs):   # the real demo.run, its result kept for the checks
        runs.append(real_run(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(demo, "run", recording_run)
    assert demo.main(["tv/mobilenet_v2", "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    (result,) = runs

    # the default path: no options but the model's own device, on the small default input
    assert tuple(result.x.shape) == (1, 3, 64, 64)
    report = result.fast.rewrite_report
    assert report.target == "cpu"
    assert str(report) in out and (tmp_path / "report.json").read_text() == report.to_json()
    assert f"input {tuple(result.x.shape)}" in out

    # the printed timings are the measured ones: the median per-pair speedup inside its confidence
    # interval, over at least the pairs a decision needs, and the times of the pair at that median
    m = re.search(r"speedup ([\d.]+)x \(95% CI ([\d.]+)-([\d.]+), (\d+) pairs\)\n  per call, in the (?:pair|two pairs \(their mean\)) "
                  r"at the median speedup: original ([\d.]+) ms, optimized ([\d.]+) ms", out)
    assert m, out
    ratio, low, high = map(float, m.groups()[:3])
    timing = result.timing
    assert ratio == round(timing.speedup, 2) and low <= ratio <= high
    assert int(m.group(4)) == timing.pairs >= measure.DECISIVE_PAIRS
    before, after = timing.times_at_median()
    assert float(m.group(5)) == round(before * 1e3, 1) and float(m.group(6)) == round(after * 1e3, 1)
    assert ("too wide to tell" in out) == (timing.high > measure.WIDE * timing.low)

    # the model it reports on computes the original function on fresh inputs (float64 reference)
    fresh = zoo.real_example_input("tv/mobilenet_v2", batch=2, seed=99)
    with torch.no_grad():
        original = result.model(fresh)
        reference = result.model.double()(fresh.double())
        result.model.float()
        assert max_rel(result.fast(fresh).double(), reference) <= fresh_tolerance(original, reference)
    # and the BatchNorm folds it reports are really gone from the model it returned
    folds = sum(s.kind == "fold" for s in report.applied)
    if folds:
        assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in result.fast.modules())


def test_timing_figures_agree_under_load():
    """Pairs timed on a busy machine (another job's bursts land on one form's calls more often, as
    when the demo printed "original 31.2 ms, optimized 6.5 ms (medians); speedup 1.31x (95% CI
    1.20-32.95, 10 pairs)"): each form's median over all pairs contradicts the ratio, the times
    printed do not, and the width is named."""
    before = [31.2e-3, 33.0e-3, 30.5e-3, 8.4e-3, 8.6e-3, 8.3e-3, 35.0e-3, 8.5e-3, 32.1e-3, 29.9e-3]
    after = [6.5e-3, 6.4e-3, 23.0e-3, 6.4e-3, 6.6e-3, 6.3e-3, 26.0e-3, 6.5e-3, 24.4e-3, 6.2e-3]
    timing = measure.Comparison.from_pairs(before, after)
    assert timing.before_s / timing.after_s > 3 * timing.speedup       # what used to be printed
    for pairs in (timing, measure.Comparison.from_pairs(before[:9], after[:9])):     # even and odd counts
        text = demo.timing_lines(pairs)
        m = re.search(r"speedup ([\d.]+)x .*original ([\d.]+) ms, optimized ([\d.]+) ms", text, re.S)
        assert abs(float(m.group(2)) / float(m.group(3)) - float(m.group(1))) < 0.02, text
        assert "the machine was busy" in text and "too wide to tell" in text

    quiet = measure.Comparison.from_pairs([10e-3 + i * 1e-5 for i in range(12)], [8e-3 + i * 1e-5 for i in range(12)])
    assert "busy" not in demo.timing_lines(quiet) and "original 10.1 ms, optimized 8.1 ms" in demo.timing_lines(quiet)
