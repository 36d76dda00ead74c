"""Reading, validating and writing ONNX files.

Every way a file can be unusable (missing, not ONNX, truncated, failing the checker, too old an
opset, external data that cannot be found) becomes an `OnnxInputError` naming the file and the
problem. Writing is atomic (a temporary directory next to the destination, then a rename), uses
external data when the model needs it (> 2 GB) or the input had it, and never replaces the
input file or its external data unless the caller asked to overwrite.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

MIN_OPSET = 11
PROTOBUF_LIMIT = 2**31 - 2**27   # ~1.87 GB: above this a model cannot be serialized as one message


class OnnxInputError(ValueError):
    """The model (or the request) cannot be processed; the message says why and where."""


@dataclass
class Loaded:
    model: onnx.ModelProto
    path: Path | None = None
    external: bool = False                           # the file kept tensors in external data
    data_files: set = field(default_factory=set)     # resolved paths of those external data files
    notes: list = field(default_factory=list)        # what validate() had to repair


def load(src) -> Loaded:
    """Load a path, or copy a ModelProto (the caller's is never changed), with its external data;
    or raise OnnxInputError."""
    if isinstance(src, onnx.ModelProto):
        if any(uses_external_data(t) and not t.raw_data for t in _initializers(src)):
            raise OnnxInputError("the ModelProto refers to external data that is not loaded; pass its path, "
                                 "or load it with onnx.load(path, load_external_data=True)")
        copy = onnx.ModelProto()
        copy.CopyFrom(src)
        return Loaded(copy)
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"expected a path or an onnx.ModelProto, got {type(src).__name__}")
    path = Path(src)
    if not path.exists():
        raise OnnxInputError(f"{path}: no such file")
    if not path.is_file():
        raise OnnxInputError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise OnnxInputError(f"{path}: not a valid ONNX model, or the file is truncated ({_first_line(exc)})") from None
    if not model.HasField("graph") or not model.opset_import:
        what = "empty file" if path.stat().st_size == 0 else "no graph or no opset import"
        raise OnnxInputError(f"{path}: not an ONNX model ({what})")
    external = [t for t in _initializers(model) if uses_external_data(t)]
    data_files = {(path.parent / ExternalDataInfo(t).location).resolve() for t in external}
    if external:
        missing = sorted(str(f) for f in data_files if not f.is_file())
        if missing:
            raise OnnxInputError(f"{path}: external data file(s) not found: {', '.join(missing)}")
        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, RuntimeError) as exc:
            raise OnnxInputError(f"{path}: cannot read its external data ({_first_line(exc)})") from None
    return Loaded(model, path, bool(external), data_files)


def validate(loaded: Loaded) -> int:
    """Run the ONNX checker and the opset check; returns the default-domain opset."""
    label = str(loaded.path) if loaded.path else "model"
    try:
        if loaded.path is not None and too_big(loaded.model):
            onnx.checker.check_model(str(loaded.path))
        else:
            check(loaded.model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        # converters (onnxruntime's float16 one among them) can list a node before the producer of
        # its input; onnxruntime runs such a file, and putting the nodes in order changes nothing else
        if not sort_nodes(loaded.model.graph):
            raise OnnxInputError(f"{label}: fails the ONNX checker: {_first_line(exc)}") from None
        try:
            check(loaded.model)
        except (onnx.checker.ValidationError, ValueError) as again:
            raise OnnxInputError(f"{label}: fails the ONNX checker: {_first_line(again)}") from None
        loaded.notes.append("the file lists nodes before the producers of their inputs (the ONNX checker refuses "
                            "it); they were put in topological order first")
    opset = default_opset(loaded.model)
    if opset < MIN_OPSET:
        raise OnnxInputError(f"{label}: opset {opset} is older than {MIN_OPSET}, the oldest supported; "
                             "convert it first with onnx.version_converter.convert_version(model, 13)")
    return opset


def sort_nodes(graph: onnx.GraphProto) -> bool:
    """Reorder `graph`'s nodes topologically (stable: nodes already in order keep their order);
    True when the order changed, False when it was sorted or cannot be (a cycle, an input nothing
    produces). A node's inputs include the outer names its subgraphs read."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {t.name for t in graph.sparse_initializer}
    needs = [set(n.input) | _outer_names(n) for n in graph.node]
    produced_here = {o for n in graph.node for o in n.output}
    order, pending = [], list(range(len(graph.node)))
    while pending:
        ready = [i for i in pending if all(x in available or x not in produced_here for x in needs[i])]
        if not ready:
            return False
        first = ready[0]
        order.append(first)
        available.update(graph.node[first].output)
        pending.remove(first)
    if order == sorted(order):
        return False
    nodes = [graph.node[i] for i in order]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return True


def _outer_names(node: onnx.NodeProto) -> set:
    """Names a node's subgraphs (If / Loop / Scan bodies) read from the enclosing scopes."""
    names = set()
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(attr.graphs):
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer} | \
                {o for n in sub.node for o in n.output}
            for n in sub.node:
                names |= {x for x in n.input if x and x not in local}
                names |= {x for x in _outer_names(n) if x not in local}
    return names


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise OnnxInputError("the model does not import the default ONNX domain")


def check(model: onnx.ModelProto, full: bool = False) -> None:
    """onnx.checker on a model of any size (through a temporary file above the protobuf limit)."""
    if not too_big(model):
        onnx.checker.check_model(model, full_check=full)
        return
    with tempfile.TemporaryDirectory(prefix="dwsep-check-") as tmp:
        path = Path(tmp) / "model.onnx"
        _save_external(model, path)
        onnx.checker.check_model(str(path), full_check=full)


def too_big(model: onnx.ModelProto) -> bool:
    return sum(t.ByteSize() for t in _initializers(model)) > PROTOBUF_LIMIT


def resolve_destination(loaded: Loaded, dst, overwrite: bool) -> Path:
    """The output path, refusing to replace the input (or its external data) unless asked."""
    dst = Path(dst)
    if dst.exists() and dst.is_dir():
        raise OnnxInputError(f"{dst}: is a directory; give the output file name")
    if not dst.parent.exists():
        raise OnnxInputError(f"{dst.parent}: output directory does not exist")
    if loaded.path is not None and not overwrite:
        target, data = dst.resolve(), (dst.parent / f"{dst.name}.data").resolve()
        if target == loaded.path.resolve():
            raise OnnxInputError(f"{dst}: is the input file; refusing to overwrite it (pass overwrite=True / --overwrite)")
        if target in loaded.data_files or data in loaded.data_files:
            raise OnnxInputError(f"{dst}: writing it would replace the input's external data; choose another name")
    return dst


def save(model: onnx.ModelProto, dst: Path, external: bool) -> list[Path]:
    """Write atomically; with external data in `<dst name>.data`. Returns the files written."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        written = []
        if external:
            _save_external(model, tmp / dst.name, data_name=f"{dst.name}.data")
            os.replace(tmp / f"{dst.name}.data", dst.parent / f"{dst.name}.data")
            written.append(dst.parent / f"{dst.name}.data")
        else:
            onnx.save_model(model, str(tmp / dst.name))
        os.replace(tmp / dst.name, dst)
        return [dst] + written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_external(model: onnx.ModelProto, path: Path, data_name: str | None = None) -> None:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)   # save_model moves tensor data out of the proto it is given
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name or f"{path.name}.data", size_threshold=1024)


def _initializers(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
