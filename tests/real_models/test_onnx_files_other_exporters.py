"""Answers: Does optimize_onnx take files as other exporters (Paddle2ONNX and the rest) write them?
Takes about 29 s (16 tests) on the 2-core development machine shared with other jobs
(2026-12-07). Was tests/onnx/test_onnx_real_files.py.

Files as other exporters write them: dynamic dimensions as -1, 0, empty or named; the float64
whole-model reference (and its fallbacks) that lets exact rewrites of deep models pass while a
wrong one is still caught; the generic clean-up by onnxslim; a real Paddle2ONNX file.

The real file is PaddleOCR's text-direction classifier from the rapidocr-onnxruntime==1.4.4 wheel
(.ci/setup installs the wheel without its dependencies: opencv and the rest are not needed to read
a file from it). Without it those tests skip and say how to get it; nothing here downloads."""
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rewrite.entry.onnx_api as onnx_api
from passes.onnx import reference
from passes.onnx.runtime import loosened
from passes.onnx.adapter import OnnxAdapter
from rewrite import optimize_onnx
from rewrite.entry.cli import main
from rewrite.entry.onnx_api import OnnxInputError
from tests.onnx.onnx_graphs import G, max_rel, run, sites
from tests.real_models.helpers import CLS, real_file


def dynamic_model(batch, height, width):
    g = G()
    x = g.input("x", [batch, 8, height, width])
    h = g.relu(g.bn(g.conv(x, 8, 16), 16))
    g.output(g.bn(g.conv(h, 16, 8, k=1, pads=[0] * 4), 8))
    model = g.model()
    del model.graph.output[0].type.tensor_type.shape.dim[:]   # as some exporters leave it
    return model


# ------------------------------------------------------------------ dynamic dimensions
@pytest.mark.parametrize("batch, height, width", [(-1, "?", "?"), (0, 0, 0), (None, None, None),
                                                  ("p2o.DynamicDimension.0", -1, "w")])
def test_dynamic_dims_in_every_spelling(tmp_path, batch, height, width):
    model = dynamic_model(batch, height, width)
    x = np.random.default_rng(0).standard_normal((1, 8, 48, 40)).astype(np.float32)
    out, report = optimize_onnx(model, inputs={"x": x}, passes=("fold",), target="h100")
    assert len(sites(report, "fold", "applied")) == 2
    # onnxruntime takes a declared 0 for a fixed empty dimension: compared here with names for them
    assert max_rel(run(loosened(out), {"x": x})[0], run(loosened(model), {"x": x})[0]) < 1e-5
    assert out.graph.input[0] == model.graph.input[0]          # the declaration is kept as written
    # random check inputs: a dynamic batch is 1, a dynamic spatial dim 64
    _, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert "x (1, 8, 64, 64); dynamic spatial dims set to 64" in report.notes[0]
    with pytest.raises(OnnxInputError, match="has rank 3, the model declares rank 4"):
        optimize_onnx(model, inputs={"x": x[0]}, target="h100")
    with pytest.raises(OnnxInputError, match=r"dimension 1 is fixed at 8"):
        optimize_onnx(model, inputs={"x": x[:, :3]}, target="h100")


def test_cli_accepts_any_matching_shape_and_refuses_a_wrong_one(tmp_path, capsys):
    path, npz = tmp_path / "dyn.onnx", tmp_path / "x.npz"
    onnx.save_model(dynamic_model(-1, "?", "?"), path)
    np.savez(npz, x=np.zeros((1, 8, 48, 192), np.float32))
    assert main([str(path), "-q", "--inputs", str(npz), "--passes", "fold", "-o", str(tmp_path / "o.onnx")]) == 0
    assert main([str(path), "-q", "--input-shape", "x:2,8,32,96", "--passes", "fold"]) == 0
    np.savez(npz, x=np.zeros((1, 3, 48, 192), np.float32))
    assert main([str(path), "-q", "--inputs", str(npz)]) == 2
    assert "dimension 1 is fixed at 8" in capsys.readouterr().err


def test_a_size_the_model_runs_at_is_found():
    """A model that cannot run at 64 (here: a Reshape to a fixed 224-wide row) gets the next size."""
    g = G()
    x = g.input("x", ["N", 3, "H", "W"])
    h = g.bn(g.conv(x, 3, 4), 4)
    shape = g.add_raw(onnx.numpy_helper.from_array(np.array([1, 4, -1, 224], np.int64), "shape"))
    g.output(g.node("Reshape", [h, shape]))
    _, report = optimize_onnx(g.model(), passes=("fold",), target="h100")
    assert "x (1, 3, 224, 224); dynamic spatial dims set to 224" in report.notes[0]
    assert len(sites(report, "fold", "applied")) == 1


