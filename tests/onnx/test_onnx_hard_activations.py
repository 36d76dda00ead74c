"""Hardswish and hardsigmoid as exporters write them below opset 14, x·Clip(x + 3, 0, 6)/6
(Paddle2ONNX, torch's export of the formula, timm's and Keras' hard_swish), are one activation;
near misses are not. Paddle's squeeze-excitation gate HardSigmoid(0.2, 0.5) = hardsigmoid(1.2·z)
fuses, its affine folded into the expand conv. Hand-built graphs and a torch export at opset 11,
checked in onnxruntime on fresh inputs."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes.onnx.view import OnnxViewBuilder
from rewrite import optimize_onnx
from tests.onnx.onnx_graphs import G, max_rel, one, ops, run, sites

RNG = np.random.default_rng(3)
C = 16


def feeds(shape=(3, C, 12, 12)):
    return {"x": RNG.standard_normal(shape).astype(np.float32) * 3}   # past ±3, so the Clip clips both ways


def assert_same(original, optimized, tol=1e-5):
    inputs = feeds()
    for got, want in zip(run(optimized, inputs), run(original, inputs)):
        assert max_rel(got, want) < tol


def view_ops(model) -> list:
    """(kind, activation name or label) of each op of the model's view."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    builder = OnnxViewBuilder(gs.import_onnx(model), opset, torch.float32, set(), static_spatial=False)
    return [(op.kind, op.act or op.label) for op in builder.build({}, {}).ops]


def sep_model(act, opset=12, **kwargs):
    """dw3x3 → act → pw (the hardswish written out by G.hard_clip)."""
    g = G(opset=opset)
    x = g.input("x", ["N", C, 12, 12])
    h = g.conv(x, C, C, groups=C)
    h = act(g, h, **kwargs)
    g.output(g.conv(h, C, C, k=1, pads=[0] * 4), ["N", C, 12, 12])
    return g.model()


@pytest.mark.parametrize("form, swap, constant_node, shape, opset", [
    ("x*c/6", False, True, (), 12),          # Paddle2ONNX (ppocrv3, the v2.0 classifier)
    ("x*c/6", False, True, (1,), 13),        # Paddle2ONNX (layout_cdla, PP-OCRv4 rec)
    ("x*c/6", True, False, (), 10),          # Clip bounds as attributes (the view only: optimize_onnx takes opset ≥ 11)
    ("x*c*(1/6)", True, True, (), 11),
    ("x*c*(1/6)", False, False, (1,), 12),
    ("c/6*x", False, False, (), 13),         # timm's hard_swish
    ("c*(1/6)*x", True, True, (), 12),       # Keras' through tf2onnx
])
def test_written_out_hardswish_is_one_activation_and_fuses(form, swap, constant_node, shape, opset):
    model = sep_model(G.hard_clip, opset, form=form, swap=swap, constant_node=constant_node, shape=shape)
    kinds = view_ops(model)
    assert [k for k in kinds if k[0] == "act"] == [("act", "hardswish")]
    assert not [k for k in kinds if k[0] in ("affine", "mul")]
    if opset < 11:
        return
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))
    site = one(report, "fuse", "applied")
    assert site.after == f"fused[dw3x3 {C}->{C} → hardswish → pw {C}->{C}]" and site.rel_error < 1e-5
    assert [n.op_type for n in out.graph.node] == ["FusedSepConv_hardswish_none"]
    assert not sites(report, "fold", "declined")
    assert_same(model, out)


class PaddleHardswish(nn.Module):
    """dw → x·relu6(x + 3)/6 → pw, exported by torch at opset 11 as Add → Clip → Mul → Div."""

    def __init__(self):
        super().__init__()
        self.dw, self.pw = nn.Conv2d(C, C, 3, padding=1, groups=C), nn.Conv2d(C, C, 1)

    def forward(self, x):
        h = self.dw(x)
        return self.pw(h * F.relu6(h + 3) / 6)


