"""What the ONNX front end leaves alone, and says why: non-constant and quantized convs,
overridable initializers, unknown ops; shared initializers rewritten without being changed."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rewrite import optimize_onnx
from rewrite.entry.onnx_api import OnnxInputError
from tests.onnx.onnx_graphs import G, max_rel, ops, run, sites

RNG = np.random.default_rng(2)
X = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32)


def test_conv_weight_from_a_graph_input_is_declined_per_site():
    g = G()
    w = g.input("w", [16, 8, 3, 3])
    c = g.node("Conv", [g.input("x", [1, 8, 12, 12]), w], kernel_shape=[3, 3], pads=[1] * 4)
    g.output(g.bn(c, 16))
    g.output(g.bn(g.conv("x", 8, 16), 16))
    w_value = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)
    out, report = optimize_onnx(g.model(), passes=("fold", "factorize"), inputs={"x": X, "w": w_value}, target="h100")
    declined = sites(report, "fold", "declined")
    assert len(declined) == 1 and "not a constant initializer (it is the graph input 'w')" in declined[0].reason
    assert len(sites(report, "fold", "applied")) == 1
    assert any("graph input 'w'" in s.reason for s in sites(report, "factorize", "declined"))
    assert [i.name for i in out.graph.input] == ["w", "x"]


def test_qdq_weight_is_declined_with_its_reason():
    g = G()
    q = g.node("DequantizeLinear", [
        g.add_raw(numpy_helper.from_array(RNG.integers(-100, 100, (16, 8, 3, 3)).astype(np.int8), "wq")),
        g.init("ws", 0.01), g.add_raw(numpy_helper.from_array(np.array(0, np.int8), "wz"))])
    g.output(g.bn(g.node("Conv", [g.input("x", [1, 8, 12, 12]), q], pads=[1] * 4), 16))
    _, report = optimize_onnx(g.model(), passes=("fold",), target="h100")
    assert "DequantizeLinear (a quantized QDQ model)" in sites(report, "fold", "declined")[0].reason


def _quantized_conv_model(op):
    g = G()
    x = g.input("x", [1, 8, 12, 12])
    g.inputs[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    u8 = lambda name, v: g.add_raw(numpy_helper.from_array(np.asarray(v, np.uint8), name))  # noqa: E731
    w = u8("w", RNG.integers(0, 255, (16, 8, 3, 3)))
    if op == "QLinearConv":
        y = g.node(op, [x, g.init("xs", 0.1), u8("xz", 128), w, g.init("ws", 0.01), u8("wz", 128),
                        g.init("ys", 0.2), u8("yz", 128)], pads=[1] * 4)
        g.outputs.append(helper.make_tensor_value_info(y, onnx.TensorProto.UINT8, [1, 16, 12, 12]))
    else:
        y = g.node(op, [x, w, u8("xz", 128), u8("wz", 128)], pads=[1] * 4)
        g.outputs.append(helper.make_tensor_value_info(y, onnx.TensorProto.INT32, [1, 16, 12, 12]))
    return g.model()


@pytest.mark.parametrize("op", ["QLinearConv", "ConvInteger"])
def test_integer_and_quantized_convs_are_declined(op):
    model = _quantized_conv_model(op)
    out, report = optimize_onnx(model, target="h100")
    [site] = sites(report, "factorize", "declined")
    assert f"integer/quantized conv ({op})" in site.reason
    assert ops(out) == [op]
    assert report.model_rel_error == 0.0


def test_initializers_listed_as_graph_inputs_are_not_constant():
    g = G()
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16, name="c"), 16, name="bn"))
    model = g.model()
    # IR 3 style: every initializer is also a graph input (the caller may override it)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer)
    names = [i.name for i in model.graph.input]
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert "is a graph input (an initializer the caller may override)" in sites(report, "fold", "declined")[0].reason
    assert [i.name for i in out.graph.input] == names
    assert any("overridable" in n for n in report.notes)


def test_unknown_ops_are_left_alone():
    g = G()
    c = g.node("Foo", [g.conv(g.input("x", [1, 8, 12, 12]), 8, 16)], domain="my.ops", name="foo")
    g.outputs.append(helper.make_tensor_value_info(c, onnx.TensorProto.FLOAT, [1, 16, 12, 12]))
    g.output(g.bn(g.conv("x", 8, 16), 16), [1, 16, 12, 12])
    graph = helper.make_graph(g.nodes, "test", g.inputs, g.outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    with pytest.raises(OnnxInputError, match="onnxruntime cannot run the model.*--no-check"):
        optimize_onnx(model, target="h100")
    out, report = optimize_onnx(model, check=False, passes=("fold",), target="h100")
    assert [(n.domain, n.op_type) for n in out.graph.node if n.op_type == "Foo"] == [("my.ops", "Foo")]
    assert {(i.domain, i.version) for i in out.opset_import} == {("", 17), ("my.ops", 1)}
    assert len(sites(report, "fold", "applied")) == 1


def test_shared_initializer_is_never_changed_in_place():
    g = G()
    x = g.input("x", [1, 8, 12, 12])
    w = g.init("shared_w", g.weight((16, 8, 3, 3)))
    conv = lambda: g.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1] * 4)  # noqa: E731
    g.output(g.bn(conv(), 16))
    g.output(g.bn(conv(), 16))
    g.output(conv())
    model = g.model()
    before = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "shared_w")).copy()
    # without the clean-up, whose common-subexpression elimination would make the three convs one
    out, report = optimize_onnx(model, passes=("fold",), target="h100", cleanup=False)
    assert len(sites(report, "fold", "applied")) == 2
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert np.array_equal(inits["shared_w"], before)
    weights = [n.input[1] for n in out.graph.node if n.op_type == "Conv"]
    assert len(set(weights)) == 3 and weights.count("shared_w") == 1
    for got, want in zip(run(out, {"x": X}), run(model, {"x": X})):
        assert max_rel(got, want) < 1e-5


@pytest.mark.parametrize("dims", [1, 3])
def test_non_2d_convs_are_declined(dims):
    g = G()
    shape = [1, 4] + [6] * dims
    w = g.init("w", g.weight((8, 4) + (3,) * dims))
    g.output(g.node("Conv", [g.input("x", shape), w], pads=[1] * 2 * dims))
    _, report = optimize_onnx(g.model(), passes=("factorize",), target="h100")
    assert f"Conv{dims}d (only 2-D convs are rewritten)" in sites(report, "factorize", "declined")[0].reason


def test_float16_model():
    g = G(dtype=np.float16)
    g.output(g.relu6(g.bn(g.conv(g.input("x", ["N", 8, 12, 12]), 8, 16), 16)))
    model = g.model()
    out, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert report.dtype == "float16" and len(sites(report, "fold", "applied")) == 1
    assert any(n.startswith("whole-model reference: the original evaluated in float64") for n in report.notes)
    assert 0 < report.model_baseline_error < 1e-2 and report.model_rel_error < 1e-2
    x16 = {"x": X.astype(np.float16)}
    assert max_rel(run(out, x16)[0], run(model, x16)[0]) < 1e-2


def test_unknown_options_are_refused():
    g = G()
    g.output(g.conv(g.input("x", [1, 8, 12, 12]), 8, 8))
    model = g.model()
    with pytest.raises(TypeError, match="unknown option"):
        optimize_onnx(model, speed="max", target="h100")
    with pytest.raises(ValueError, match="unknown pass"):
        optimize_onnx(model, passes=("fold", "magic"), target="h100")
