"""The default path, as a user runs it: real torchvision and timm models through `optimize(model,
x)` with NO options (target: this CPU, the measured cost model, checks on), and their ONNX
exports through the `rewrite-onnx` command line with no options. Each result is judged on FRESH
inputs (another draw than the example) against the original model in float64 torch, and the
optimized ONNX file also against the original file in onnxruntime.

Small inputs (64², batch 2) keep this to about a minute on 2 cores. The timing cache is the
session's empty one (tests/conftest.py), so every timed site is measured here."""
from collections import Counter

import pytest
import torch

import models_under_test as zoo
from rewrite import optimize
from tests.helpers import fresh_tolerance, max_rel

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE, BATCH = 64, 2
TOLERANCE = 1e-4   # float32 whole-model tolerance (widened by the original's own error: fresh_tolerance)
MODELS = [
    "tv/mobilenet_v2",
    "tv/mobilenet_v3_large",        # squeeze-excitation
    "timm/mobileone_s0",            # reparameterizable: parallel branches to merge
    "timm/lcnet_100",               # timm, squeeze-excitation in its last stages
    "timm/mobilenetv4_conv_small",
]


def _fresh(name):
    return zoo.real_example_input(name, batch=BATCH, size=SIZE, seed=4321)   # another draw than the example


def _reference(model, x):
    """(the original float32 output, the float64 reference) on x."""
    with torch.no_grad():
        out = model(x)
        ref = model.double()(x.double())
    model.float()
    return out, ref


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    name = request.param
    return name, zoo.build_real(name), zoo.real_example_input(name, batch=BATCH, size=SIZE, seed=1)


def test_optimize_with_no_options(case):
    name, model, x = case
    fast = optimize(model, x)
    report = fast.rewrite_report
    assert report.target == "cpu"
    fresh = _fresh(name)
    original, reference = _reference(model, fresh)
    with torch.no_grad():
        assert max_rel(fast(fresh).double(), reference) <= fresh_tolerance(original, reference), str(report)
    applied = Counter(s.kind for s in report.applied)
    if applied:   # a rewrite kept: every BatchNorm folded into its conv or merged with its branch
        assert applied["fold"] > 0 and not any("batch_norm" in str(n.target) for n in fast.graph.nodes), str(report)
    else:         # nothing kept (the whole model measured slower): a copy of the original, said so
        assert any("original" in note for note in report.notes), str(report)
    if name == "timm/mobileone_s0":   # the branches merge whatever the timings: merges only remove work
        assert applied["merge"] >= 20, str(report)


def _conv_count(path):
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_rewrite_onnx_command_line_with_no_options(case, tmp_path, capsys):
    from rewrite.entry.cli import main

    name, model, x = case
    src, dst = tmp_path / "model.onnx", tmp_path / "model.opt.onnx"
    torch.onnx.export(model, (x,), str(src), dynamo=False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    assert main([str(src), "-o", str(dst)]) == 0, capsys.readouterr().out
    assert dst.exists()
    fresh = _fresh(name)
    opt_out = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": fresh.numpy()})[0]
    src_out = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": fresh.numpy()})[0]
    _, reference = _reference(model, fresh)
    src_out = torch.from_numpy(src_out)
    assert max_rel(src_out.double(), reference) <= TOLERANCE   # the export and the reference agree
    assert max_rel(torch.from_numpy(opt_out).double(), reference) <= fresh_tolerance(src_out, reference)
    assert _conv_count(dst) <= _conv_count(src)
    if name == "timm/mobileone_s0":
        assert _conv_count(dst) < _conv_count(src)
