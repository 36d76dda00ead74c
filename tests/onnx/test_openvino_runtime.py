"""Issue 30 item 2: ONNX sites timed where the file will run, OpenVINO among the runtimes (optional)."""
import json

import pytest
import torch

from tests.fx_models import SeparableConv, factorable_conv

pytest.importorskip("onnx_graphsurgeon")


class TwoSites(torch.nn.Sequential):
    """A factorable dense conv (factorize site) and a dw → pw pair (reverse site): both timed."""

    def __init__(self):
        super().__init__(factorable_conv(16, 32, seed=1), SeparableConv(32, 48))


def _export(tmp_path):
    path = tmp_path / "m.onnx"
    torch.onnx.export(TwoSites().eval(), (torch.randn(1, 16, 24, 24),), str(path), opset_version=17, dynamo=False)
    return path


@pytest.mark.parametrize("runtime, says", [("openvino", "f32"), ("openvino-default", "the CPU's default")])
def test_sites_and_the_whole_model_are_timed_in_openvino(tmp_path, runtime, says):
    pytest.importorskip("openvino")
    import numpy as np
    import openvino as ov

    from rewrite import optimize_onnx

    path = _export(tmp_path)
    optimized, report = optimize_onnx(path, tmp_path / "out.onnx", runtime=runtime, timing_cache=tmp_path / "t.json")
    timed = [s for s in report.sites if s.measured_s]
    assert {s.kind for s in timed} >= {"factorize", "reverse"}
    assert report.runtime.startswith("OpenVINO") and says in report.runtime
    assert f"timed in {report.runtime}" in str(report) and json.loads(report.to_json())["runtime"] == report.runtime
    assert any(n.startswith(f"cost model: measured in {report.runtime}") for n in report.notes)
    assert report.model_measured_s is not None or not report.applied
    entries = json.loads((tmp_path / "t.json").read_text())["entries"]
    assert entries and all("OpenVINO" in key and "onnxruntime" not in key for key in entries)
    # the file OpenVINO reads computes what the original does
    x = np.random.default_rng(1).standard_normal((1, 16, 24, 24)).astype(np.float32)
    core = ov.Core()
    outs = [core.compile_model(str(p), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
            for p in (path, tmp_path / "out.onnx")]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def test_the_default_runtime_is_onnxruntime_and_an_unknown_one_is_refused(tmp_path):
    from rewrite import optimize_onnx

    path = _export(tmp_path)
    _, report = optimize_onnx(path, timing_cache=False, passes=("fold",))
    assert report.runtime.startswith("onnxruntime ")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; known: onnxruntime, openvino"):
        optimize_onnx(path, runtime="tensorrt")


def test_cli_runtime_openvino(tmp_path, capsys):
    pytest.importorskip("openvino")
    from rewrite.entry.cli import main

    path = _export(tmp_path)
    assert main([str(path), "-o", str(tmp_path / "out.onnx"), "--runtime", "openvino", "--no-timing-cache",
                 "-q", "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["runtime"].startswith("OpenVINO")
    assert "timed in OpenVINO" in capsys.readouterr().out


def test_a_missing_openvino_is_named_with_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    from rewrite.entry.cli import EXIT_BAD_INPUT, main

    monkeypatch.setitem(sys.modules, "openvino", None)     # as if not installed: `import openvino` fails
    assert main([str(_export(tmp_path)), "--runtime", "openvino", "-q"]) == EXIT_BAD_INPUT
    assert "pip install openvino" in capsys.readouterr().err
