"""Run one site on its own in onnxruntime.

A site (the nodes of a chain, before or after a rewrite) is cut out of the graph as a standalone
model: its runtime inputs become graph inputs of the real shapes, the constants it reads become
initializers (Constant nodes and small constant expressions are evaluated), the local functions it calls come along.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from ..verify import SiteError
from . import runtime
from .graph import folded_value

FUNCTION_IR_VERSION = 8   # model-local functions need IR version 8


def site_model(nodes, inputs, values, output, opset_imports, ir_version: int, functions: dict) -> onnx.ModelProto:
    produced = {id(t) for n in nodes for t in n.outputs}
    fed = {id(t) for t in inputs}
    initializers = {}
    opset = next((i.version for i in opset_imports if i.domain in ("", "ai.onnx")), 17)
    for node in nodes:
        for t in node.inputs:
            if not t.name or id(t) in produced or id(t) in fed:
                continue
            if isinstance(t, gs.Constant):
                initializers[t.name] = OnnxExporter.export_tensor_proto(t)
                continue
            value = folded_value(t, set(), opset)   # a Constant node's output, or an expression over constants
            if value is None:
                raise SiteError(f"the site reads {t.name!r}, a runtime tensor it does not take as input")
            initializers[t.name] = onnx.numpy_helper.from_array(value, t.name)
    used = [functions[n.op] for n in nodes if n.op in functions and n.domain == functions[n.op].domain]
    graph = onnx.helper.make_graph(
        [OnnxExporter.export_node(n) for n in nodes], "site",
        [onnx.helper.make_tensor_value_info(t.name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for t, v in {t.name: (t, v) for t, v in zip(inputs, values)}.values()],   # a residual may be the input
        [onnx.ValueInfoProto(name=output.name)],
        list(initializers.values()),
    )
    imports = list(opset_imports)
    for f in used:
        if all(i.domain != f.domain for i in imports):
            imports.append(onnx.helper.make_opsetid(f.domain, 1))
    model = onnx.helper.make_model(graph, opset_imports=imports, functions=list({id(f): f for f in used}.values()))
    model.ir_version = max(ir_version, FUNCTION_IR_VERSION) if used else ir_version
    return model


def run_site(nodes, inputs, values, output, opset_imports, ir_version: int, functions: dict) -> np.ndarray:
    model = site_model(nodes, inputs, values, output, opset_imports, ir_version, functions)
    try:
        return runtime.run(model, {t.name: v for t, v in zip(inputs, values)}, [output.name])[output.name]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise SiteError(f"onnxruntime could not run the site ({runtime.error_text(exc, 200)})") from None
