"""Real files: bad input refused with a clear error and nothing written, the input never
overwritten, external data, graph interface and dynamic batch kept, opsets 11..newest, the
whole-model check and its fallbacks."""
import os

import numpy as np
import onnx
import pytest

import rewrite.entry.onnx_api as onnx_api
import rewrite.entry.retry as retry
from rewrite import optimize_onnx
from rewrite.entry.onnx_api import ModelCheckError, OnnxInputError
from tests.onnx.onnx_graphs import G, max_rel, run, sites

RNG = np.random.default_rng(3)


def block_model(opset=17, batch="N"):
    """dw → BN → ReLU6 → pw → BN → + x, and a stem conv → BN: fold and fuse sites."""
    g = G(opset=opset)
    x = g.input("image", [batch, 16, 12, 12])
    h = g.relu6(g.bn(g.conv(x, 16, 16, groups=16), 16))
    h = g.bn(g.conv(h, 16, 16, k=1, pads=[0] * 4), 16)
    g.output(g.node("Add", [h, x], name="residual"), [batch, 16, 12, 12])
    return g.model()


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "block.onnx"
    onnx.save_model(block_model(), path)
    return path


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("content, message", [
    (b"this is not an onnx model\n" * 20, "not a valid ONNX model"),
    (b"", "empty file"),
    (None, "truncated"),
])
def test_bad_files_are_refused_and_nothing_written(tmp_path, model_file, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model_file.read_bytes()[: len(model_file.read_bytes()) // 2] if content is None else content)
    before = _listing(tmp_path)
    with pytest.raises(OnnxInputError, match=message) as info:
        optimize_onnx(bad, tmp_path / "out.onnx", target="h100")
    assert str(bad) in str(info.value)
    assert _listing(tmp_path) == before
    assert isinstance(info.value, ValueError)


def test_missing_file_directory_and_checker_failure(tmp_path):
    with pytest.raises(OnnxInputError, match="no such file"):
        optimize_onnx(tmp_path / "nope.onnx", target="h100")
    with pytest.raises(OnnxInputError, match="not a file"):
        optimize_onnx(tmp_path, target="h100")
    model = block_model()
    model.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(OnnxInputError, match="fails the ONNX checker"):
        optimize_onnx(model, target="h100")
    g = G(opset=10)
    g.output(g.bn(g.conv(g.input("x", [1, 8, 12, 12]), 8, 16), 16))
    old = g.model()
    with pytest.raises(OnnxInputError, match="opset 10 is older than 11"):
        optimize_onnx(old, target="h100")


def test_nodes_out_of_order_are_sorted_and_a_cycle_is_still_refused():
    """onnxruntime's float16 converter (keep_io_types) lists Casts after their readers: onnxruntime
    runs such a file, the ONNX checker refuses it; sorting is the only change."""
    model = block_model()
    nodes = list(model.graph.node)
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(model)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes[::-1])
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(shuffled)
    feeds = {"image": RNG.standard_normal((2, 16, 12, 12)).astype(np.float32)}
    optimized, report = optimize_onnx(shuffled, target="h100")
    assert report.notes[0].startswith("the file lists nodes before the producers of their inputs")
    assert len(report.applied) >= 3 and max_rel(run(optimized, feeds), run(model, feeds)) < 1e-5
    assert [n.name for n in shuffled.graph.node] == [n.name for n in nodes[::-1]]   # the caller's copy untouched
    cycle = onnx.ModelProto()
    cycle.CopyFrom(model)
    first, last = cycle.graph.node[0], cycle.graph.node[len(cycle.graph.node) - 1]
    first.input[0] = last.output[0]           # the first node now reads the last one's output
    with pytest.raises(OnnxInputError, match="fails the ONNX checker"):
        optimize_onnx(cycle, target="h100")


def test_input_file_is_never_overwritten_unless_asked(model_file):
    data, mtime = model_file.read_bytes(), model_file.stat().st_mtime_ns
    with pytest.raises(OnnxInputError, match="refusing to overwrite"):
        optimize_onnx(model_file, model_file, target="h100")
    with pytest.raises(OnnxInputError, match="refusing to overwrite"):
        optimize_onnx(str(model_file), model_file.parent / "." / model_file.name, target="h100")
    assert model_file.read_bytes() == data and model_file.stat().st_mtime_ns == mtime
    _, report = optimize_onnx(model_file, model_file, overwrite=True, target="h100")
    assert report.applied and model_file.read_bytes() != data
    onnx.checker.check_model(onnx.load(model_file), full_check=True)
    assert _listing(model_file.parent) == [model_file.name]      # no temporary files left behind


def test_model_proto_argument_is_not_modified():
    model = block_model()
    data = model.SerializeToString()
    out, report = optimize_onnx(model, target="h100")
    assert sites(report, "fuse", "applied") and out.functions
    assert model.SerializeToString() == data


def test_model_proto_with_constant_nodes_is_not_modified():
    g = G()
    w = g.node("Constant", [], value=onnx.numpy_helper.from_array(g.weight((16, 8, 3, 3)).astype(np.float32)))
    g.output(g.bn(g.node("Conv", [g.input("x", [1, 8, 12, 12]), w], pads=[1] * 4), 16))
    model = g.model()
    data = model.SerializeToString()
    _, report = optimize_onnx(model, passes=("fold",), target="h100")
    assert sites(report, "fold", "applied")
    assert model.SerializeToString() == data


def test_external_data_round_trip(tmp_path):
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    model = block_model()
    onnx.save_model(block_model(), src, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (src.parent / "weights.bin").exists()
    dst = tmp_path / "out" / "fast.onnx"
    dst.parent.mkdir()
    out, report = optimize_onnx(src, dst, target="h100")
    assert _listing(dst.parent) == ["fast.onnx", "fast.onnx.data"]
    written = onnx.load(dst, load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"fast.onnx.data"}
    loaded = onnx.load(dst)
    onnx.checker.check_model(dst, full_check=True)
    feeds = {"image": RNG.standard_normal((2, 16, 12, 12)).astype(np.float32)}
    assert max_rel(run(loaded, feeds)[0], run(model, feeds)[0]) < 1e-5
    with pytest.raises(OnnxInputError, match="external data that is not loaded"):
        optimize_onnx(onnx.load(src, load_external_data=False), target="h100")
    os.remove(src.parent / "weights.bin")
    with pytest.raises(OnnxInputError, match="external data file"):
        optimize_onnx(src, target="h100")


def test_output_may_not_replace_the_inputs_external_data(tmp_path):
    src = tmp_path / "model.onnx"
    onnx.save_model(block_model(), src, save_as_external_data=True, location="other.onnx.data", size_threshold=0)
    with pytest.raises(OnnxInputError, match="external data"):
        optimize_onnx(src, tmp_path / "other.onnx", target="h100")


def test_graph_interface_and_dynamic_batch_are_kept(tmp_path):
    model = block_model()
    out, _ = optimize_onnx(model, tmp_path / "out.onnx", target="h100")
    for field in ("input", "output"):
        assert [v.SerializeToString() for v in getattr(out.graph, field)] == \
               [v.SerializeToString() for v in getattr(model.graph, field)]
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    written = onnx.load(tmp_path / "out.onnx")
    for batch in (1, 5):
        feeds = {"image": RNG.standard_normal((batch, 16, 12, 12)).astype(np.float32)}
        got, want = run(written, feeds)[0], run(model, feeds)[0]
        assert got.shape == (batch, 16, 12, 12) and max_rel(got, want) < 1e-5


@pytest.mark.parametrize("opset", [11, 12, 13, 14, 15, 17, 18, 20, onnx.defs.onnx_opset_version()])
def test_opsets(opset):
    model = block_model(opset=opset)
    if opset == onnx.defs.onnx_opset_version():
        from passes.onnx.runtime import error_text, session
        try:
            session(model)
        except Exception as exc:  # noqa: BLE001 - an onnxruntime older than the installed onnx
            pytest.skip(f"the installed onnxruntime does not run onnx's newest opset {opset}: {error_text(exc)}")
    out, report = optimize_onnx(model, target="h100")
    assert len(sites(report, "fold", "applied")) == 2 and len(sites(report, "fuse", "applied")) == 1
    assert {(i.domain, i.version) for i in out.opset_import} == {("", opset), ("dwsep", 1)}
    onnx.checker.check_model(out, full_check=True)
    feeds = {"image": RNG.standard_normal((2, 16, 12, 12)).astype(np.float32)}
    assert max_rel(run(out, feeds)[0], run(model, feeds)[0]) < 1e-5


def test_user_inputs_and_shapes_are_checked(tmp_path):
    model = block_model()
    npz = tmp_path / "inputs.npz"
    np.savez(npz, image=RNG.standard_normal((3, 16, 12, 12)).astype(np.float32))
    _, report = optimize_onnx(model, inputs=npz, target="h100")
    assert report.model_rel_error < 1e-5
    with pytest.raises(OnnxInputError, match="does not match the declared"):
        optimize_onnx(model, inputs={"image": np.zeros((1, 3, 12, 12), np.float32)}, target="h100")
    with pytest.raises(OnnxInputError, match="no value given for graph input 'image'"):
        optimize_onnx(model, inputs={"other": np.zeros(1)}, target="h100")
    with pytest.raises(OnnxInputError, match="unknown input"):
        optimize_onnx(model, input_shapes={"x": (1, 16, 12, 12)}, target="h100")


def test_whole_model_check_rolls_back_every_culprit():
    model = block_model()
    out, report = optimize_onnx(model, target="h100", model_tolerance=0.0)   # no rounding change passes
    assert not report.applied and sites(report, status="rolled_back")
    assert len(sites(report, status="rolled_back")) == 3
    # a tolerance under the original's own error: only the original can pass, so no bisection is tried
    assert any("own error" in n and "no rewrite can pass it, so none is retried" in n for n in report.notes)
    assert not any("bisection" in n for n in report.notes), report.notes
    assert "passed the whole-model check with every rewrite rolled back" in report.notes
    # against the float64 reference the result is as far as the original itself: it is the original
    assert report.model_rel_error == report.model_baseline_error > 0


def test_without_a_bisection_budget_the_check_falls_back_to_fewer_rewrites(monkeypatch):
    monkeypatch.setattr(retry, "MAX_BISECTION_RUNS", 0)
    reference = onnx_api._reference    # the original's own error unknown: the tolerance 0 is not known to be
    monkeypatch.setattr(onnx_api, "_reference", lambda *a: reference(*a)[:2] + (None,))  # out of reach
    out, report = optimize_onnx(block_model(), target="h100", model_tolerance=0.0)
    assert not report.applied and sites(report, status="rolled_back")
    notes = report.notes
    assert any("bisection found no culprit set within 0 re-runs" in n for n in notes), notes
    assert "retrying without the non-fold rewrites" in notes
    assert notes[-1] == "passed the whole-model check with every rewrite rolled back"


def test_failing_whole_model_check_raises_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_api, "_passes", lambda *args: (False, onnx_api.ModelCheck()))
    with pytest.raises(ModelCheckError, match="nothing written") as info:
        optimize_onnx(block_model(), tmp_path / "out.onnx", target="h100")
    assert info.value.report.sites and not (tmp_path / "out.onnx").exists()
    assert _listing(tmp_path) == []


def test_progress_messages(tmp_path):
    messages = []
    optimize_onnx(block_model(), progress=messages.append, verbose=True, target="h100")
    assert "fold pass" in messages and any(m.startswith("[1/") for m in messages)
    assert "whole-model check" in messages


def test_optimizing_an_optimized_model_changes_nothing():
    once, _ = optimize_onnx(block_model(), target="h100")
    twice, report = optimize_onnx(once, target="h100")
    assert not report.applied and report.model_rel_error == 0.0
    assert [(f.domain, f.name) for f in twice.functions] == [(f.domain, f.name) for f in once.functions]
    assert [n.op_type for n in twice.graph.node] == [n.op_type for n in once.graph.node]
    onnx.checker.check_model(twice, full_check=True)


def test_onnxruntime_messages_keep_what_is_wrong_and_drop_the_source_location():
    from passes.onnx.runtime import error_text
    # onnxruntime 1.30's words for a file of a newer IR version than it reads (two lines)
    raw = ("[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:202 "
           "onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const "
           "onnxruntime::IOnnxRuntimeOpSchemaRegistryList*, const onnxruntime::logging::Logger&, const "
           "onnxruntime::ModelOptions&) Unsupported model IR version: 14,\n max supported IR version: 13\n")
    assert error_text(RuntimeError(raw)) == \
        "[ONNXRuntimeError] : 1 : FAIL : Unsupported model IR version: 14, max supported IR version: 13"
