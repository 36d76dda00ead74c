"""The module `optimize()` returns: an ordinary GraphModule that every next step accepts.

`ExportedProgram.module()` returns a GraphModule that refuses `eval()` and `train()` (so does
`torch.onnx.export(dynamo=False)` and OpenVINO's `convert_model`, which call them), carries
forward hooks that are local lambdas (so `torch.save` cannot pickle it), and checks its input
shapes in `_guards_fn`, a module whose forward is a function compiled at run time (also
unpicklable) that fails with a bare `AssertionError: Guard failed: x.size()[2] == 160`.

`OptimizedModule` is the same graph, parameters shared, without any of that:

- FX's ordinary code generation instead of the pytree wrapping (where the calling convention is
  plain: positional tensors in, a tensor or a tuple of tensors out), and no hooks;
- `_guards_fn` replaced by `InputCheck`, a module-level class that compares the sizes the
  capture fixed (every dimension but the dynamic ones) and raises a ValueError saying what to do;
- `eval()` / `train(False)` work; `train(True)` raises, since folded BatchNorms and merged
  branches cannot be trained back apart (the original model, untouched by `optimize()` unless
  `inplace=True`, is the one to train);
- `torch.save` / `torch.load` round-trip it as an `OptimizedModule`: a GraphModule pickles as its
  generated code and its attributes and comes back as a plain GraphModule, so `__reduce__` names
  a loader that rebuilds this class from the same parts.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.graph_module import reduce_graph_module

from .plain import plain_graph_module

INFERENCE_ONLY = (
    "the optimized model is for inference only: its BatchNorms are folded and its parallel branches merged, "
    "so it cannot be trained (train(True)); train the original model (optimize() leaves it untouched unless "
    "inplace=True) and optimize it again, or call eval() / train(False), which work")


class InputCheck(nn.Module):
    """Checks the sizes a capture fixed and says what to do when an input differs.

    `shapes[i]` is input i's shape as captured, with None for a dynamic dimension (the batch, and
    H and W under `dynamic_spatial`); non-tensor inputs have None. Takes the graph's inputs, returns
    nothing. Plain Python comparisons of sizes: torch.export, torch.jit.trace and torch.compile
    trace through it and record no op."""

    _is_impure = True       # FX's dead-code elimination must keep this call: it has no users

    def __init__(self, shapes: list, what: str, dynamic_spatial: bool):
        super().__init__()
        self.shapes, self.what, self.dynamic_spatial = shapes, what, dynamic_spatial
        self.training = False

    def forward(self, *inputs) -> None:
        if torch.jit.is_tracing():      # a trace records the sizes of its example anyway; no warnings
            return
        for i, (x, want) in enumerate(zip(inputs, self.shapes)):
            if want is None or not isinstance(x, torch.Tensor):
                continue
            if x.dim() != len(want) or any(w is not None and int(s) != w for s, w in zip(x.shape, want)):
                raise ValueError(self._message(i, tuple(x.shape), want))

    def _message(self, i: int, got: tuple, want: tuple) -> str:
        names = ["batch" if d == 0 else ("HW"[d - 2] if len(want) == 4 and d >= 2 else f"d{d}") for d in range(len(want))]
        captured = ", ".join(str(w) if w is not None else names[d] for d, w in enumerate(want))
        head = f"{self.what} was captured for inputs of shape ({captured}) and got input {i} of shape {got}"
        if self.dynamic_spatial:
            return f"{head}: only the dimensions named here may change"
        return (f"{head}: its pads and shapes are fixed to the example inputs' sizes (only the batch may change); "
                "optimize with example inputs of the size you run, or with dynamic_spatial=True for any height "
                "and width")


class OptimizedModule(fx.GraphModule):
    """The rewritten graph as an ordinary module (see the module docstring): inference only."""

    def train(self, mode: bool = True) -> OptimizedModule:
        if mode:
            raise RuntimeError(INFERENCE_ONLY)
        return super().train(False)

    def __reduce__(self):
        _, (body, import_block) = super().__reduce__()
        return (_load_optimized, (body, import_block))


def _load_optimized(body: dict, import_block: str) -> OptimizedModule:
    """Unpickle: FX rebuilds the graph from the saved code, then the class is put back."""
    gm = reduce_graph_module(body, import_block)
    module = OptimizedModule(gm, gm.graph)
    for name, value in vars(gm).items():       # attributes the graph does not reference (rewrite_report, ...)
        if name not in vars(module):
            setattr(module, name, value)
    for name, buffer in gm.named_buffers(recurse=False):
        if name not in module._buffers:
            module.register_buffer(name, buffer)
    module.training = False
    return module


def optimized_module(gm: fx.GraphModule, example_inputs: tuple, dynamic_spatial: bool) -> OptimizedModule:
    """The whole-model capture `gm` (after the passes) as an OptimizedModule, checking its inputs."""
    plain = ordinary_graph_module(gm, example_inputs, dynamic_spatial, "the optimized model")
    module = OptimizedModule(plain, plain.graph)
    module.meta.update(getattr(plain, "meta", {}))
    module._tracer_cls, module._tracer_extras = None, {}
    module.training = False
    for sub in module.modules():
        sub.training = False
    return module


def ordinary_graph_module(gm: fx.GraphModule, example_inputs: tuple, dynamic_spatial: bool,
                          what: str) -> fx.GraphModule:
    """`gm` with plain code generation (where its calling convention allows) and export's
    `_guards_fn` replaced by an InputCheck: a GraphModule with no hooks that pickles."""
    plain = plain_graph_module(gm)
    if plain is gm:                  # not a plain calling convention: still drop export's hooks
        plain = fx.GraphModule(gm, gm.graph)
        plain.meta.update(getattr(gm, "meta", {}))
    # unpickling re-traces the saved code with the graph's tracer class; export's (it takes a
    # scope_root) cannot be built that way, FX's default can
    plain._tracer_cls, plain._tracer_extras = None, {}
    guards = [n for n in plain.graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]
    if guards or not dynamic_spatial:
        shapes = _captured_shapes(plain, example_inputs, dynamic_spatial)
        check = InputCheck(shapes, what, dynamic_spatial)
        if guards:
            plain._guards_fn = check
        else:
            plain.add_submodule("_guards_fn", check)
            placeholders = plain.graph.find_nodes(op="placeholder")
            with plain.graph.inserting_after(placeholders[-1]):
                plain.graph.call_module("_guards_fn", tuple(placeholders))
        plain.recompile()
    return plain


def _captured_shapes(gm: fx.GraphModule, example_inputs: tuple, dynamic_spatial: bool) -> list:
    """Per graph input: its example shape with None for the dimensions the capture left dynamic
    (symbolic in the placeholder's recorded value; else the batch, and H and W of 4-d inputs
    under dynamic_spatial), or None for a non-tensor input."""
    placeholders = gm.graph.find_nodes(op="placeholder")
    flat = torch.utils._pytree.tree_flatten(example_inputs)[0]
    shapes = []
    for i, node in enumerate(placeholders):
        val = node.meta.get("val")
        x = flat[i] if i < len(flat) else None
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(None if isinstance(d, torch.SymInt) else int(d) for d in val.shape))
        elif isinstance(x, torch.Tensor):
            dynamic = {0} | ({2, 3} if dynamic_spatial and x.dim() == 4 else set())
            shapes.append(tuple(None if d in dynamic else int(s) for d, s in enumerate(x.shape)))
        else:
            shapes.append(None)
    return shapes
