"""The README's first command, `python -m rewrite.demo tv/mobilenet_v2`, at its default (small)
input: it runs, the model it reports on is correct on fresh inputs, and what it prints is the
report and the timings of that model."""
import re

import torch

import models_under_test as zoo
from rewrite import demo, measure
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

    # the printed timings are the measured ones: medians of paired calls, and the median per-pair
    # speedup inside its confidence interval, over at least the pairs a decision needs
    m = re.search(r"original ([\d.]+) ms, optimized ([\d.]+) ms \(medians\); speedup ([\d.]+)x "
                  r"\(95% CI ([\d.]+)-([\d.]+), (\d+) pairs\)", out)
    assert m, out
    before, after, ratio, low, high = map(float, m.groups()[:5])
    timing = result.timing
    assert before == round(timing.before_s * 1e3, 1) and after == round(timing.after_s * 1e3, 1)
    assert ratio == round(timing.speedup, 2) and low <= ratio <= high
    assert int(m.group(6)) == timing.pairs >= measure.DECISIVE_PAIRS

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
