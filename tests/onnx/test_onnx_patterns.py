"""Each rewrite on hand-built ONNX graphs: it matches (node count changes as expected), it declines
with the right reason, and the numbers agree in onnxruntime."""
import numpy as np
import onnx
import pytest

from rewrite import optimize_onnx
from tests.onnx.onnx_graphs import G, max_rel, one, ops, run, sites

RNG = np.random.default_rng(1)


def feeds(shape=(2, 8, 12, 12), dtype=np.float32):
    return {"x": RNG.standard_normal(shape).astype(dtype)}


def assert_same(original, optimized, inputs, tol=1e-5):
    for got, want in zip(run(optimized, inputs), run(original, inputs)):
        assert max_rel(got, want) < tol


# ------------------------------------------------------------------------------------- fold
def test_fold_batchnorm():
    g = G()
    y = g.bn(g.conv(g.input("x", ["N", 8, 12, 12]), 8, 16), 16)
    g.output(y, ["N", 16, 12, 12])
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert ops(model) == ["Conv", "BatchNormalization"] and ops(out) == ["Conv"]
    site = one(report, "fold", "applied")
    assert site.rel_error < 1e-5 and site.predicted_speedup > 1
    assert [o.name for o in out.graph.output] == [y]
    assert_same(model, out, feeds())
    assert report.model_rel_error < 1e-5


@pytest.mark.parametrize("op, const_shape", [("Mul", (1, 16, 1, 1)), ("Add", (16, 1, 1)), ("Sub", ()), ("Div", (1, 16, 1, 1))])
def test_fold_per_channel_constant(op, const_shape):
    g = G()
    c = g.init("c", 0.5 + RNG.random(const_shape))
    y = g.node(op, [g.conv(g.input("x", ["N", 8, 12, 12]), 8, 16, bias=op != "Add"), c])
    g.output(y)
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert ops(out) == ["Conv"]
    one(report, "fold", "applied")
    assert_same(model, out, feeds())


def test_fold_bn_then_mul_reaches_fixed_point():
    g = G()
    y = g.node("Mul", [g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16), 16), g.init("s", RNG.random((16, 1, 1)))])
    g.output(y)
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert ops(out) == ["Conv"]
    assert len(sites(report, "fold", "applied")) == 2
    assert_same(model, out, feeds((1, 8, 12, 12)))


def test_fold_declines_when_conv_output_has_other_readers():
    g = G()
    c = g.conv(g.input("x", [1, 8, 12, 12]), 8, 16)
    g.output(g.bn(c, 16))
    g.output(g.relu(c))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert ops(out) == ops(model)
    assert "readers" in one(report, "fold", "declined").reason


def test_fold_declines_non_constant_batchnorm_statistics():
    g = G()
    mean = g.input("mean", [16])
    x = g.input("x", [1, 8, 12, 12])
    c = g.conv(x, 8, 16)
    params = [g.init("gamma", np.ones(16)), g.init("beta", np.zeros(16)), mean, g.init("var", np.ones(16))]
    g.output(g.node("BatchNormalization", [c] + params))
    out, report = optimize_onnx(g.model(), passes=("fold",),
                                inputs={"x": feeds((1, 8, 12, 12))["x"], "mean": np.zeros(16, np.float32)}, target="h100")
    assert "not constant" in one(report, "fold", "declined").reason
    assert "BatchNormalization" in ops(out)


def test_fold_declines_training_mode_batchnorm():
    g = G(opset=15)
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16), 16, training_mode=1), [1, 16, 12, 12])
    out, report = optimize_onnx(g.model(), passes=("fold",), check=False, target="h100")
    assert "training mode" in one(report, "fold", "declined").reason


@pytest.mark.parametrize("pads", [[0, 1, 1, 2], [2, 0, 0, 1]])
def test_fold_keeps_asymmetric_padding(pads):
    g = G()
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16, pads=pads), 16))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    one(report, "fold", "applied")
    conv = out.graph.node[0]
    assert list(onnx.helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))) == pads
    assert_same(model, out, feeds((1, 8, 12, 12)))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
def test_fold_resolves_auto_pad_with_static_shape(auto_pad, stride):
    g = G()
    g.output(g.bn(g.conv(g.input("x", ["N", 8, 11, 12]), 8, 16, k=4, stride=stride, auto_pad=auto_pad), 16))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    one(report, "fold", "applied")
    assert_same(model, out, feeds((2, 8, 11, 12)))


