"""The compatibility table: what users do next with the model `optimize()` returns.

Each test is one row of the README's "What you can do with the result", on two real models
(torchvision MobileNetV2 through the default options, the CPU's measured decisions, and timm
MobileOne-S0, whose branches merge, through the analytic cost model to keep the file fast),
random init with calibrated BatchNorm, at 64x64. Every step's output is compared with the
optimized model's own output and with the original model's, within 1e-4 relative.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

import models_under_test as zoo
from passes.fx.result import OptimizedModule
from rewrite import optimize
from tests.helpers import max_rel

MODELS = {"tv/mobilenet_v2": {}, "timm/mobileone_s0": {"target": "cpu", "cost_model": "analytic"}}
TOL = 1e-4


@dataclass
class Case:
    name: str
    original: nn.Module
    fast: OptimizedModule
    x: torch.Tensor
    expected: torch.Tensor      # the optimized model's output on x
    reference: torch.Tensor     # the original's


@pytest.fixture(scope="module", params=list(MODELS))
def case(request) -> Case:
    name = request.param
    original = zoo.build_real(name, num_classes=10)
    x = zoo.real_example_input(name, size=64)
    fast = optimize(original, x, **MODELS[name])
    assert isinstance(fast, OptimizedModule), fast.rewrite_report.notes   # a rewritten model, not a copy
    with torch.no_grad():
        expected, reference = fast(x), original(x)
    assert max_rel(expected, reference) < TOL
    return Case(name, original, fast, x, expected, reference)


def same(case: Case, out, x=None) -> None:
    """`out` (a tensor or array) is what the optimized model and the original give on x."""
    out = torch.as_tensor(out).float()
    if x is None:
        expected, reference = case.expected, case.reference
    else:
        with torch.no_grad():
            expected, reference = case.fast(x), case.original(x)
    assert out.shape == expected.shape
    assert max_rel(out, expected) < TOL and max_rel(out, reference) < TOL


def run(module, x):
    with torch.no_grad():
        return module(x)


def test_eval(case):
    assert case.fast.eval() is case.fast and not case.fast.training
    same(case, run(case.fast, case.x))


def test_train_false(case):
    assert case.fast.train(False) is case.fast
    assert not any(m.training for m in case.fast.modules())
    same(case, run(case.fast, case.x))


def test_train_true_says_inference_only_and_how_to_train(case):
    with pytest.raises(RuntimeError, match=r"inference only.*train the original model.*optimize\(\) leaves it "
                                           r"untouched"):
        case.fast.train()
    assert not any(m.training for m in case.fast.modules())
    same(case, run(case.fast, case.x))


def test_torch_save_and_load(case, tmp_path):
    path = tmp_path / "fast.pt"
    torch.save(case.fast, path)
    loaded = torch.load(path, weights_only=False)
    assert isinstance(loaded, OptimizedModule) and not loaded.training
    assert loaded.rewrite_report.sites == case.fast.rewrite_report.sites
    assert list(loaded.state_dict()) == list(case.fast.state_dict())
    same(case, run(loaded, case.x))
    with pytest.raises(RuntimeError, match="inference only"):
        loaded.train(True)
    with pytest.raises(ValueError, match=r"captured for inputs of shape \(batch, 3, 64, 64\)"):
        run(loaded, torch.randn(1, 3, 64, 72))
    loaded.eval()


def _onnxruntime(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_export_torchscript(case, tmp_path):
    path = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(case.fast, (case.x,), str(path), dynamo=False, opset_version=17)
    same(case, _onnxruntime(path, case.x))


def test_onnx_export_dynamo(case, tmp_path):
    pytest.importorskip("onnxscript")
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(case.fast, (case.x,), str(path), dynamo=True, verbose=False)
    same(case, _onnxruntime(path, case.x))


def test_jit_trace(case):
    with torch.no_grad():
        traced = torch.jit.trace(case.fast, (case.x,))
    same(case, run(traced, case.x))


def test_torch_export(case):
    program = torch.export.export(case.fast, (case.x,), strict=False)
    same(case, run(program.module(), case.x))


def test_torch_compile(case):
    compiled = torch.compile(case.fast)         # default mode (inductor)
    same(case, run(compiled, case.x))


def test_openvino_convert_model(case):
    ov = pytest.importorskip("openvino")
    converted = ov.convert_model(case.fast, example_input=case.x)
    compiled = ov.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    same(case, compiled(case.x.numpy())[0])


def test_deepcopy(case):
    clone = copy.deepcopy(case.fast)
    assert isinstance(clone, OptimizedModule) and clone is not case.fast
    same(case, run(clone, case.x))
    with pytest.raises(RuntimeError, match="inference only"):
        clone.train()


def test_state_dict_round_trip(case):
    clone = copy.deepcopy(case.fast)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    assert max_rel(run(clone, case.x), case.expected) > TOL      # the clone's weights really are gone
    clone.load_state_dict(case.fast.state_dict())
    same(case, run(clone, case.x))


def test_to_float64(case):
    wide = copy.deepcopy(case.fast).to(torch.float64)
    out = run(wide, case.x.double())
    assert out.dtype == torch.float64
    same(case, out)


def test_other_batch_size(case):
    x = zoo.real_example_input(case.name, batch=3, size=64, seed=5)
    same(case, run(case.fast, x), x)


def test_fused_sites_save_and_load_but_the_onnx_exporters_and_openvino_name_the_kernel_op(tmp_path):
    """A model with fused sites (a GPU target, or force_fuse) calls the `dwsep::fused_sep_conv`
    custom op. It pickles (the op's module is imported by the pickle), but neither ONNX exporter
    nor OpenVINO has a lowering for it: each refuses, naming the op (the README says to run
    rewrite-onnx on the ONNX export of the original instead)."""
    from tests.test_fx_fuse import X, SepBlock, Stem

    model = Stem(SepBlock(residual=True)).eval()
    fast = optimize(model, X, target="h100", force_fuse=True)
    assert any(s.kind == "fuse" and s.status == "applied" for s in fast.rewrite_report.sites)
    torch.save(fast, tmp_path / "fused.pt")
    loaded = torch.load(tmp_path / "fused.pt", weights_only=False)
    assert torch.equal(run(loaded, X), run(fast, X))
    for dynamo in (False, True):
        with warnings.catch_warnings(), pytest.raises(Exception, match="fused_sep_conv"):
            warnings.simplefilter("ignore")
            torch.onnx.export(fast, (X,), str(tmp_path / "fused.onnx"), dynamo=dynamo)
    ov = pytest.importorskip("openvino")
    with pytest.raises(Exception, match="fused_sep_conv"):
        ov.convert_model(fast, example_input=X)
