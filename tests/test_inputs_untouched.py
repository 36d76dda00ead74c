"""Neither optimize() nor optimize_onnx() changes its input in any way, byte for byte: the module
(parameters, buffers, attributes, their storage sharing) and the example inputs; the ModelProto
and the file on disk. Also with the checks off, with a rollback, and with tied or shared weights."""
import io
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewrite import optimize
from tests.fx_models import ControlFlow, ConvBN, SeparableConv, SharedConv, TiedWeights
from tests.helpers import batchnorm


class FunctionalReadsWeight(nn.Module):
    """A module's weight also read by a functional call (the tied-weight case of the fuzzer)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=True)
        self.bn = batchnorm(8)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return F.conv2d(y, self.conv.weight, self.conv.bias, padding=1)


def snapshot(model: nn.Module) -> bytes:
    """torch.save of the whole module: every tensor's bytes, every attribute, the sharing of storages."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


MODELS = {
    "conv_bn": (lambda: ConvBN(), (2, 8, 12, 12)),
    "separable": (lambda: SeparableConv(16, 32), (2, 16, 12, 12)),
    "shared_module": (lambda: SharedConv(), (2, 8, 12, 12)),
    "tied_weights": (lambda: TiedWeights(), (2, 8, 12, 12)),
    "functional_reads_weight": (lambda: FunctionalReadsWeight(), (2, 8, 12, 12)),
    "control_flow": (lambda: ControlFlow(), (2, 3, 12, 12)),
}


@pytest.mark.parametrize("options", [{}, {"check": False}, {"model_tolerance": 1e-30}, {"force_fuse": True}],
                         ids=["default", "unchecked", "rollback", "fused"])
@pytest.mark.parametrize("name", list(MODELS))
def test_optimize_leaves_model_and_inputs_byte_identical(name, options):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    before_model, before_x = snapshot(model), x.clone()
    with torch.no_grad():
        expected = model(x)
    opt = optimize(model, x, **options)
    assert snapshot(model) == before_model
    assert torch.equal(x, before_x)
    with torch.no_grad():
        got = opt(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_real_model_left_byte_identical():
    import timm

    model = timm.create_model("mobilenetv3_small_050", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    before = snapshot(model)
    optimize(model, x, target="h100")
    assert snapshot(model) == before


def test_onnx_file_and_proto_left_byte_identical(tmp_path):
    from rewrite import optimize_onnx

    model = TiedWeights().eval()
    path = tmp_path / "tied.onnx"
    torch.onnx.export(model, (torch.randn(1, 8, 12, 12),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})
    data = path.read_bytes()
    import onnx

    proto = onnx.load(str(path))
    proto_bytes = proto.SerializeToString()
    optimize_onnx(proto, model_tolerance=0.0, target="h100")            # a rollback on the way
    optimize_onnx(str(path), tmp_path / "out.onnx", check=False, target="h100")
    assert proto.SerializeToString() == proto_bytes and path.read_bytes() == data
    result = subprocess.run([sys.executable, "-m", "rewrite", str(path), "-o", str(tmp_path / "cli.onnx"), "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == data


def test_snapshot_sees_any_change():
    """The comparison above can fail: one ulp of one weight, a flag or an attribute changes it."""
    model = ConvBN().eval()
    before = snapshot(model)
    with torch.no_grad():
        model.conv.weight.view(-1)[0] = torch.nextafter(model.conv.weight.view(-1)[0], torch.tensor(1.0))
    assert snapshot(model) != before
    for change in (lambda m: m.bn.train(), lambda m: setattr(m, "extra_user", True)):
        model = ConvBN().eval()
        torch.manual_seed(0)
        before = snapshot(model)
        change(model)
        assert snapshot(model) != before
