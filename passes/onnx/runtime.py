"""onnxruntime sessions, model inputs, and the activations (or static shapes) that reach each site.

Sessions run on the CPU provider with graph optimizations off, so what is checked is the
model as written, not onnxruntime's own fusions of it; sessions that time a site's forms turn
them on, as a user would run the model. Inputs are seeded random tensors of the
declared shapes or the caller's arrays, checked against the declaration.

Exporters write a dynamic dimension several ways: a name (`N`, `p2o.DynamicDimension.0`, `?`),
no value at all, -1 or 0; all of them are dynamic here. In random inputs a dynamic batch
dimension takes `batch`, a dynamic spatial dimension `spatial` (64 by default: a multiple of 32
that detectors and recognizers accept), a dynamic channel dimension what the first conv takes,
any other 1, unless the caller gives shapes. Which axes are spatial and which is the channel axis
is read from the graph (`layout`): TensorFlow / Keras exports take NHWC images and transpose
them before their first conv, and an NHWC input `N, M1, M2, 3` read as NCHW would get a height
of 1, which the first 3x3 conv refuses.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort

from .io import OnnxInputError, too_big


def error_text(exc: BaseException, limit: int = 300) -> str:
    """onnxruntime's message on one line, without the C++ source location and signature it puts
    before the part that says what is wrong."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\S*onnxruntime_src/\S+ \S+\(.*?\) ", "", text)
    return text[:limit]


def session(model: onnx.ModelProto, optimized: bool = False) -> ort.InferenceSession:
    """A CPU session; `optimized` turns onnxruntime's graph optimizations on, as a user runs it
    (for timing forms), instead of off (for checking the model as written)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 4     # fatal only: its errors reach the user as our own messages
    # Idle onnxruntime threads must not spin: the float64 torch references run right after.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    model = loosened(model)
    if not too_big(model):
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    tmp = tempfile.TemporaryDirectory(prefix="dwsep-ort-")
    path = Path(tmp.name) / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    sess._dwsep_tmp = tmp   # keep the external data alive as long as the session
    return sess


def loosened(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or a copy whose graph inputs declare their dynamic dimensions written as 0 or -1
    by name: onnxruntime takes a 0 for a fixed empty dimension."""
    fixed = [d for vi in model.graph.input for d in vi.type.tensor_type.shape.dim
             if d.HasField("dim_value") and d.dim_value <= 0]
    if not fixed:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, vi in enumerate(copy.graph.input):
        for j, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.dim_param = f"dynamic_{i}_{j}"
    return copy


