"""An exported submodule as a plain GraphModule, without the per-call wrapping of torch.export.

`ExportedProgram.module()` returns a GraphModule whose every call flattens its arguments and
outputs as pytrees and runs forward hooks that check the inputs against the export's
constraints. For a submodule installed back into a model that calls it the way the capture saw
(positional tensors, one tensor or a tuple of tensors out), those checks are already known to
hold, and at small sizes they cost more than the convs: six 16-channel 3x3 blocks at 24² ran in
489 µs per block exported against 295 µs plain. The plain module runs the same graph, with the
same parameters (shared, not copied), through FX's ordinary code generation; the graph's own
shape guard (`_guards_fn`, where export put one) stays in it (passes/fx/result.py then swaps it
for a picklable check that says what to do).
"""
from __future__ import annotations

import copy

import torch.fx as fx
from torch.fx.graph import CodeGen


def plain_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` without the export wrapping, or `gm` itself when its calling convention is not plain
    (keyword arguments, non-tensor leaves, or outputs other than a tensor or a tuple of tensors)."""
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is None or info.in_spec is None or info.out_spec is None:
        return gm
    args_spec, kwargs_spec = _children(info.in_spec) if info.in_spec.type is tuple else (None, None)
    if args_spec is None or kwargs_spec.num_leaves or any(not c.is_leaf() for c in _children(args_spec)):
        return gm
    out = info.out_spec
    single = out.is_leaf()
    if not single and not (out.type is tuple and all(c.is_leaf() for c in _children(out))):
        return gm
    graph = copy.deepcopy(gm.graph)
    graph.set_codegen(CodeGen())
    output = next(node for node in graph.nodes if node.op == "output")
    flat = output.args[0]
    output.args = (flat[0] if single else tuple(flat),)
    plain = fx.GraphModule(gm, graph)
    plain.meta.update(getattr(gm, "meta", {}))
    return plain


def _children(spec) -> list:
    """A TreeSpec's children on torch 2.11 (children_specs) and on later versions (children())."""
    return list(spec.children()) if callable(getattr(spec, "children", None)) else list(spec.children_specs)