def test_torch_export_at_opset_11_is_recognized():
    import io

    import onnx
    torch.manual_seed(0)
    module = PaddleHardswish().eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, C, 12, 12),), buffer, opset_version=11, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N"}})
    model = onnx.load_from_string(buffer.getvalue())
    assert {"Add", "Clip", "Div"} <= set(ops(model))
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))
    assert one(report, "fuse", "applied").after == f"fused[dw3x3 {C}->{C} → hardswish → pw {C}->{C}]"
    x = torch.randn(3, C, 12, 12) * 3
    got = run(out, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert max_rel(got, module.double()(x.double()).numpy()) < 1e-5


def _read_elsewhere(g, h):
    """The Add's output is also a graph output."""
    y = g.hard_clip(h)
    add = next(n for n in g.nodes if n.op_type == "Add")
    g.output(add.output[0])
    return y


@pytest.mark.parametrize("act, seen", [
    (lambda g, h: g.hard_clip(h, three=2.9), "Add"),
    (lambda g, h: g.hard_clip(h, hi=5.0), "Clip"),
    (lambda g, h: g.hard_clip(h, form="x*c*(1/6)", sixth=0.1667), "Mul"),
    (lambda g, h: g.hard_clip(h, form="x*c/6", shape=(1, 1, 1, 1)), "Add"),   # a 4-d constant: not one element of rank ≤ 1
    (_read_elsewhere, "Add"),
])
def test_near_misses_are_not_hardswish(act, seen):
    model = sep_model(act)
    kinds = view_ops(model)
    assert ("act", "hardswish") not in kinds and ("act", "hardsigmoid") not in kinds
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))
    assert not sites(report, "fuse", "applied")
    assert_same(model, out)


def se_model(gate, opset=11, act1=True):
    """Paddle's PP-LCNet block: dw → hardswish → SE(mean → 1x1 → relu → 1x1 → gate) → pw."""
    g = G(opset=opset)
    x = g.input("x", ["N", C, 12, 12])
    h = g.conv(x, C, C, groups=C)
    h = g.hard_clip(h) if act1 else h
    s = g.conv(g.relu(g.conv(g.node("GlobalAveragePool", [h]), C, 4, k=1, pads=[0] * 4)), 4, C, k=1, pads=[0] * 4)
    h = g.node("Mul", [h, gate(g, s)])
    g.output(g.conv(h, C, 8, k=1, pads=[0] * 4), ["N", 8, 12, 12])
    return g.model()


@pytest.mark.parametrize("gate", [
    lambda g, s: g.node("HardSigmoid", [s]),                        # Paddle's: ONNX's defaults 0.2, 0.5
    lambda g, s: g.node("HardSigmoid", [s], alpha=0.25, beta=0.4),  # any α, β: hardsigmoid(6α·z + 6β − 3)
    lambda g, s: g.hard_clip(s, form="c/6", swap=True),             # Clip(z + 3, 0, 6)/6, written out
])
def test_squeeze_excitation_gate_fuses_with_its_affine_folded(gate):
    model = se_model(gate)
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"), force_fuse=True)
    site = one(report, "fuse", "applied")
    assert site.after == f"fused[dw3x3 {C}->{C} → hardswish → SE(4, relu, hardsigmoid) → pw {C}->8]"
    assert site.rel_error < 1e-5
    assert [n.op_type for n in out.graph.node] == ["FusedSepConvSE_hardswish_none_relu_hardsigmoid"]
    assert_same(model, out)
    _, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))   # not forced: the measured loss
    assert "the fused squeeze-excitation form measured slower than eager" in one(report, "fuse", "declined").reason


def test_hard_sigmoid_decline_reasons_name_its_alpha_and_beta():
    kinds = view_ops(se_model(lambda g, s: g.node("HardSigmoid", [s])))
    assert ("affine_act", "hardsigmoid") in kinds
    model = sep_model(lambda g, h: g.node("HardSigmoid", [h]))       # not a gate: between dw and pw
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))
    assert one(report, "fuse", "declined").reason == (
        "HardSigmoid(alpha 0.2, beta 0.5) between the depthwise and pointwise convs blocks the fusion")
    assert_same(model, out)
    g = G(opset=11)                                                   # torch's own stays an act
    g.output(g.node("HardSigmoid", [g.input("x", ["N", C, 12, 12])], alpha=1 / 6, beta=0.5))
    assert view_ops(g.model()) == [("act", "hardsigmoid")]