def run(model: onnx.ModelProto, feeds: dict, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    sess = session(model)
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def capture(model: onnx.ModelProto, names, feeds: dict) -> dict[str, np.ndarray]:
    """Run `model` once and return the values of the tensors `names` (exposed as extra outputs)."""
    wanted = list(dict.fromkeys(names))
    return dict(zip(wanted, exposing(model, wanted).run(wanted, feeds)))


def exposing(model: onnx.ModelProto, names) -> ort.InferenceSession:
    """A session of `model` with the tensors `names` exposed as extra outputs (`model` is left as it was)."""
    present = {o.name for o in model.graph.output}
    extra = [n for n in dict.fromkeys(names) if n not in present]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
    try:
        return session(model)
    finally:
        del model.graph.output[len(model.graph.output) - len(extra):]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Inputs that are not initializers (IR < 4 models list weights as inputs too)."""
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def static_spatial(model: onnx.ModelProto) -> bool:
    """True when no graph input has a symbolic dimension past the batch dimension."""
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if any(dim(d) is None for d in list(dims)[1:]):
            return False
    return True


def inferred_shapes(model: onnx.ModelProto) -> dict:
    """Static shapes from ONNX shape inference (a symbolic batch dimension counts as 1): what
    the passes go by when no activation can be captured."""
    if too_big(model):
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort here
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [dim(d) for d in vi.type.tensor_type.shape.dim]
        if dims and all(d is not None for d in dims[1:]):
            shapes[vi.name] = tuple([dims[0] or 1] + dims[1:])
    return shapes


SPATIAL_DEFAULT = 64


def dim(d: onnx.TensorShapeProto.Dimension) -> int | None:
    """A declared dimension's size, or None when it is dynamic: named, empty, -1 or 0."""
    return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None


def declared(vi: onnx.ValueInfoProto) -> tuple[np.dtype, list | None]:
    """(numpy dtype, dims with int or None for dynamic; None for an undeclared rank) of a tensor input."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or tt.elem_type == 0:
        raise OnnxInputError(f"graph input {vi.name!r} is not a typed tensor; cannot feed it")
    dims = [dim(d) for d in tt.shape.dim] if tt.HasField("shape") else None
    return onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), dims


# ops that keep each axis where it is: what TF / Keras exports put between an image input and its
# transpose or first conv (a cast, a normalization), and activations
_AXIS_PRESERVING = {"Cast", "Identity", "Sub", "Add", "Mul", "Div", "Relu", "Clip", "Neg", "Abs", "Sqrt"}


class Layout(NamedTuple):
    channel: int              # the axis of the channels
    spatial: tuple            # the spatial axes
    channels: int | None      # the first conv's input channels (its weight's C/groups times groups), if known


def layout(model: onnx.ModelProto, name: str, rank: int) -> Layout:
    """How graph input `name` of rank >= 3 is laid out, read from the path to its first conv:
    through axis-preserving ops (_AXIS_PRESERVING) to a Transpose, whose perm says which input
    axis becomes the conv's channels (perm[1]) and spatial axes (perm[2:]), or straight to a Conv
    (channels first). Where no such path is found: channels first (NCHW, NCL, NCDHW)."""
    channels_first = Layout(1, tuple(range(2, rank)), None)
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for i, x in enumerate(node.input):
            readers.setdefault(x, []).append((node, i))
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    perm = list(range(rank))
    frontier, seen = [name], set()
    while frontier:
        tensor = frontier.pop(0)
        if tensor in seen:
            continue
        seen.add(tensor)
        for node, i in readers.get(tensor, []):
            if node.op_type == "Conv" and i == 0:
                w = weights.get(node.input[1]) if len(node.input) > 1 else None
                groups = next((a.i for a in node.attribute if a.name == "group"), 1)
                channels = w[1] * groups if w and len(w) == rank else None
                return Layout(perm[1], tuple(perm[2:]), channels)
            if node.op_type == "Transpose" and perm == list(range(rank)):
                order = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if order is None or sorted(order) != list(range(rank)):
                    return channels_first
                perm = order
                frontier.append(node.output[0])
            elif node.op_type in _AXIS_PRESERVING:
                frontier.extend(node.output[:1])
    return channels_first


def dynamic_spatial(model: onnx.ModelProto) -> bool:
    """True when some graph input of rank >= 3 has a dynamic spatial dimension."""
    for vi in graph_inputs(model):
        dims = declared(vi)[1]
        if dims is not None and len(dims) >= 3 and any(dims[a] is None for a in layout(model, vi.name, len(dims)).spatial):
            return True
    return False


def random_inputs(model: onnx.ModelProto, batch: int = 1, shapes: dict | None = None, seed: int = 0,
                  spatial: int = SPATIAL_DEFAULT) -> dict:
    """Seeded inputs of the declared shapes: N(0,1) floats, small non-negative integers, False."""
    rng = np.random.default_rng(seed)
    shapes = dict(shapes or {})
    feeds = {}
    for vi in graph_inputs(model):
        dtype, dims = declared(vi)
        if vi.name in shapes:
            shape = [int(d) for d in shapes.pop(vi.name)]
            _check_shape(vi.name, shape, dims)
        elif dims is None:
            raise OnnxInputError(f"input {vi.name!r} declares no shape; give its shape (input_shapes / "
                                 "--input-shape NAME:D0,D1,...) or the inputs")
        else:
            shape = _filled(dims, layout(model, vi.name, len(dims)) if len(dims) >= 3 else None, batch, spatial)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype)
    if shapes:
        raise OnnxInputError(f"input shape(s) given for unknown input(s) {sorted(shapes)}; "
                             f"inputs are {[vi.name for vi in graph_inputs(model)]}")
    return feeds


def _filled(dims: list, axes: Layout | None, batch: int, spatial: int) -> list:
    """`dims` with each dynamic dimension given a size: the batch (first), the spatial size, the
    channels the first conv takes, or 1."""
    def size(i):
        if i == 0:
            return batch
        if axes is not None and i in axes.spatial:
            return spatial
        if axes is not None and i == axes.channel and axes.channels:
            return axes.channels
        return 1
    return [d if d is not None else size(i) for i, d in enumerate(dims)]


def user_arrays(given) -> dict:
    """A dict of arrays, or the arrays of a .npz path (a clear error for a file that is not one)."""
    if isinstance(given, (str, Path)):
        try:
            with np.load(given) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise OnnxInputError(f"{given}: cannot read inputs ({exc})") from None
    return dict(given)


def user_inputs(model: onnx.ModelProto, given) -> dict:
    """The caller's inputs (dict of arrays or a .npz path), checked against the declared inputs."""
    given = user_arrays(given)
    feeds = {}
    for vi in graph_inputs(model):
        if vi.name not in given:
            raise OnnxInputError(f"no value given for graph input {vi.name!r} (given: {sorted(given)})")
        dtype, dims = declared(vi)
        value = np.asarray(given.pop(vi.name))
        if np.issubdtype(dtype, np.floating) != np.issubdtype(value.dtype, np.floating):
            raise OnnxInputError(f"input {vi.name!r}: got {value.dtype}, the model declares {dtype}")
        _check_shape(vi.name, list(value.shape), dims)
        feeds[vi.name] = value.astype(dtype, copy=False)
    if given:
        raise OnnxInputError(f"value(s) given for unknown input(s) {sorted(given)}")
    return feeds


def _check_shape(name: str, shape: list, dims: list | None) -> None:
    if dims is None:
        return
    if len(shape) != len(dims):
        raise OnnxInputError(f"input {name!r}: shape {tuple(shape)} has rank {len(shape)}, the model declares rank "
                             f"{len(dims)} {_declared(dims)}")
    wrong = [i for i, (s, d) in enumerate(zip(shape, dims)) if d is not None and d != s]
    if wrong:
        raise OnnxInputError(f"input {name!r}: shape {tuple(shape)} does not match the declared {_declared(dims)} "
                             f"(dimension {wrong[0]} is fixed at {dims[wrong[0]]})")


def _declared(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def widened_reference(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A float32 copy of a float16 model (weights, declared types, Cast/Constant nodes), or None.

    onnxruntime has no float64 Conv on CPU, so float64 is out of reach for a whole model; for a
    half-precision model the float32 copy is the better reference.
    """
    half = (onnx.TensorProto.FLOAT16,)
    if not any(t.data_type in half for t in model.graph.initializer):
        return None
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    g = wide.graph
    for i, t in enumerate(g.initializer):
        if t.data_type in half:
            g.initializer[i].CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(t).astype(np.float32), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type in half:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for node in list(g.node) + [n for f in wide.functions for n in f.node]:
        for attr in node.attribute:
            if node.op_type in ("Cast", "RandomNormal", "RandomUniform", "EyeLike") and attr.name in ("to", "dtype") \
                    and attr.i in half:
                attr.i = onnx.TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in half:
                attr.t.CopyFrom(onnx.numpy_helper.from_array(
                    onnx.numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
    return wide