def test_auto_pad_with_stride_needs_static_spatial_shape():
    g = G()
    g.output(g.bn(g.conv(g.input("x", ["N", 8, "H", "W"]), 8, 16, k=3, stride=2, auto_pad="SAME_UPPER"), 16))
    g.output(g.bn(g.conv("x", 8, 16, k=4, stride=1, auto_pad="SAME_LOWER"), 16))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), input_shapes={"x": (1, 8, 12, 12)}, target="h100")
    assert "static spatial input shape" in one(report, "fold", "declined").reason
    one(report, "fold", "applied")      # stride 1: the SAME padding does not depend on the size
    for hw in ((12, 12), (9, 7)):
        assert_same(model, out, feeds((1, 8) + hw))


# -------------------------------------------------------------------------------- factorize
def rank1_per_output_channel(n, m, k):
    return RNG.standard_normal((n, m, 1, 1)) * RNG.standard_normal((n, 1, k, k)) / np.sqrt(m * k * k)


def rank1_per_input_channel(n, m, k):
    return RNG.standard_normal((n, m, 1, 1)) * RNG.standard_normal((1, m, k, k)) / np.sqrt(m * k * k)


@pytest.mark.parametrize("weight, form", [(rank1_per_output_channel, ["Conv", "Conv"]),
                                          (rank1_per_input_channel, ["Conv", "Conv"])])
def test_factorize_exact(weight, form):
    g = G()
    w = weight(32, 16, 3)
    g.output(g.conv(g.input("x", ["N", 16, 12, 12]), 16, 32, weight=w))
    model = g.model()
    out, report = optimize_onnx(model, passes=("factorize",), min_speedup=0.0, target="h100")
    site = one(report, "factorize", "applied")
    assert ops(out) == form and "exact" in site.reason and site.rel_error < 1e-5
    groups = [onnx.helper.get_attribute_value(a) for n in out.graph.node for a in n.attribute if a.name == "group"]
    assert sorted(groups) == [1, 16] or sorted(groups) == [1, 32]
    assert_same(model, out, feeds((2, 16, 12, 12)))


def test_factorize_declines_full_rank_and_grouped_convs():
    g = G()
    x = g.input("x", [1, 16, 12, 12])
    g.output(g.conv(x, 16, 32))
    g.output(g.conv(x, 16, 32, groups=4))
    out, report = optimize_onnx(g.model(), passes=("factorize",), target="h100")
    reasons = sorted(s.reason for s in sites(report, "factorize", "declined"))
    assert len(reasons) == 2 and "grouped conv" in reasons[0] and "not factorable" in reasons[1]


def test_factorize_declines_when_cost_model_predicts_no_gain():
    g = G()
    g.output(g.conv(g.input("x", [1, 16, 12, 12]), 16, 32, weight=rank1_per_output_channel(32, 16, 3)))
    _, report = optimize_onnx(g.model(), passes=("factorize",), min_speedup=100.0, target="h100")
    assert "cost model predicts" in one(report, "factorize", "declined").reason


def test_factorize_approximate_within_budget():
    g = G()
    w = rank1_per_input_channel(32, 16, 3) + 1e-3 * RNG.standard_normal((32, 16, 3, 3))
    g.output(g.conv(g.input("x", [1, 16, 12, 12]), 16, 32, weight=w))
    model = g.model()
    out, report = optimize_onnx(model, passes=("factorize",), min_speedup=0.0, factorize_error_budget=0.05,
                                model_tolerance=0.05, target="h100")
    site = one(report, "factorize", "applied")
    assert "approximate" in site.reason and site.rel_error < 0.05
    assert_same(model, out, feeds((1, 16, 12, 12)), tol=0.05)


# ---------------------------------------------------------------------------------- reverse
def test_reverse_collapses_linear_dw_pw():
    g = G()
    dw = g.conv(g.input("x", ["N", 8, 12, 12]), 8, 8, groups=8)
    g.output(g.conv(dw, 8, 24, k=1))
    model = g.model()
    out, report = optimize_onnx(model, passes=("reverse",), min_speedup=0.0, target="h100")
    assert ops(out) == ["Conv"]
    assert one(report, "reverse", "applied").rel_error < 1e-5
    assert_same(model, out, feeds())


def test_reverse_collapses_pw_dw_without_bias_and_declines_with_bias():
    g = G()
    x = g.input("x", [1, 8, 12, 12])
    g.output(g.conv(g.conv(x, 8, 16, k=1, bias=False, pads=[0] * 4), 16, 16, groups=16, name="nobias"))
    g.output(g.conv(g.conv(x, 8, 16, k=1, bias=True, pads=[0] * 4), 16, 16, groups=16, name="bias"))
    model = g.model()
    out, report = optimize_onnx(model, passes=("reverse",), min_speedup=0.0, target="h100")
    one(report, "reverse", "applied")
    assert "zero padding" in one(report, "reverse", "declined").reason
    assert ops(out).count("Conv") == 3
    assert_same(model, out, feeds((1, 8, 12, 12)))


