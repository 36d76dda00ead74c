"""The FX adapter of the pass manager (passes/manager.py) over one exported GraphModule.

It captures the activations the site checks need (one run through an fx.Interpreter, keeping a
CAPTURE_SIDE² crop of each conv / pad input and each add operand, and every node's full shape),
builds views, runs a site's original nodes on their own (model dtype and float64), and splices a
verified replacement in: new call_module nodes before the chain's tail, the tail itself
retargeted to the last new module (so the value every later reader holds, and its captured
activation, stay the same), the chain's other nodes and the parameters only they read removed.
The new modules take the module path of the site's head (`features.3.conv.0`), so the
state_dict keeps its keys where one module replaces another.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from rewrite.rules import registered

from ..verify import capture_window
from .inplace import restore_inplace
from .lower import fx_roles, lower, run_nodes
from .view import FxViewBuilder


class FxAdapter:
    reference_is_lifted = False

    def __init__(self, gm: fx.GraphModule, example_inputs: tuple, prefix: str = "", progress=None):
        self.gm = gm
        self.prefix = prefix              # the region's path in the user's model
        self.builder = FxViewBuilder(gm)
        self.touched: set = set()         # nodes a rewrite removed or retargeted since the last view
        self.values: dict = {}
        self.shapes: dict = {}
        self._progress = progress
        self.example_inputs = example_inputs
        self.stale = False                # a rewrite made nodes whose shapes and values are not captured
        self._capture(example_inputs)

    # -- the manager's interface -----------------------------------------------------------

    def progress(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    def site_name(self, match) -> str:
        return f"{self.prefix}.{match.name}" if self.prefix else match.name

    def view(self):
        if self.stale:
            # a later rule may read a node a rewrite created (a permute or a LayerNorm fold_norm
            # made, feeding a conv): without its shape and captured value that site is lost
            self._capture(self.example_inputs)
            self.stale = False
        self.touched = set()
        return self.builder.build(self.shapes)

    def live(self, match) -> bool:
        return not any(node in self.touched for op in match.ops for node in op.nodes)

    def value(self, v):
        return self.values.get(v)

    def outputs(self, samples, convs: list) -> list:
        """The graph's outputs (a flat list of tensors per sample) with the conv each (match, ConvSpec)
        of `convs` names computed by that spec instead (in the activation's dtype)."""
        tails = {match.ops[-1].nodes[-1]: (match.input, conv) for match, conv in convs}

        class Override(fx.Interpreter):
            def run_node(self, node):
                if node in tails:
                    value, conv = tails[node]
                    x = self.env[value]
                    return conv.to(x.dtype).apply(x)
                return super().run_node(node)

        with torch.no_grad():
            return [tree_flatten(Override(self.gm).run(*tree_flatten(sample)[0]))[0] for sample in samples]

    def stream(self, values, samples, each) -> None:
        """Run the graph as it is now on each sample (a tuple of inputs), calling each(node, activation)
        for every node in `values`."""
        wanted = set(values)

        class Streamer(fx.Interpreter):
            def run_node(self, node):
                out = super().run_node(node)
                if node in wanted:
                    each(node, out)
                return out

        with torch.no_grad():
            for sample in samples:
                Streamer(self.gm).run(*tree_flatten(sample)[0])

    def lower(self, match, plan) -> list:
        return lower(match, plan)

    def original(self, match):
        nodes, keys = match.nodes_in(self.gm.graph.nodes), match.runtime_inputs
        return lambda *xs: run_nodes(self.gm, nodes, dict(zip(keys, xs)))

    def reference(self, match):
        nodes, keys = match.nodes_in(self.gm.graph.nodes), match.runtime_inputs
        return lambda *xs: run_nodes(self.gm, nodes, dict(zip(keys, xs)), torch.float64)

    def candidate(self, lowered: list, match):
        def run(x, *extras):
            for module in lowered[:-1]:
                x = module(x)
            return lowered[-1](x, *extras)
        return run

    @property
    def runtime(self) -> str:
        from importlib.metadata import PackageNotFoundError, version
        try:
            triton = f" triton {version('triton')}"
        except PackageNotFoundError:
            triton = ""
        return f"torch {torch.__version__}{triton}"

    def timed(self, match, lowered: list):
        """The site's original nodes and its replacement, and random inputs of the full shapes that
        reach the site (channels_last on CUDA, where the fused kernel keeps activations NHWC)."""
        crops = [self.values[v] for v in match.runtime_inputs]
        inputs = [torch.randn(self.shapes[v], dtype=c.dtype, device=c.device) for v, c in
                  zip(match.runtime_inputs, crops)]
        inputs = [x.contiguous(memory_format=torch.channels_last) if x.is_cuda and x.dim() == 4 else x for x in inputs]
        return self.original(match), self.candidate(lowered, match), inputs

    def discard(self, lowered) -> None:
        pass                               # nothing entered the graph

    def commit(self, match, plan, lowered: list) -> None:
        if getattr(lowered[0], "branches", None) is not None:
            return self._commit_branches(match, plan, lowered[0])
        graph = self.gm.graph
        nodes = match.nodes_in(graph.nodes)
        tail = match.ops[-1].nodes[-1]
        new, arg = [], match.input
        with graph.inserting_before(tail):
            for _ in lowered[:-1]:
                arg = graph.create_node("call_module", "_pending", (arg,))
                new.append(arg)
        tail.op, tail.target, tail.kwargs = "call_module", "_pending", {}
        tail.args = (arg,) + tuple(match.runtime_inputs[1:])
        new.append(tail)
        self._stand_in(nodes, plan.stand_ins, new, match.input)
        _erase_replaced(graph, nodes, tail)
        roles = fx_roles(plan.after, match.layout, match.name)
        for node, module, role in zip(new, lowered, roles):
            base = match.name if len(lowered) == 1 else f"{match.name}_{role}"
            node.target = self._claim(base)
            self.gm.add_submodule(node.target, module)
            self.builder.origin[node] = plan.kind
        self.builder.forget(tail)
        self.touched.update(nodes)
        self.stale |= len(new) > 1

    def _commit_branches(self, match, plan, module) -> None:
        """A lowered module that reads several inputs (a Concat's ConcatConvs): one module per
        branch, each on its branch's input and named after the op it replaces; the site's tail
        becomes module.join (aten op, extra args) of their outputs."""
        graph = self.gm.graph
        nodes = match.nodes_in(graph.nodes)
        tail = match.ops[-1].nodes[-1]
        inputs = match.runtime_inputs
        with graph.inserting_before(tail):
            branches = [graph.create_node("call_module", "_pending", (x,)) for x in inputs]
        target, *args = module.join
        tail.op, tail.target = "call_function", target
        tail.args, tail.kwargs = (branches, *args), {}
        _erase_replaced(graph, nodes, tail)
        for node, branch, op in zip(branches, module.branches, match.ops):
            node.target = self._claim(op.name)
            self.gm.add_submodule(node.target, branch)
            self.builder.origin[node] = plan.kind
        self.builder.origin[tail] = plan.kind
        self.builder.forget(tail)
        self.touched.update(nodes)
        self.stale = True

    def finish(self) -> None:
        """Lint, drop what no node reads any more, put activations back in place, regenerate the code."""
        graph = self.gm.graph
        graph.eliminate_dead_code()
        restore_inplace(self.gm)
        graph.lint()
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()
        self.values.clear()

    # -- helpers ---------------------------------------------------------------------------

    def _capture(self, example_inputs: tuple) -> None:
        """Run the graph once on the example inputs, recording every node's shape and a window of the
        activations the rules' site checks read."""
        self.values.clear()
        self.shapes.clear()
        wanted, last = set(), set()
        kinds = {"conv", "pad", "affine", "norm", "slice"} | {k for rule in registered().values() for k in rule.captures}
        for op in self.builder.build({}).ops:
            if op.kind in kinds and op.inputs:
                wanted.add(op.inputs[0])
                if op.layout == "nhwc":
                    last.add(op.inputs[0])
            elif op.kind in ("add", "sub"):
                wanted.update(op.inputs)
        values, shapes = self.values, self.shapes

        class Recorder(fx.Interpreter):
            def run_node(self, node):
                out = super().run_node(node)
                if isinstance(out, torch.Tensor):
                    shapes[node] = tuple(out.shape)
                    if node in wanted and out.dim() in (2, 3, 4):
                        values[node] = capture_window(out, node in last).detach().clone()
                return out

        with torch.no_grad():
            Recorder(self.gm).run(*tree_flatten(example_inputs)[0])

    def _stand_in(self, nodes: list, stand_ins: dict, new: list, site_input) -> None:
        """Point the shape-only readers (reshape_as, sym_size) of each value the site removes at the
        new value of the same shape, moving a reader (and what reads it) after that value."""
        chosen = set(nodes)
        for value, index in stand_ins.items():
            stand = site_input if index < 0 else new[index]
            for user in list(value.users):
                if user not in chosen:
                    user.replace_input_with(value, stand)
                    _move_after(self.gm.graph, stand, user)
                    self.builder.forget(user)

    def _claim(self, base: str) -> str:
        """`base`, or `base_2`, `base_3`...: the first module path no node refers to; a module
        left there by the rewritten chain is removed first."""
        path, i = base, 1
        while self._referenced(path):
            i += 1
            path = f"{base}_{i}"
        owner, _, attr = path.rpartition(".")
        try:
            parent = self.gm.get_submodule(owner) if owner else self.gm
        except AttributeError:
            return path
        if hasattr(parent, attr):
            delattr(parent, attr)       # a module, parameter or buffer only the old chain read
        return path

    def _referenced(self, path: str) -> bool:
        return any(node.op in ("get_attr", "call_module") and isinstance(node.target, str)
                   and (node.target == path or node.target.startswith(path + "."))
                   for node in self.gm.graph.nodes)


def _move_after(graph: fx.Graph, anchor: fx.Node, node: fx.Node) -> None:
    """Move `node` just after `anchor` if it comes before it, and its readers after it likewise."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    if order[node] > order[anchor]:
        return
    anchor.append(node)
    for user in list(node.users):
        _move_after(graph, node, user)


def _erase_replaced(graph, nodes: list, tail) -> None:
    """Erase a site's old nodes (all but `tail`, which now holds the replacement's output) and the
    weight reads nothing uses any more."""
    for node in reversed(nodes):
        if node is not tail:
            graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
