"""The ONNX adapter of the pass manager (passes/manager.py) over one onnx-graphsurgeon graph.

At the first view and after every rewrite it runs the current graph once in onnxruntime and
keeps, for each tensor a conv, a pad or an add reads, its full shape and a CAPTURE_SIDE² crop
of CHECK_BATCH images (passes/verify.py). A site's original nodes and its replacement each run
on their own in onnxruntime, cut out of the graph as a standalone model (verify.py); the
reference is the lifted IR evaluated in float64 by torch, so the original's own error first
confirms the lift read the nodes right. A verified replacement is spliced in where the chain
was, producing the chain's own output tensor, so names, consumers and graph outputs are kept.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch

from rewrite.ir import run_chain
from rewrite.rules import registered

from ..verify import capture_window
from . import runtime, runtimes
from .graph import Names, detach, is_op, replace_nodes
from .io import default_opset
from .lift import QUANTIZED_CONVS
from .lower import DOMAIN, OnnxSite, lower_onnx
from .verify import FUNCTION_IR_VERSION, run_site, site_model
from .view import OnnxViewBuilder


class OnnxAdapter:
    reference_is_lifted = True

    def __init__(self, model: onnx.ModelProto, dtype: torch.dtype, feeds: dict | None,
                 progress: Callable | None = None, timing_runtime: str = "onnxruntime"):
        self.source, self.dtype, self.feeds = model, dtype, feeds
        self.notes: list = []                     # what the report should say (a capture that failed), read at the end
        self.timing_runtime = timing_runtime      # where a site's forms are timed (runtimes.RUNTIMES)
        self._runtime_name = None
        self.graph = gs.import_onnx(model)
        self.graph.import_domains = [onnx.helper.make_opsetid(i.domain, i.version) for i in model.opset_import]
        self.opset = default_opset(model)
        self.overridable = {i.name for i in model.graph.input} & {t.name for t in model.graph.initializer}
        self.builder = OnnxViewBuilder(self.graph, self.opset, dtype, self.overridable, runtime.static_spatial(model))
        self.functions = {f.name: f for f in model.functions if f.domain == DOMAIN}
        self.names = Names(self.graph)
        self.origin: dict = {}            # id(node) → (the pass that created it, node)
        self.touched: set = set()         # ids of the nodes a rewrite removed since the last view
        self.values: dict = {}            # tensor name → captured crop (torch)
        self.shapes: dict = {}            # tensor name → full shape
        self.stale = True                 # the graph changed since the last capture
        self._progress = progress

    # -- the manager's interface -----------------------------------------------------------

    def progress(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def site_name(self, match) -> str:
        return match.name

    def view(self):
        if self.stale:
            self.graph.cleanup().toposort()
            self._capture()
            self.stale = False
        self.touched = set()
        return self.builder.build(self.shapes, self.origin)

    def live(self, match) -> bool:
        return not any(id(node) in self.touched for op in match.ops for node in op.nodes)

    def value(self, v):
        return self.values.get(v)

    def outputs(self, samples, convs: list) -> list:
        """The graph's outputs (a list of arrays per sample) with the conv each (match, ConvSpec) of
        `convs` names given that spec's weight and bias: new initializers, the node pointed at them,
        in an exported copy (the graph itself is left as it is)."""
        model = self.model()
        producers = {n.output[0]: n for n in model.graph.node if n.output}
        dtype = next(t.data_type for t in model.graph.initializer if t.name == producers[convs[0][0].output].input[1]) \
            if convs else None
        for i, (match, conv) in enumerate(convs):
            node = producers[match.output]
            names = [f"{node.name}__fitted_weight_{i}", f"{node.name}__fitted_bias_{i}"]
            for name, value in zip(names, (conv.weight, conv.bias)):
                array = value.detach().cpu().numpy().astype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
                model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
            node.input[1] = names[0]
            if len(node.input) > 2:
                node.input[2] = names[1]
            else:
                node.input.append(names[1])
        sess = runtime.session(model)
        return [sess.run(None, feeds) for feeds in samples]

    def stream(self, values, samples, each) -> None:
        """Run the graph as it is now on each sample (a feeds dict), calling each(name, activation)
        for every tensor named in `values`: one session, the tensors exposed as outputs."""
        names = list(dict.fromkeys(values))
        sess = runtime.exposing(self.model(), names)
        for feeds in samples:
            for name, a in zip(names, sess.run(names, feeds)):
                each(name, torch.from_numpy(a))

    def lower(self, match, plan) -> list:
        """The nodes of plan.after, each record lowered as passes/records/ declares it."""
        site = OnnxSite(match, plan, self._tensor(match.input), self.shapes.get(match.input), self.names, self.opset,
                        self.dtype, self.functions, self._tensor)
        return lower_onnx(plan.after, site)

    def original(self, match):
        return self._runner(match.nodes_in(self.graph.nodes), match, self._tensor(match.output))

    def reference(self, match):
        if match.whole is not None:    # a site that is not a chain of layers (a squeeze-excitation, a residual)
            return match.whole.to(torch.float64).apply
        layers = [layer.to(torch.float64) if hasattr(layer, "to") else layer for layer in match.layers]
        return lambda *xs: run_chain(layers, *xs)

    def candidate(self, lowered: list, match):
        return self._runner(lowered, match, lowered[-1].outputs[0])

    def commit(self, match, plan, lowered: list) -> None:
        old = match.nodes_in(self.graph.nodes)
        ends = lowered.ends[:-1] + [self._tensor(match.output)]
        removed = {id(node) for node in old}
        for value, index in plan.stand_ins.items():      # shape-only readers: a value of the same shape
            stand = self._tensor(match.input) if index < 0 else ends[index]
            for node in self.graph.nodes:
                if id(node) not in removed:
                    for i, t in enumerate(node.inputs):
                        if t.name == value:
                            node.inputs[i] = stand
        replace_nodes(self.graph, old, lowered, self._tensor(match.output))
        if len(lowered) == 1:
            lowered[0].name = match.name          # the node that replaces a chain keeps its name
        for node in lowered:
            self.origin[id(node)] = (plan.kind, node)
        self.touched.update(id(node) for node in old)
        self.stale = True

    def discard(self, lowered: list) -> None:
        detach(lowered)

    # -- the model -------------------------------------------------------------------------

    def model(self) -> onnx.ModelProto:
        """The graph as a ModelProto with the original's graph inputs and outputs (names, dtypes,
        symbolic dimensions, initializers listed as inputs), opset imports, metadata and IR
        version (raised to 8 only when local functions were added)."""
        self.graph.cleanup().toposort()
        out = gs.export_onnx(self.graph, do_type_check=False)
        original = self.source
        used = {(n.domain, n.op_type) for n in out.graph.node}
        present = {(f.domain, f.name) for f in out.functions}
        out.functions.extend(f for f in self.functions.values()
                             if (f.domain, f.name) in used and (f.domain, f.name) not in present)
        out.ir_version = max(original.ir_version, FUNCTION_IR_VERSION) if out.functions else original.ir_version
        for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
            setattr(out, key, getattr(original, key))
        out.metadata_props.extend(original.metadata_props)
        for field in ("input", "output"):
            del getattr(out.graph, field)[:]
            getattr(out.graph, field).extend(getattr(original.graph, field))
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _capture(self) -> None:
        """Shapes and crops of the tensors the site checks read: conv, pad and BatchNorm inputs, the
        operands of Add / Sub / Mul / Div.
        Without inputs (or when onnxruntime cannot run the graph), static shapes from shape
        inference and no activations."""
        if self.feeds is None:
            self.shapes = self.shapes or runtime.inferred_shapes(self.source)
            return
        names = [n.inputs[0].name for n in self.graph.nodes
                 if is_op(n, "Conv", "Gemm", "Pad", "BatchNormalization", "MatMul", "LayerNormalization",
                          "Transpose", "Flatten", "Reshape", "Shape", "Concat", "Split", "Slice", *QUANTIZED_CONVS)
                 and n.inputs]
        names += [n.outputs[0].name for n in self.graph.nodes if is_op(n, "Flatten", "Reshape") and n.outputs]
        last = {n.inputs[0].name for n in self.graph.nodes if n.inputs and (
            is_op(n, "MatMul", "LayerNormalization") or self.builder.reduces_last_axis(n, {}))}
        names += [t.name for n in self.graph.nodes if is_op(n, "Add", "Sub", "Mul", "Div")
                  for t in n.inputs if isinstance(t, gs.Variable)]
        kinds = {kind for rule in registered().values() for kind in rule.captures}
        if kinds:      # the inputs of the view ops a rule's site checks read (Rule.captures)
            names += [op.inputs[0] for op in self.builder.build({}, self.origin).ops if op.kind in kinds and op.inputs]
        self.progress("capturing activations")
        try:
            captured = runtime.capture(self.model(), [n for n in names if n], self.feeds)
        except Exception as exc:  # noqa: BLE001 - any onnxruntime failure: fall back to static shapes
            self.notes.append(f"could not capture activations in onnxruntime ({runtime.error_text(exc, 200)})")
            self.feeds, self.values, self.shapes = None, {}, runtime.inferred_shapes(self.source)
            return
        self.values, self.shapes = {}, {}
        for name, a in captured.items():
            self.shapes[name] = tuple(a.shape)
            self.values[name] = torch.from_numpy(capture_window(a, name in last).copy())

    def _tensor(self, name: str) -> gs.Tensor:
        return self.graph.tensors()[name]

    @property
    def runtime(self) -> str:
        if self._runtime_name is None:
            self._runtime_name = runtimes.describe(self.timing_runtime)
        return self._runtime_name

    def timed(self, match, lowered: list):
        """The site's original nodes and their replacement, each compiled alone in the timing
        runtime (onnxruntime with its optimizations on, or OpenVINO: runtimes.py), and random
        inputs of the full shapes that reach the site."""
        inputs = [self._tensor(v) for v in match.runtime_inputs]
        rng = np.random.default_rng(0)
        dtype = np.dtype(torch.empty((), dtype=self.dtype).numpy().dtype)
        arrays = [rng.standard_normal(self.shapes[v]).astype(dtype) for v in match.runtime_inputs]

        def runner(nodes, output):
            model = site_model(nodes, inputs, arrays, output, self.graph.import_domains, self.source.ir_version,
                               self.functions)
            run = runtimes.compiled(model, self.timing_runtime)
            names = [t.name for t in inputs]
            return lambda *xs: run(dict(zip(names, xs)))
        out = self._tensor(match.output)
        return runner(match.nodes_in(self.graph.nodes), out), runner(lowered, lowered[-1].outputs[0]), arrays

    def _runner(self, nodes: list, match, output: gs.Tensor):
        """A callable running `nodes` alone in onnxruntime on (input, residual) torch tensors."""
        inputs = [self._tensor(v) for v in match.runtime_inputs]

        def run(*xs):
            arrays = [np.ascontiguousarray(x.numpy()) for x in xs]
            return torch.from_numpy(run_site(nodes, inputs, arrays, output, self.graph.import_domains,
                                             self.source.ir_version, self.functions))
        return run

