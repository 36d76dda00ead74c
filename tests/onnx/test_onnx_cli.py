"""The command line, run as a subprocess on real files: output, report, exit codes."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch

import rewrite.entry.onnx_api as onnx_api
from rewrite.entry.cli import main
from tests.onnx.onnx_graphs import G

SCRIPT = Path(sys.executable).with_name("rewrite-onnx")


class SmallNet(torch.nn.Module):
    """stem conv+BN+ReLU6, one inverted residual block (dw → pw), a linear dw→pw pair."""

    def __init__(self):
        super().__init__()
        bn = torch.nn.BatchNorm2d
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), bn(16), torch.nn.ReLU6())
        self.dw = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), bn(16), torch.nn.ReLU6())
        self.pw = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1, bias=False), bn(16))
        self.sep = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16), torch.nn.Conv2d(16, 32, 1))

    def forward(self, x):
        x = self.stem(x)
        return self.sep(x + self.pw(self.dw(x)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallNet()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("cli") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(1, 3, 32, 32),), path, dynamo=False, opset_version=13,
                          do_constant_folding=False, input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rewrite", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_optimizes_a_real_file(exported, tmp_path):
    out, report = tmp_path / "fast.onnx", tmp_path / "report.json"
    result = cli(exported, "-o", out, "--report", report, "--target", "h100", "-v")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("site") and "whole-model check: rel error" in result.stdout
    assert "rewrite-onnx: " in result.stdout.splitlines()[-1] and f"wrote {out}" in result.stdout
    assert "[1/" in result.stderr and "fold pass" in result.stderr
    data = json.loads(report.read_text())
    counts = data["counts"]
    # the residual block fuses; the linear dw→pw pair is collapsed or fused, per the cost model
    assert counts["fold"]["applied"] == 3 and counts["fuse"]["applied"] >= 1
    assert counts["fuse"]["applied"] + counts.get("reverse", {}).get("applied", 0) == 2
    assert data["model_rel_error"] < 1e-4 and data["warnings"] == [] and "warning:" not in result.stderr
    onnx.checker.check_model(out, full_check=True)


def test_console_script_without_checks(exported, tmp_path):
    out = tmp_path / "fast.onnx"
    result = subprocess.run([str(SCRIPT), str(exported), "-o", str(out), "--no-check", "--passes", "fold,reverse",
                             "--target", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "fold" in result.stdout and out.exists()
    assert "whole-model check" not in result.stdout


def test_cli_bad_input_exits_2_and_writes_nothing(exported, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    result = cli(bad, "-o", tmp_path / "out.onnx")
    assert result.returncode == 2 and "not a valid ONNX model" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {bad}: ")
    assert not (tmp_path / "out.onnx").exists()
    result = cli(exported, "-o", exported)
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    result = cli(exported, "--passes", "fold,magic")
    assert result.returncode == 2 and "unknown pass" in result.stderr


def test_cli_dry_run(exported, capsys):
    assert main([str(exported), "-q", "--target", "cpu"]) == 0
    assert "dry run, nothing written" in capsys.readouterr().out


def test_cli_failed_check_exits_1(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_api, "_passes", lambda *args: (False, onnx_api.ModelCheck()))
    code = main([str(exported), "-o", str(tmp_path / "out.onnx"), "--report", str(tmp_path / "r.json"), "-q"])
    captured = capsys.readouterr()
    assert code == 1 and "whole-model check" in captured.err and "rolled_back" in captured.out
    assert not (tmp_path / "out.onnx").exists() and (tmp_path / "r.json").exists()


def test_cli_internal_error_exits_3(exported, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(onnx_api, "optimize_graph", boom)
    assert main([str(exported), "-q"]) == 3
    assert "internal error (RuntimeError: boom)" in capsys.readouterr().err


def test_cli_input_shape_option(tmp_path, capsys):
    g = G()
    g.output(g.bn(g.conv(g.input("x", ["N", 8, "H", "W"]), 8, 16), 16))
    path = tmp_path / "dyn.onnx"
    onnx.save_model(g.model(), path)
    assert main([str(path), "-q", "--input-shape", "x:2,8,16,16", "--target", "cpu"]) == 0
    assert main([str(path), "-q", "--input-shape", "x:2,9,16,16"]) == 2
    assert "does not match the declared" in capsys.readouterr().err


def nhwc_file(path, channels=3):
    """A TF / Keras export: an NHWC image with dynamic H and W (and channels, when None) scaled,
    transposed to NCHW, then a stem conv with no padding (a height of 1 fails it) + BN + ReLU
    and a dw → pw pair."""
    g = G()
    x = g.node("Mul", [g.input("x", ["N", "M1", "M2", channels if channels else "C"]), g.scalar(1 / 255)])
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.relu(g.bn(g.conv(x, 3, 8, pads=[0, 0, 0, 0]), 8))
    g.output(g.conv(g.conv(x, 8, 8, groups=8), 8, 16, k=1))
    onnx.save_model(g.model(), path)
    return path


@pytest.mark.parametrize("channels", [3, None])
def test_nhwc_input_with_dynamic_spatial_dims_gets_its_layout_from_the_transpose(tmp_path, capsys, channels):
    """Read as NCHW, `N, M1, M2, 3` got the check input (1, 1, 64, 3) and the stem refused it."""
    path = nhwc_file(tmp_path / "nhwc.onnx", channels)
    assert main([str(path), "-o", str(tmp_path / "out.onnx"), "--target", "cpu", "--cost-model", "analytic",
                 "--report", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert "check inputs: seeded random, x (1, 64, 64, 3); dynamic spatial dims set to 64" in " ".join(report["notes"])
    assert any(s["kind"] == "fold" and s["status"] == "applied" for s in report["sites"])
    out = onnx.load(tmp_path / "out.onnx")
    assert [d.dim_param for d in out.graph.input[0].type.tensor_type.shape.dim][:3] == ["N", "M1", "M2"]


def test_layout_is_read_through_to_the_first_conv():
    from passes.onnx.runtime import layout, random_inputs
    g = G()
    g.output(g.conv(g.input("x", ["N", "C", "H", "W"]), 5, 8))
    model = g.model()
    assert layout(model, "x", 4) == (1, (2, 3), 5)
    assert random_inputs(model, batch=2, spatial=32)["x"].shape == (2, 5, 32, 32)
    g = G()
    g.output(g.node("Relu", [g.input("x", ["N", "H", "W"])]))    # no conv: channels first, as before
    assert random_inputs(g.model(), spatial=32)["x"].shape == (1, 1, 32)


def test_missing_onnx_package_is_named_with_its_install_command(tmp_path):
    # The GPU image lacks onnx-graphsurgeon: the API and the command line must say so, not crash.
    blocked = "import sys; sys.modules['onnx_graphsurgeon'] = None; "
    api = subprocess.run([sys.executable, "-c", blocked + "import rewrite.entry.onnx_api"], capture_output=True, text=True,
                         timeout=300)
    assert api.returncode != 0
    assert "ImportError: the ONNX path needs onnx-graphsurgeon, which is not installed (pip install onnx-graphsurgeon)" \
        in api.stderr
    command = subprocess.run([sys.executable, "-c", blocked + "from rewrite.entry.cli import main; sys.exit(main(sys.argv[1:]))",
                              str(tmp_path / "in.onnx")], capture_output=True, text=True, timeout=300)
    assert command.returncode == 2
    assert command.stderr.startswith("error: the ONNX path needs onnx-graphsurgeon")
    assert "Traceback" not in command.stderr
    # the PyTorch path does not need the ONNX packages at all
    assert subprocess.run([sys.executable, "-c", blocked + "import rewrite; rewrite.optimize"], timeout=300).returncode == 0


def test_check_inputs_that_only_measure_rounding_are_named_in_a_warning(tmp_path):
    from tests.fx_models import SaturatedHead
    path = tmp_path / "saturated.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SaturatedHead().eval(), (torch.randn(2, 8, 12, 12),), path, dynamo=False, opset_version=13)
    out = cli(path, "-o", tmp_path / "out.onnx", "-q")
    assert out.returncode == 0, out.stderr
    assert "warning: the whole-model check is weak on these inputs" in out.stderr
    assert "rewrite-onnx --inputs FILE.npz" in out.stderr
    report = onnx_api.optimize_onnx(str(path))[1]
    assert len(report.warnings) == 1 and report.to_dict()["warnings"] == list(report.warnings)
