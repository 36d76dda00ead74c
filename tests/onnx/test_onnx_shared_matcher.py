"""What the shared matchers (rewrite/rules/) bring to ONNX: fusion through a
squeeze-excitation, zero pads folded into the next conv, and declines that name the real
blocker in the graph's own terms."""
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

from rewrite import optimize_onnx
from tests.onnx.onnx_graphs import G, max_rel, ops, run, sites

RNG = np.random.default_rng(4)


class SEBlock(nn.Module):
    """dw → BN → act → SE (mean → 1x1 → act → 1x1 → gate → scale) → pw → BN → + x."""

    def __init__(self, act, gate, mean, c=16, squeezed=4):
        super().__init__()
        self.act, self.gate, self.mean = act, gate, mean
        self.dw, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c)
        self.reduce, self.expand = nn.Conv2d(c, squeezed, 1), nn.Conv2d(squeezed, c, 1)
        self.pw, self.bn2 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = self.act(self.bn1(self.dw(x)))
        s = F.adaptive_avg_pool2d(h, 1) if self.mean == "pool" else h.mean((2, 3), keepdim=True)
        h = h * self.gate(self.expand(self.act(self.reduce(s))))
        return x + self.bn2(self.pw(h))


def export_se_block(path, act, gate, mean, opset):
    torch.manual_seed(0)
    block = SEBlock(act, gate, mean).eval()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (torch.randn(1, 16, 20, 20),), path, dynamo=False, opset_version=opset,
                          do_constant_folding=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load(path)


@pytest.mark.parametrize("act, gate, mean, opset, op", [
    (F.silu, torch.sigmoid, "pool", 17, "FusedSepConvSE_silu_none_silu_sigmoid_residual"),       # EfficientNet
    (F.relu, F.hardsigmoid, "mean", 17, "FusedSepConvSE_relu_none_relu_hardsigmoid_residual"),   # MobileNetV3
    (F.relu, F.hardsigmoid, "mean", 18, "FusedSepConvSE_relu_none_relu_hardsigmoid_residual"),   # axes as input
])
def test_squeeze_excitation_fuses(tmp_path, act, gate, mean, opset, op):
    model = export_se_block(tmp_path / "se.onnx", act, gate, mean, opset)
    assert {"GlobalAveragePool" if mean == "pool" else "ReduceMean", "Mul"} <= set(ops(model))
    out, report = optimize_onnx(model, target="cpu", force_fuse=True, cost_model="analytic")
    [site] = sites(report, "fuse", "applied")
    assert f"dwsep.{op}" in site.reason and "SE(4" in site.after and site.rel_error < 1e-5
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("dwsep", op)]
    assert [f.name for f in out.functions] == [op]
    onnx.checker.check_model(out, full_check=True)
    for batch in (1, 3):
        x = {"x": RNG.standard_normal((batch, 16, 20, 20)).astype(np.float32)}
        assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-5


def test_squeeze_excitation_fuse_site_on_h100_target(tmp_path):
    model = export_se_block(tmp_path / "se.onnx", F.silu, torch.sigmoid, "pool", 17)
    _, predicted = optimize_onnx(model, target="h100")   # the SE form measured slower on the H100
    [declined] = sites(predicted, "fuse", "declined")
    assert "squeeze-excitation form measured slower" in declined.reason
    out, report = optimize_onnx(model, target="h100", force_fuse=True)
    assert len(sites(report, "fuse", "applied")) == 1 and len(sites(report, "fold", "applied")) == 2
    x = {"x": RNG.standard_normal((2, 16, 20, 20)).astype(np.float32)}
    assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-5