def test_fold_then_reverse_through_batchnorm():
    g = G()
    dw = g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 8, groups=8), 8)
    g.output(g.conv(dw, 8, 24, k=1))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold", "reverse"), min_speedup=0.0, target="h100")
    assert ops(out) == ["Conv"]
    one(report, "reverse", "applied")
    _, report = optimize_onnx(model, passes=("reverse",), min_speedup=0.0, target="h100")
    assert "BatchNormalization between the convs (not folded)" in one(report, "reverse", "declined").reason


@pytest.mark.parametrize("act, name, opset", [
    ("relu", "relu", 17), ("relu6", "relu6", 17), ("silu", "silu", 17),
    ("hardswish_decomposed", "hardswish", 13), ("gelu_erf", "gelu", 17), ("Gelu", "gelu", 20),
    ("HardSwish", "hardswish", 14), ("Tanh", "tanh", 17)])
def test_reverse_declines_nonlinearity_between(act, name, opset):
    g = G(opset=opset)
    dw = g.conv(g.input("x", [1, 8, 12, 12]), 8, 8, groups=8)
    a = getattr(g, act)(dw) if act[0].islower() else g.node(act, [dw])
    g.output(g.conv(a, 8, 24, k=1))
    model = g.model()
    out, report = optimize_onnx(model, passes=("reverse",), min_speedup=0.0, target="h100")
    assert f"nonlinearity ({name})" in one(report, "reverse", "declined").reason
    assert ops(out) == ops(model)


# ------------------------------------------------------------------------------------- fuse
def fuse_model(act1="relu6", act2=None, residual=True, opset=17, k=3, dilation=1, pads=None):
    g = G(opset=opset)
    x = g.input("x", ["N", 16, 12, 12])
    h = g.bn(g.conv(x, 16, 16, k=k, groups=16, dilation=dilation, pads=pads), 16)
    h = getattr(g, act1)(h) if act1 and act1[0].islower() else (g.node(act1, [h]) if act1 else h)
    h = g.bn(g.conv(h, 16, 16, k=1, pads=[0] * 4), 16)
    if act2:
        h = getattr(g, act2)(h)
    y = g.node("Add", [h, x]) if residual else h
    g.output(y, ["N", 16, 12, 12])
    return g.model()


@pytest.mark.parametrize("act1, act2, residual, opset, op", [
    ("relu6", None, True, 17, "FusedSepConv_relu6_none_residual"),
    ("relu", "relu", False, 11, "FusedSepConv_relu_relu"),
    ("silu", None, True, 17, "FusedSepConv_silu_none_residual"),
    ("hardswish_decomposed", None, False, 13, "FusedSepConv_hardswish_none"),
    ("gelu_erf", None, False, 17, "FusedSepConv_gelu_none"),
    ("Gelu", "relu6", True, 20, "FusedSepConv_gelu_relu6_residual"),
    (None, None, False, 17, "FusedSepConv_none_none"),
])
def test_fuse_marks_group_as_local_function(act1, act2, residual, opset, op):
    model = fuse_model(act1, act2, residual, opset)
    # a linear dw→pw (no act1) would be collapsed by reverse first: leave reverse out there
    passes = ("fold", "fuse") if act1 is None else ("fold", "factorize", "reverse", "fuse")
    out, report = optimize_onnx(model, target="h100", passes=passes)
    site = one(report, "fuse", "applied")
    assert f"dwsep.{op}" in site.reason and site.after.startswith("fused[") and site.rel_error < 1e-5
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("dwsep", op)]
    assert [(f.domain, f.name) for f in out.functions] == [("dwsep", op)]
    assert {(i.domain, i.version) for i in out.opset_import} == {("", opset), ("dwsep", 1)}
    assert out.ir_version >= 8
    onnx.checker.check_model(out, full_check=True)
    assert_same(model, out, feeds((3, 16, 12, 12)))


def test_fuse_is_skipped_on_cpu_target():
    out, report = optimize_onnx(fuse_model(), target="cpu", cost_model="analytic")
    assert not sites(report, "fuse") and any("fuse pass skipped" in n for n in report.notes)
    assert not out.functions and all(n.domain in ("", None) for n in out.graph.node)
    _, report = optimize_onnx(fuse_model(), target="cpu", force_fuse=True, cost_model="analytic")
    one(report, "fuse", "applied")


