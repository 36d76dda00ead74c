"""One matcher, two formats: each real model optimized through FX, and its ONNX export
(TorchScript exporter, opset 17) optimized through optimize_onnx, on the default GPU target.

Both must pass their whole-model check, and they must find the same sites with the same kinds
and statuses. Folds are compared separately: the exporter folds an eval BatchNorm into its conv
itself, so the ONNX file has no BatchNorm left to fold.
"""
from collections import Counter

import pytest
import torch

import models_under_test as zoo
from rewrite import optimize, optimize_onnx

onnx = pytest.importorskip("onnx")


def _kinds(report, skip=("fold",)) -> Counter:
    return Counter((s.kind, s.status) for s in report.sites if s.kind not in skip)


@pytest.fixture(scope="module", params=zoo.real_names())
def both(request, tmp_path_factory):
    name = request.param
    model = zoo.build_real(name)
    x = zoo.real_example_input(name, batch=1, seed=3)
    fx_report = optimize(model, x, target="h100").rewrite_report
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    _, onnx_report = optimize_onnx(path, inputs={"x": x.numpy()}, target="h100")
    return name, fx_report, onnx_report


def test_onnx_export_passes_its_whole_model_check(both):
    name, _, onnx_report = both
    assert onnx_report.model_rel_error is not None and onnx_report.model_rel_error <= 1e-4, str(onnx_report)


def test_same_sites_kinds_and_statuses(both):
    name, fx_report, onnx_report = both
    assert _kinds(fx_report) == _kinds(onnx_report), f"{name}\nFX:\n{fx_report}\n\nONNX:\n{onnx_report}"


def test_no_batchnorm_fold_declined_in_either_format(both):
    name, fx_report, onnx_report = both
    for report in (fx_report, onnx_report):
        folds = [s for s in report.sites if s.kind == "fold" and s.status != "applied"
                 and not s.before.lower().startswith("pad")]
        assert all("readers" in s.reason or "shared" in s.reason for s in folds), folds