# ------------------------------------------------------------------ the float64 reference
def test_float64_reference_agrees_with_onnxruntime_on_the_ops_it_reimplements():
    g = G()
    x = g.input("x", [1, 6, 15, 17])
    a = g.conv(x, 6, 6, k=3, groups=6, stride=2, pads=[0, 1, 1, 2])          # depthwise, asymmetric pads
    b = g.conv(x, 6, 12, k=3, groups=6, auto_pad="SAME_UPPER")               # channel multiplier 2
    c = g.conv(x, 6, 4, k=3, dilation=2, stride=1, pads=[2] * 4)             # dense, dilated
    d = g.conv(x, 6, 6, k=5, groups=3, auto_pad="SAME_LOWER", stride=2)      # grouped
    w = g.init("wt", g.weight((12, 3, 2, 2)))
    up = g.node("ConvTranspose", [b, w], strides=[2, 2], group=2, kernel_shape=[2, 2])
    scales = g.init("scales", [1, 1, 2, 2])
    roi = g.init("roi", np.zeros(0))
    near = g.node("Resize", [a, roi, scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")
    lin = g.node("Resize", [c, roi, scales], mode="linear", coordinate_transformation_mode="half_pixel")
    for t in (g.bn(d, 6, momentum=0.9), up, near, lin):
        g.output(t)
    model = g.model()
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 6, 15, 17)).astype(np.float32)}
    exact = reference.evaluate(model, feeds)
    for name, got in zip(exact, run(model, feeds)):
        assert exact[name].dtype == np.float64 and exact[name].shape == got.shape
        assert max_rel(got, exact[name]) < 1e-5, name


def test_float64_reference_declines_what_it_cannot_widen_and_bounds_its_time():
    g = G()
    x = g.input("x", [1, 4, 8, 8])
    q = g.node("DynamicQuantizeLinear", [x], n_out=3)
    g.output(g.node("DequantizeLinear", q))
    with pytest.raises(reference.ReferenceUnavailable, match="DynamicQuantizeLinear"):
        reference.evaluate(g.model(), {"x": np.zeros((1, 4, 8, 8), np.float32)})
    model = dynamic_model("N", 8, 8)
    with pytest.raises(reference.ReferenceUnavailable, match="time budget"):
        reference.evaluate(model, {"x": np.zeros((1, 8, 8, 8), np.float32)}, budget_s=0.0)


def test_without_float64_the_original_rounding_is_estimated(monkeypatch):
    monkeypatch.setattr(onnx_api, "REFERENCE_BUDGET_S", 0.0)
    _, report = optimize_onnx(deep_model(), passes=("fold",), target="h100")
    note = next(n for n in report.notes if n.startswith("whole-model reference"))
    assert "no float64 reference" in note and "onnxruntime with graph optimizations on vs off" in note
    assert report.applied and report.model_rel_error <= report.model_tolerance


def deep_model(blocks: int = 24, c: int = 16, size: int = 24):
    """A deep conv → BN → ReLU stack with a depthwise conv → BN in every other block."""
    g = G(seed=7)
    h = g.input("x", ["N", c, size, size])
    for i in range(blocks):
        h = g.conv(h, c, c, k=3, groups=c if i % 2 else 1, name=f"conv{i}")
        h = g.relu(g.bn(h, c, name=f"bn{i}"))
    g.output(h)
    return g.model()


def _corrupt(monkeypatch, name: str, factor: float = 1.01):
    """Break one site after its own check passed: scale the weight it commits."""
    real = OnnxAdapter.commit
    hit = []

    def commit(self, match, plan, lowered):
        if match.name == name:
            weight = lowered[0].inputs[1]
            weight.values = (weight.values * factor).astype(weight.values.dtype)
            hit.append(name)
        return real(self, match, plan, lowered)
    monkeypatch.setattr(OnnxAdapter, "commit", commit)
    return hit


def test_deep_model_exact_folds_pass_against_float64():
    model = deep_model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert len(sites(report, "fold", "applied")) == 24 and not sites(report, status="rolled_back")
    assert report.model_baseline_error > 0 and report.model_rel_error <= report.model_tolerance
    assert report.model_tolerance == max(1e-4, 2 * report.model_baseline_error)
    assert "original evaluated in float64" in report.notes[1]