@pytest.mark.parametrize("kwargs, reason", [
    (dict(k=9), "depthwise kernel 9x9"), (dict(dilation=2, pads=[2] * 4), "dilated"),
    (dict(pads=[1, 0, 1, 2]), "asymmetric depthwise padding"),
    (dict(act1="Sigmoid"), "activation sigmoid is not fused"),
])
def test_fuse_declines_what_the_kernel_cannot_run(kwargs, reason):
    model = fuse_model(**{"residual": False, **kwargs})
    out, report = optimize_onnx(model, target="h100", passes=("fold", "fuse"))
    assert reason in one(report, "fuse", "declined").reason
    assert not out.functions


def test_fuse_declines_unfolded_batchnorm_and_squeeze_excite():
    _, report = optimize_onnx(fuse_model(), target="h100", passes=("fuse",))
    assert "not folded" in one(report, "fuse", "declined").reason
    g = G()
    x = g.input("x", [1, 16, 12, 12])
    h = g.silu(g.conv(x, 16, 16, groups=16))
    gate = g.node("Sigmoid", [g.node("GlobalAveragePool", [h])])
    g.output(g.conv(g.node("Mul", [h, gate]), 16, 8, k=1, pads=[0] * 4))
    _, report = optimize_onnx(g.model(), target="h100")
    assert "squeeze-excitation reduce is not a rewritable conv (Sigmoid)" in one(report, "fuse", "declined").reason


def test_reverse_declines_when_cost_model_predicts_no_gain():
    g = G()
    g.output(g.conv(g.conv(g.input("x", [1, 8, 12, 12]), 8, 8, groups=8), 8, 24, k=1))
    _, report = optimize_onnx(g.model(), passes=("reverse",), min_speedup=100.0, target="h100")
    assert "cost model predicts the dense conv" in one(report, "reverse", "declined").reason


# ------------------------------------------------------------------------- the site checks
def test_site_beyond_tolerance_is_rolled_back():
    g = G()
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16), 16))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), site_tolerance=1e-12, target="h100")
    site = one(report, "fold", "rolled_back")
    assert "exceeds tolerance" in site.reason and site.rel_error > 1e-12
    assert ops(out) == ops(model)


def test_a_wrong_lift_is_caught_by_onnxruntime(monkeypatch):
    import passes.onnx.lift as lift

    real = lift.conv_padding
    monkeypatch.setattr(lift, "conv_padding", lambda *args: tuple(p + 1 for p in real(*args)))
    g = G()
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16, k=1, pads=[0] * 4), 16))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert "the lifted chain does not reproduce the original ops" in one(report, "fold", "declined").reason
    assert ops(out) == ops(model)


def test_activation_patterns_including_clip_attributes():
    import onnx_graphsurgeon as gs

    from passes.onnx.lift import activation_at

    x = gs.Variable("x", np.float32)
    graph = gs.Graph(nodes=[], inputs=[x])
    for name, attrs in (("relu6", {"min": 0.0, "max": 6.0}), ("relu", {"min": 0.0})):   # opset < 11 Clip
        node = gs.Node("Clip", attrs=attrs, inputs=[x], outputs=[gs.Variable(name)])
        match = activation_at(graph, node, set())
        assert match.name == name and match.nodes == [node]
    clip = gs.Node("Clip", inputs=[x, gs.Constant("lo", np.array(-1, np.float32))], outputs=[gs.Variable("c")])
    assert activation_at(graph, clip, set()) is None       # Clip(-1, ∞) is no activation we know
    sig = gs.Node("Sigmoid", inputs=[x], outputs=[gs.Variable("s")])
    mul = gs.Node("Mul", inputs=[x, sig.outputs[0]], outputs=[gs.Variable("y")])
    match = activation_at(graph, sig, set())
    assert match.name == "silu" and match.nodes == [sig, mul] and match.output is mul.outputs[0]
    graph.outputs = [sig.outputs[0]]
    assert activation_at(graph, sig, set()).name == "sigmoid"   # the gate is needed outside: no silu


def test_weights_from_constant_nodes_and_identity_shared_initializers():
    g = G()
    x = g.input("x", [1, 8, 12, 12])
    w = g.node("Constant", [], value=onnx.numpy_helper.from_array(g.weight((16, 8, 3, 3)).astype(np.float32)))
    gamma = g.node("Identity", [g.init("ones", np.ones(16))])   # exporters share equal initializers so
    params = [gamma, g.init("beta", np.zeros(16)), g.init("mean", RNG.random(16)), g.init("var", 1 + RNG.random(16))]
    g.output(g.node("BatchNormalization", [g.node("Conv", [x, w], pads=[1] * 4)] + params))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    one(report, "fold", "applied")
    assert ops(out) == ["Conv"]
    assert_same(model, out, feeds((1, 8, 12, 12)))
