"""The compatibility table for the ONNX path: what users do next with the file rewrite-onnx writes,
on a model where the rewrites apply (timm MobileOne-S0's TorchScript export, whose branches merge):
each step's outputs are compared with the original file's in onnxruntime, within 1e-4 relative."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import models_under_test as zoo
from tests.helpers import max_rel, to_onnx

TOL = 1e-4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("onnx_graphsurgeon")
    import onnx

    from rewrite import optimize_onnx
    folder = tmp_path_factory.mktemp("next_steps")
    model = zoo.build_real("timm/mobileone_s0", num_classes=10)
    x = zoo.real_example_input("timm/mobileone_s0", size=64)
    src, dst = folder / "mobileone.onnx", folder / "mobileone.opt.onnx"
    onnx.save(to_onnx(model, x), str(src))
    _, report = optimize_onnx(str(src), str(dst), target="cpu", cost_model="analytic")
    assert any(s.kind == "merge" for s in report.applied)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    return src, dst, feeds, _run(src, feeds)


def _run(path, feeds, **options):
    import onnxruntime as ort
    so = ort.SessionOptions()
    for key, value in options.items():
        setattr(so, key, value)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _same(out, want):
    assert np.asarray(out).shape == want.shape
    assert max_rel(torch.from_numpy(np.asarray(out, np.float32)), torch.from_numpy(want)) < TOL


def test_it_passes_the_full_onnx_checker(files):
    import onnx
    onnx.checker.check_model(onnx.load(str(files[1])), full_check=True)


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"])
def test_onnxruntime_at_every_optimization_level(files, level):
    import onnxruntime as ort
    _, dst, feeds, want = files
    _same(_run(dst, feeds, graph_optimization_level=getattr(ort.GraphOptimizationLevel, level)), want)


def test_onnxslim_over_it(files, tmp_path):
    import onnx
    import onnxslim
    _, dst, feeds, want = files
    slim = tmp_path / "slim.onnx"
    onnx.save(onnxslim.slim(onnx.load(str(dst))), str(slim))
    _same(_run(slim, feeds), want)


def test_another_batch_size(files):
    _, dst, feeds, _ = files
    x = {"x": np.concatenate([feeds["x"]] * 3)}
    _same(_run(dst, x), _run(files[0], x))


def test_onnxruntime_float16_conversion(files, tmp_path):
    onnxconverter_common = pytest.importorskip("onnxconverter_common")
    import onnx
    _, dst, feeds, want = files
    half = tmp_path / "half.onnx"
    onnx.save(onnxconverter_common.float16.convert_float_to_float16(onnx.load(str(dst)), keep_io_types=True), str(half))
    out = _run(half, feeds)
    assert np.asarray(out).shape == want.shape and max_rel(torch.from_numpy(out), torch.from_numpy(want)) < 5e-2


def test_openvino_reads_and_runs_it(files):
    ov = pytest.importorskip("openvino")
    _, dst, feeds, want = files
    compiled = ov.Core().compile_model(ov.Core().read_model(str(dst)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    _same(compiled(feeds)[0], want)