def pad_model(pads, opset=17, mode=None, value=None, axes=None):
    """Pad → Conv (no padding of its own) → BatchNormalization."""
    g = G(opset=opset)
    inputs = [g.input("x", ["N", 8, 12, 12]),
              g.add_raw(numpy_helper.from_array(np.array(pads, np.int64), g.fresh("pads")))]
    if value is not None or axes is not None:
        inputs.append(g.init(g.fresh("value"), value or 0.0))
    if axes is not None:
        inputs.append(g.add_raw(numpy_helper.from_array(np.array(axes, np.int64), g.fresh("axes"))))
    p = g.node("Pad", inputs, **({"mode": mode} if mode else {}))
    g.output(g.bn(g.conv(p, 8, 16, pads=[0] * 4, name="conv"), 16))
    return g.model()


@pytest.mark.parametrize("pads, opset, axes, conv_pads", [
    ([0, 0, 1, 2, 0, 0, 2, 1], 17, None, [1, 2, 2, 1]),     # (top, left) = (1, 2), (bottom, right) = (2, 1)
    ([1, 1, 1, 1], 18, [2, 3], [1, 1, 1, 1]),
    ([0, 3, 0, 0], 18, [-2, -1], [0, 3, 0, 0]),
])
def test_zero_pad_is_folded_into_the_conv(pads, opset, axes, conv_pads):
    model = pad_model(pads, opset, axes=axes)
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert ops(model) == ["Pad", "Conv", "BatchNormalization"] and ops(out) == ["Conv"]
    folds = sites(report, "fold", "applied")
    assert [s.before for s in folds] == [f"pad({','.join(map(str, _sides(conv_pads)))}) → conv3x3 8->16",
                                         "conv3x3 8->16 → affine"]
    conv = out.graph.node[0]
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == conv_pads
    x = {"x": RNG.standard_normal((2, 8, 12, 12)).astype(np.float32)}
    assert max_rel(run(out, x)[0], run(model, x)[0]) < 1e-5


def _sides(onnx_conv_pads):
    t, l, b, r = onnx_conv_pads
    return (t, b, l, r)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"), "reflect padding is not a zero pad"),
    (dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], value=1.0), "pad with the constant 1 (not zero)"),
    (dict(pads=[1, 0, 0, 0, 0, 0, 0, 0]), "pad the batch or channel axis"),
    (dict(pads=[0, 0, -1, 0, 0, 0, 0, 0]), "crops the input"),
])
def test_pads_that_are_not_zero_pads_are_declined(kwargs, reason):
    model = pad_model(**kwargs)
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    declined = sites(report, "fold", "declined")
    assert len(declined) == 1 and reason in declined[0].reason and declined[0].name == "conv"
    assert "Pad" in ops(out)


def test_layer_norm_between_dw_and_pw_declines_naming_it():
    g = G(opset=17)
    x = g.input("x", [1, 16, 12, 12])
    h = g.node("Transpose", [g.conv(x, 16, 16, groups=16, name="dw")], perm=[0, 2, 3, 1])
    h = g.node("LayerNormalization", [h, g.init("ln.w", np.ones(16)), g.init("ln.b", np.zeros(16))], axis=-1)
    g.output(g.conv(g.node("Transpose", [h], perm=[0, 3, 1, 2]), 16, 32, k=1, pads=[0] * 4))
    model = g.model()
    out, report = optimize_onnx(model, target="cpu", force_fuse=True, cost_model="analytic")
    [site] = sites(report, "fuse", "declined")
    assert site.name == "dw"
    assert site.reason == "LayerNormalization between the depthwise and pointwise convs blocks the fusion"
    assert ops(out) == ops(model)


def test_a_product_that_is_not_a_squeeze_excitation_declines():
    g = G(opset=17)
    x = g.input("x", [1, 16, 12, 12])
    h = g.relu(g.conv(x, 16, 16, groups=16, name="dw"))
    g.output(g.conv(g.node("Mul", [h, g.node("Tanh", [x])]), 16, 32, k=1, pads=[0] * 4))
    _, report = optimize_onnx(g.model(), target="h100")
    [site] = sites(report, "fuse", "declined")
    assert "not a squeeze-excitation blocks the fusion" in site.reason
