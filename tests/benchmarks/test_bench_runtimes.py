"""The runtimes benchmark's dry run (a tiny model, 3 rounds) writes its JSON and markdown, one row
per runtime asked for, each a paired ratio inside its interval; and the never-slower benchmark's
old form is the result with its folded LayerNorms' weight and bias dropped."""
import json

import pytest
import torch

from tests.benchmarks import bench_runtimes


def test_dry_run_writes_every_runtime_asked_for(tmp_path):
    pytest.importorskip("onnx_graphsurgeon")
    runtimes = ["eager", "onnxruntime"]
    try:
        import openvino  # noqa: F401
        runtimes += ["openvino_f32", "openvino_default"]
    except ImportError:
        pass
    out = tmp_path / "runtimes"
    assert bench_runtimes.main(["--dry-run", "--runtimes", ",".join(runtimes), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (row,) = result["rows"]
    assert row["model"] == "tiny" and list(row["runtimes"]) == runtimes and result["rounds"] == 3
    for name, r in row["runtimes"].items():
        assert r["low"] <= r["ratio"] <= r["high"] and r["original_ms"] > 0 and r["ours_ms"] > 0, name
        assert r["error"] < 1e-4, name
    for name in runtimes[1:]:
        assert row["runtimes"][name]["timed_in"].startswith("onnxruntime" if name == "onnxruntime" else "OpenVINO")
    md = out.with_suffix(".md").read_text()
    assert "original / ours (95% CI)" in md and md.count("| tiny |") == len(runtimes)
    assert "openvino" in result["versions"] and result["commit"]


def test_unknown_runtime_is_refused():
    with pytest.raises(SystemExit):
        bench_runtimes.main(["--dry-run", "--runtimes", "tensorrt"])


def test_paired_ratio_is_original_over_ours(monkeypatch):
    clock = [0.0]            # a clock the two forms advance by their own cost: 2 ms and 1 ms a call
    monkeypatch.setattr(bench_runtimes.time, "perf_counter", lambda: clock[0])

    def costs(seconds):
        return lambda x: clock.__setitem__(0, clock[0] + seconds)
    r = bench_runtimes.paired(costs(2e-3), costs(1e-3), None, 11)
    assert [r["low"], r["ratio"], r["high"]] == pytest.approx([2.0, 2.0, 2.0]) and r["rounds"] == 11
    assert r["original_ms"] == pytest.approx(2.0) and r["ours_ms"] == pytest.approx(1.0)


def test_the_never_slower_old_form_drops_the_folded_layernorms_affine():
    from passes.fx.lower import UnitAffineLayerNorm
    from rewrite import optimize
    from tests.benchmarks.bench_never_slower import without_affine
    from tests.rules.test_fold_norm import NormBlocks

    torch.manual_seed(0)
    model, x = NormBlocks().eval(), torch.randn(2, 3, 24, 24)
    fast = optimize(model, x, passes=("fold_norm",), target="cpu", cost_model="analytic")
    old = without_affine(fast)
    assert not any(isinstance(m, UnitAffineLayerNorm) for m in old.modules())
    assert sum(isinstance(m, torch.nn.LayerNorm) and not m.elementwise_affine for m in old.modules()) == 3
    torch.testing.assert_close(old(x), fast(x))
    assert without_affine(model) is None