def test_deep_model_a_wrong_site_is_still_caught(monkeypatch):
    model = deep_model()
    hit = _corrupt(monkeypatch, "conv13", 1.05)      # one of 24 layers 5% off
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert hit
    (culprit,) = sites(report, "fold", "rolled_back")
    assert culprit.name == "conv13" and "found by bisection" in culprit.reason
    assert len(sites(report, "fold", "applied")) == 23 and report.model_rel_error <= report.model_tolerance
    x = {"x": np.random.default_rng(5).standard_normal((2, 16, 24, 24)).astype(np.float32)}
    assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-4


# ------------------------------------------------------------------ the generic clean-up
def paddle_like():
    """Weights as Constant nodes, a dead branch: what onnxslim folds away."""
    g = G()
    x = g.input("x", ["N", 4, "H", "W"])
    w = g.node("Constant", [], value=onnx.numpy_helper.from_array(g.weight((8, 4, 3, 3)).astype(np.float32), "w"))
    h = g.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1] * 4)
    g.node("Relu", [h])                                  # dead
    g.output(g.relu(g.bn(h, 8)))
    return g.model()


def test_cleanup_by_onnxslim():
    pytest.importorskip("onnxslim", reason="onnxslim not installed (the [onnx] and [test] extras install it)")
    model = paddle_like()
    before = model.SerializeToString()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert model.SerializeToString() == before
    assert any(n.startswith("generic clean-up by onnxslim") for n in report.notes), report.notes
    assert "Constant" not in [n.op_type for n in out.graph.node] and len(out.graph.node) == 2   # Conv, Relu
    assert list(out.graph.input) == list(model.graph.input) and list(out.graph.output) == list(model.graph.output)
    x = {"x": np.random.default_rng(0).standard_normal((2, 4, 9, 11)).astype(np.float32)}
    assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-5


def test_without_onnxslim_the_passes_run_on_the_model_as_it_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxslim", None)      # as on a machine without it: import fails
    out, report = optimize_onnx(paddle_like(), passes=("fold",), target="h100")
    assert any("generic clean-up skipped: onnxslim is not installed" in n for n in report.notes)
    assert len(sites(report, "fold", "applied")) == 1


# ------------------------------------------------------------------ a real Paddle2ONNX file
def test_real_classifier_declared_minus_one_and_question_marks(tmp_path):
    src = real_file(*CLS)
    data = src.read_bytes()
    npz, out = tmp_path / "x.npz", tmp_path / "cls.onnx"
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    np.savez(npz, x=x)
    report = tmp_path / "r.json"
    code = main([str(src), "-o", str(out), "--inputs", str(npz), "-q", "--report", str(report),
                 "--timing-cache", str(tmp_path / "t.json")])
    assert code == 0 and src.read_bytes() == data
    import json
    r = json.loads(report.read_text())
    assert r["counts"]["fold"]["applied"] >= 30 and r["model_rel_error"] <= r["model_tolerance"]
    fresh = {"x": np.random.default_rng(1).standard_normal((2, 3, 48, 160)).astype(np.float32)}
    assert max_rel(run(onnx.load(str(out)), fresh)[0], run(onnx.load(str(src)), fresh)[0]) < 1e-4


def test_real_classifier_a_wrong_site_is_still_caught(monkeypatch):
    model = onnx.load(str(real_file(*CLS)))
    bn_inputs = {n.input[0] for n in model.graph.node if n.op_type == "BatchNormalization"}
    conv = [n.name for n in model.graph.node if n.op_type == "Conv" and n.output[0] in bn_inputs][20]
    hit = _corrupt(monkeypatch, conv)
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    out, report = optimize_onnx(model, inputs={"x": x}, passes=("fold",), target="h100", cleanup=False)
    assert set(hit) == {conv}                         # every re-run of the passes corrupts it again
    assert {s.name for s in sites(report, "fold", "rolled_back")} == {conv}   # its folds (one key) only
    assert len(sites(report, "fold", "applied")) >= 30 and report.model_rel_error <= report.model_tolerance
    assert max_rel(run(out, {"x": x})[0], run(model, {"x": x})[0]) < 1e-4


def test_a_spent_time_budget_stops_the_bisection_and_says_so(monkeypatch):
    import rewrite.entry.retry as retry
    monkeypatch.setattr(retry, "BISECTION_MAX_S", 0.0)
    hit = _corrupt(monkeypatch, "conv13", 1.05)
    out, report = optimize_onnx(deep_model(), passes=("fold",), target="h100")
    assert hit and not report.applied
    notes = report.notes
    assert any("bisection found no culprit set within 0 re-runs" in n and "stopped at its time budget" in n
               for n in notes), notes
    assert "retrying without any rewrite" in notes          # every applied site is a fold: no folds-only rung
    assert notes[-1] == "passed the whole-model check with every rewrite rolled back"
