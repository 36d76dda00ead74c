"""An exported ATen graph (torch.fx) as the neutral view (rewrite/view.py).

Every call is read at the op level, so any wrapper that produced it is fine:

    aten.conv2d (weight and bias from get_attr)   → conv     (name: the weight's module path)
    call_module of an nn.Conv2d (a lowered conv)   → conv
    aten.linear over a 4-d (channels-last) tensor or 3-d tokens [B, N, C] → conv, 1x1, layout "nhwc"
    aten.linear over a 2-d [N, C] tensor, nn.Linear → conv, 1x1, layout "nc"
    aten.conv_transpose2d (weight and bias from get_attr) → deconv
    aten.batch_norm, training=False                → affine
    aten.mul/add/sub/div by a per-channel value computed from parameters only (layer scale) → affine
    aten.relu/relu6/hardtanh(0,6)/silu/hardswish/hardsigmoid/sigmoid/tanh/gelu/... → act
    aten.pad / constant_pad_nd with constant zero  → pad
    aten.mean over (H, W) keepdim / adaptive_avg_pool2d(1) → mean
    aten.mul / aten.add of two activations         → mul / add
    aten.mul/add/sub/div of a 3-d/4-d activation by a [C] constant over its last axis → affine, layout "nhwc"
    aten.layer_norm over the last axis             → norm (LayerNorm, its affine over that axis)
    aten.transpose (two axes swapped)              → layout (Permute), as aten.permute
    aten.permute                                   → layout (Permute)
    aten.flatten                                   → reshape (Flatten)
    aten.cat                                       → concat (its dim, non-negative)
    aten.split_with_sizes / split / chunk / tensor_split of the channels (dim 1) and the getitems
        reading it → one slice per getitem (its channel range; nodes: the split and the getitem;
        the split itself has no op of its own)
    aten.slice of the channels, step 1 (x[:, a:b])  → slice
    aten.reshape_as / view_as (x, other), aten.sym_size (x) → other, reading `other` / x for its
                                                     shape only (Op.shape_inputs)
    anything else                                  → other, labelled with the op's name

No rewrite edits a parameter: a rewritten site gets new modules with new tensors, so a
parameter that other ops also read (tied weights, a functional call reusing a module's weight,
a module called twice) keeps its value for them.
"""
from __future__ import annotations

import itertools
import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.operator_schemas import normalize_function

from passes.records.activation import ActivationModule
from passes.records.affine import AffineModule
from rewrite.composite_acts import ScalarOp, hard_composite
from rewrite.ir import ACTIVATIONS, Affine, ConvSpec, Flatten, LayerNorm, Permute, TransposedConv, ZeroPad
from rewrite.view import Op, View

from .graph import constant_value, fetch_attr, op_name, owner_path
from .lower import UnitAffineLayerNorm, conv_spec_of_module

aten = torch.ops.aten

ACTIVATION_OPS = ("relu", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh")  # op name = activation name
NATIVE_ACTS = {name: 1 for name in ACTIVATIONS}   # every activation is one module in FX (ActivationModule)
RELU6_TARGETS = (aten.hardtanh.default, aten.clamp.default, aten.clip.default)   # with bounds (0, 6)
RELU6 = getattr(aten, "relu6", None)        # an aten op of its own in newer torch


class FxViewBuilder:
    """Builds Views of one GraphModule; caches lifted ops per node (a node's op never changes
    while it lives: a rewrite makes new nodes or retargets the chain's tail, which is dropped
    from the cache)."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.cache: dict = {}
        self.origin: dict = {}      # node → the pass that created it
        self.constants: dict = {}   # node → its value when it depends on parameters only
        self.parts: dict = {}       # split node → its parts' channel ranges, or None (not a split of dim 1)
        self.slices: dict = {}      # slice node → _channel_slice(node)

    def forget(self, node: fx.Node) -> None:
        self.cache.pop(node, None)

    def build(self, shapes: dict) -> View:
        ops, outputs, claimed = [], set(), set()
        for node in self.gm.graph.nodes:
            if node.op == "output":
                fx.node.map_arg(node.args, lambda n: outputs.add(n))
                continue
            if node in claimed or node.op not in ("call_function", "call_module") or \
                    self._split_parts(node) is not None or self._sliced_again(node):
                continue          # a split of the channels (its getitems are its ops), a no-op slice before one
            op = self._composite(node)
            if op is not None:
                claimed.update(op.nodes)
            else:
                op = self.cache.get(node)
                if op is None:
                    op = self.cache[node] = self._lift(node)
            op.origin = self.origin.get(node)
            ops.append(op)
        return View(ops, outputs, shapes, NATIVE_ACTS)

    def _composite(self, node: fx.Node) -> Op | None:
        """An activation written out over several nodes from this one (rewrite.composite_acts),
        found afresh on each view: it spans nodes that a rewrite may change one at a time."""
        if node.target not in (aten.add.Tensor, aten.add.Scalar):
            return None
        found = hard_composite(_FxElementwise(self), node)
        if found is None:
            return None
        return Op("act", (found.input,), output=found.output, name=node.name, label="add", nodes=found.nodes,
                  act=found.act)

    # -- lifting ---------------------------------------------------------------------------

    def _constant(self, arg):
        """(tensor or None, reason) for a weight argument."""
        if arg is None:
            return None, None
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            value = fetch_attr(self.gm, arg.target)
            if isinstance(value, torch.Tensor):
                return value.detach(), None
        return None, "its weight is computed at run time (not a constant parameter)"

    def _lift(self, node: fx.Node) -> Op:
        inputs = tuple(a for a in node.all_input_nodes if a.op != "get_attr")
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            base = dict(inputs=inputs, output=node, name=str(node.target), label=type(module).__name__,
                        nodes=(node,))
            lift = _module_lifter(type(module))
            op = lift(module, inputs, base) if lift is not None else None
            return op if op is not None else Op("other", **base)
        if node.target is operator.getitem:
            return self._part(node, inputs)
        name = op_name(node.target)
        kwargs = self._arguments(node)
        lift = getattr(self, f"_lift_{name}", None) if kwargs is not None else None
        base = dict(output=node, name=node.name, label=name, nodes=(node,))
        if kwargs is not None and name in ACTIVATION_OPS:
            return self._activation(kwargs, base, name)
        op = lift(node, kwargs, base) if lift is not None else None
        return op if op is not None else Op("other", inputs, **base)

    @staticmethod
    def _arguments(node: fx.Node) -> dict | None:
        if not isinstance(node.target, torch._ops.OpOverload):
            return None
        try:
            bound = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
        except Exception:  # noqa: BLE001 - an op whose schema cannot bind is just "other"
            return None
        return bound.kwargs if bound is not None else None

    def _weight_and_bias(self, node, kw, base) -> tuple:
        """(weight, bias, why they are not constants or None) of a conv or transposed conv; the op is
        named after its weight's module."""
        weight, reason = self._constant(kw["weight"])
        bias, bias_reason = self._constant(kw.get("bias"))
        base["name"] = owner_path(kw["weight"]) if isinstance(kw["weight"], fx.Node) else node.name
        return weight, bias, reason or bias_reason

    def _lift_conv2d(self, node, kw, base):
        weight, bias, reason = self._weight_and_bias(node, kw, base)
        if reason is None and not weight.dtype.is_floating_point:
            reason = f"non-float weight dtype {weight.dtype}"
        if reason is None and weight.dim() != 4:
            reason = f"a {weight.dim() - 2}-d conv (only 2-d convs are rewritten)"
        if reason:
            return Op("conv", (kw["input"],), **base, reason=reason)
        padding = _conv_padding(kw["padding"], weight.shape[2:], kw["dilation"])
        if isinstance(padding, str):
            return Op("conv", (kw["input"],), **base, reason=padding)
        spec = ConvSpec(weight, bias, tuple(kw["stride"]), padding, tuple(kw["dilation"]), int(kw["groups"]))
        return Op("conv", (kw["input"],), **base, conv=spec)

    def _lift_conv_transpose2d(self, node, kw, base):
        """A transposed conv with constant weights (aten.conv_transpose2d.input)."""
        weight, bias, reason = self._weight_and_bias(node, kw, base)
        if reason is None and (not weight.dtype.is_floating_point or weight.dim() != 4):
            reason = f"a {weight.dim() - 2}-d or non-float ({weight.dtype}) transposed conv"
        pair = lambda v: tuple(v) * (2 if len(v) == 1 else 1)    # noqa: E731
        values = {k: pair(kw[k]) for k in ("stride", "padding", "output_padding", "dilation")} if reason is None else {}
        if values and not all(isinstance(v, int) for vs in values.values() for v in vs):
            reason = "the transposed conv's geometry depends on the input size (dynamic shape)"
        if reason:
            return Op("deconv", (kw["input"],), **base, reason=reason)
        (ph, pw) = values["padding"]
        spec = TransposedConv(weight, bias, values["stride"], (ph, ph, pw, pw), values["output_padding"],
                              values["dilation"], int(kw["groups"]))
        return Op("deconv", (kw["input"],), **base, deconv=spec)

    def _lift_linear(self, node, kw, base):
        x = kw["input"]
        rank = _rank(x)
        if rank not in (2, 3, 4):
            return None
        layout = "nc" if rank == 2 else "nhwc"
        weight, reason = self._constant(kw["weight"])
        bias, bias_reason = self._constant(kw.get("bias"))
        base["name"] = owner_path(kw["weight"]) if isinstance(kw["weight"], fx.Node) else node.name
        if reason is None and not weight.dtype.is_floating_point:
            reason = f"non-float weight dtype {weight.dtype}"
        if reason or bias_reason:
            return Op("conv", (x,), **base, reason=reason or bias_reason, layout=layout)
        return Op("conv", (x,), **base, conv=ConvSpec(weight[:, :, None, None], bias), layout=layout)

    def _lift_batch_norm(self, node, kw, base):
        x = kw["input"]
        if kw["training"]:
            return Op("affine", (x,), **base, reason="BatchNorm in training mode (normalizes with batch statistics)")
        params = [self._constant(kw[k]) for k in ("weight", "bias", "running_mean", "running_var")]
        reason = next((r for _, r in params if r), None)
        (gamma, _), (beta, _), (mean, _), (var, _) = params
        if reason is None and (mean is None or var is None):
            reason = "BatchNorm without running statistics (normalizes with batch statistics)"
        if reason:
            return Op("affine", (x,), **base, reason=reason)
        return Op("affine", (x,), **base, affine=Affine.from_batchnorm(mean, var, float(kw["eps"]), gamma, beta))

    def _activation(self, kw, base, name):
        return Op("act", (kw["input"],), **base, act=name)

    def _lift_hardtanh(self, node, kw, base):
        if (kw["min_val"], kw["max_val"]) == (0, 6):
            return self._activation(kw, base, "relu6")
        return None

    def _lift_gelu(self, node, kw, base):
        return self._activation(kw, base, "gelu" if kw.get("approximate", "none") == "none" else "gelu_tanh")

    def _lift_leaky_relu(self, node, kw, base):
        return self._activation(kw, base, "leaky_relu") if math.isclose(kw["negative_slope"], 0.01) else None

    def _lift_elu(self, node, kw, base):
        plain = kw.get("alpha", 1) == 1 and kw.get("scale", 1) == 1 and kw.get("input_scale", 1) == 1
        return self._activation(kw, base, "elu") if plain else None

    def _lift_pad(self, node, kw, base):
        x, pad = kw["input"], kw["pad"]
        if kw.get("mode", "constant") != "constant":
            return Op("pad", (x,), **base, reason=f"{kw['mode']} padding is not a zero pad")
        return self._zero_pad(x, pad, kw.get("value"), base)

    def _lift_constant_pad_nd(self, node, kw, base):
        return self._zero_pad(kw["input"], kw["pad"], kw.get("value", 0), base)

    @staticmethod
    def _zero_pad(x, pad, value, base):
        if value not in (None, 0, 0.0):
            return Op("pad", (x,), **base, reason=f"pad with the constant {value} (not zero)")
        if len(pad) != 4 or not all(isinstance(p, int) for p in pad):
            return Op("pad", (x,), **base, reason="the pad widths depend on the input size (dynamic shape) "
                      "or pad more than H and W")
        if any(p < 0 for p in pad):
            return Op("pad", (x,), **base, reason=f"negative pad {list(pad)} crops the input")
        left, right, top, bottom = pad
        return Op("pad", (x,), **base, pad=ZeroPad((top, bottom, left, right)))

    def _lift_mean(self, node, kw, base):
        dims = kw.get("dim")
        if kw.get("keepdim") and dims is not None and sorted(d % 4 for d in dims) == [2, 3] and \
                kw.get("dtype") is None and _rank(kw["input"]) == 4:
            return Op("mean", (kw["input"],), **base)
        return None

    def _lift_adaptive_avg_pool2d(self, node, kw, base):
        if list(kw["output_size"]) == [1, 1] and _rank(kw["input"]) == 4:
            return Op("mean", (kw["input"],), **base)
        return None

    def _lift_mul(self, node, kw, base):
        return self._binary(node, kw, base, "mul")

    def _lift_add(self, node, kw, base):
        return self._binary(node, kw, base, "add") if kw.get("alpha", 1) == 1 else None

    def _lift_sub(self, node, kw, base):
        return self._binary(node, kw, base, "sub") if kw.get("alpha", 1) == 1 else None

    def _lift_div(self, node, kw, base):
        return self._binary(node, kw, base, "div") if kw.get("rounding_mode") is None else None

    def _binary(self, node, kw, base, what: str):
        """Two activations: mul / add. One activation and a per-channel constant (layer scale,
        a lone shift): affine y = s·x + t."""
        a, b = kw.get("input"), kw.get("other")
        const_a, const_b = self._constant_expression(a), self._constant_expression(b)
        if const_a is None and const_b is None:
            if what in ("mul", "add", "sub") and _is_node(a) and _is_node(b):
                return Op(what, (a, b), **base)
            return None
        if const_a is not None and const_b is not None:
            return None
        x, c = (b, const_a) if const_a is not None else (a, const_b)
        if const_a is not None and what in ("sub", "div"):
            return None              # c − x, c / x: not affine in x per channel
        if not x.meta.get("val", torch.empty(0)).is_floating_point():
            return None
        vector, axis = _per_channel(c, _channels(x)), 1
        if vector is None:
            vector, axis = _last_axis(c, x), -1
        if vector is None:
            return None
        one, zero = torch.ones_like(vector), torch.zeros_like(vector)
        scale, shift = {"mul": (vector, zero), "add": (one, vector), "sub": (one, -vector),
                        "div": (1 / vector, zero)}[what]
        return Op("affine", (x,), **base, affine=Affine(scale, shift, axis), layout="nchw" if axis == 1 else "nhwc")

    def _constant_expression(self, arg):
        if not isinstance(arg, fx.Node):
            return torch.tensor(float(arg), dtype=torch.float64) if isinstance(arg, (int, float)) else None
        if arg not in self.constants:
            self.constants[arg] = constant_value(self.gm, arg)
        return self.constants[arg]

    def _lift_permute(self, node, kw, base):
        rank = _rank(kw["input"])
        perm = tuple(int(d) % rank for d in kw["dims"]) if rank else None
        return Op("layout", (kw["input"],), **base, shape_op=Permute(perm) if perm else None)

    def _lift_transpose(self, node, kw, base):
        """transpose(dim0, dim1): the permutation swapping two axes (ONNX writes it as Transpose)."""
        rank = _rank(kw["input"])
        if not rank or not isinstance(kw.get("dim0"), int) or not isinstance(kw.get("dim1"), int):
            return None
        perm = list(range(rank))
        a, b = kw["dim0"] % rank, kw["dim1"] % rank
        perm[a], perm[b] = perm[b], perm[a]
        return Op("layout", (kw["input"],), **base, shape_op=Permute(tuple(perm)))

    def _lift_flatten(self, node, kw, base):
        rank = _rank(kw["input"])
        if not rank:
            return None
        start, end = int(kw.get("start_dim", 0)) % rank, int(kw.get("end_dim", -1)) % rank
        return Op("reshape", (kw["input"],), **base, shape_op=Flatten(start, end))

    def _lift_cat(self, node, kw, base):
        tensors = list(kw["tensors"])
        rank = _rank(node) or (_rank(tensors[0]) if tensors else None)   # a rewrite's new inputs have no meta
        if not rank or not all(_is_node(t) for t in tensors):
            return None
        return Op("concat", tuple(tensors), **base, axis=int(kw.get("dim", 0)) % rank)

    def _split_parts(self, node: fx.Node) -> list | None:
        """The (start, stop) channel ranges of the parts of a split of dim 1 whose parts are all read
        through getitems, or None."""
        if node not in self.parts:
            self.parts[node] = None
            name = op_name(node.target) if node.op == "call_function" else None
            kw = self._arguments(node) if name in SPLITS else None
            channels = _channels(kw["input"]) if kw is not None else None
            if kw is not None and channels is None and name.endswith("with_sizes") and kw["dim"] == 1:
                channels = sum(kw["split_sizes"])           # x made by a rewrite (no meta): its sizes say
            if kw is not None and channels is not None and int(kw.get("dim", 0)) % 4 == 1 and \
                    all(user.target is operator.getitem for user in node.users):
                sizes = _split_sizes(name, kw, channels)
                if sizes is not None:
                    bounds = [0] + list(itertools.accumulate(sizes))
                    self.parts[node] = list(zip(bounds[:-1], bounds[1:]))
        return self.parts[node]

    def _sliced_again(self, node: fx.Node) -> bool:
        """A whole-axis slice whose one reader is a channel slice that takes it in."""
        users = list(node.users)
        found = self._channel_slice(users[0]) if len(users) == 1 else None
        return found is not None and found[2] is node

    def _part(self, node: fx.Node, inputs: tuple) -> Op:
        """getitem(split, i): the slice op of part i (the split's node with it), else other."""
        split, index = node.args
        ranges = self._split_parts(split) if isinstance(split, fx.Node) else None
        base = dict(output=node, name=node.name, nodes=(node,))
        if ranges is None or not isinstance(index, int) or not -len(ranges) <= index < len(ranges):
            return Op("other", inputs, **base, label="getitem")
        x = split.all_input_nodes[0]
        return Op("slice", (x,), **{**base, "nodes": (split, node)}, label=op_name(split.target),
                  channels=ranges[index])

    def _lift_slice(self, node, kw, base):
        found = self._channel_slice(node)
        if found is None:
            return None
        x, channels, inner = found
        return Op("slice", (x,), **{**base, "nodes": (inner, node) if inner is not None else (node,)},
                  channels=channels)

    def _channel_slice(self, node: fx.Node) -> tuple | None:
        """(x, (start, stop), the whole-axis slice looked through or None) of an aten.slice of the
        channels, step 1, constant bounds; x[:, a:b] exports as slice(slice(x, 0, 0, max), 1, a, b),
        the first a no-op that goes with the second (its only reader)."""
        if node not in self.slices:
            self.slices[node] = None
            kw = self._arguments(node) if node.op == "call_function" and op_name(node.target) == "slice" else None
            x = kw["input"] if kw is not None else None
            channels = _channels(x)
            bounds = (kw or {}).get("start"), (kw or {}).get("end")
            if channels is not None and int(kw.get("dim", 0)) % 4 == 1 and kw.get("step", 1) == 1 and \
                    all(isinstance(v, int) or v is None for v in bounds):
                start, stop, _ = slice(*bounds).indices(channels)
                inner = x if self._whole_axis(x) else None
                self.slices[node] = (inner.args[0] if inner is not None else x, (start, max(start, stop)), inner)
        return self.slices[node]

    def _whole_axis(self, node: fx.Node) -> bool:
        """An aten.slice of all of one axis other than the channels, read by one op only."""
        kw = self._arguments(node) if node.op == "call_function" and op_name(node.target) == "slice" and \
            len(node.users) == 1 else None
        value = node.meta.get("val") if kw is not None else None
        if value is None or int(kw.get("dim", 0)) % value.dim() == 1 or kw.get("step", 1) != 1 or \
                kw.get("start") not in (None, 0) or not isinstance(kw.get("end"), (int, type(None))):
            return False
        size = value.shape[int(kw.get("dim", 0))]
        return kw.get("end") is None or kw["end"] >= 2 ** 62 or (isinstance(size, int) and kw["end"] >= size)

    def _lift_reshape_as(self, node, kw, base):
        return Op("other", (kw["input"],), **base, shape_inputs=(kw["other"],))

    _lift_view_as = _lift_reshape_as

    def _lift_sym_size(self, node, kw, base):
        return Op("other", (), **base, shape_inputs=(kw["input"],))

    def _lift_layer_norm(self, node, kw, base):
        x = kw["input"]
        if len(kw["normalized_shape"]) != 1:
            return None
        (weight, reason), (bias, bias_reason) = self._constant(kw.get("weight")), self._constant(kw.get("bias"))
        if isinstance(kw.get("weight"), fx.Node):
            base["name"] = owner_path(kw["weight"])
        if reason or bias_reason:
            return Op("norm", (x,), **base, reason=reason or bias_reason, layout="nhwc")
        affine = None
        if weight is not None or bias is not None:
            c = int(kw["normalized_shape"][0])
            affine = Affine(torch.ones(c, dtype=torch.float64) if weight is None else weight.double(),
                            torch.zeros(c, dtype=torch.float64) if bias is None else bias.double(), -1)
            if bool((affine.scale == 1).all()) and bool((affine.shift == 0).all()):
                affine = None       # γ = 1, β = 0 (a LayerNorm fold_norm lowered, re-captured): nothing to fold
        return Op("norm", (x,), **base, norm=LayerNorm(float(kw.get("eps", 1e-5)), affine), layout="nhwc")



SPLITS = ("split_with_sizes", "split", "unsafe_split", "unsafe_split_with_sizes", "chunk", "tensor_split")


# -- how the view recognises a call_module node, by module type (the modules a lowering makes) --

MODULE_LIFTERS: dict[type, tuple] = {}
"""module type → (lifter, whether its subclasses are lifted by it too); lifter(module, inputs,
base Op fields) → Op or None (an "other" op). Declared with @lifts_module beside each lifter."""


class _FxElementwise:
    """rewrite.composite_acts.ElementwiseGraph over an exported graph's nodes: values are fx.Nodes."""

    KINDS = {"add": "add", "mul": "mul", "div": "div"}

    def __init__(self, builder: FxViewBuilder):
        self.builder = builder

    def scalar_op(self, node) -> ScalarOp | None:
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        kind = self.KINDS.get(op_name(node.target))
        kw = self.builder._arguments(node) if kind else None
        if kw is None or kw.get("alpha", 1) != 1 or kw.get("rounding_mode") is not None:
            return None
        for x, c in ((kw.get("input"), kw.get("other")), (kw.get("other"), kw.get("input"))):
            if kind == "div" and x is not kw.get("input"):
                break                # c / x is not x ∘ c
            if not _is_node(x) or self.builder._constant_expression(x) is not None:
                continue
            dtype = getattr(x.meta.get("val"), "dtype", None)
            value = self.builder._constant_expression(c)
            if dtype is None or not dtype.is_floating_point or value is None or value.numel() != 1 or \
                    not value.is_floating_point():
                continue
            # a Python number or 0-d tensor takes x's dtype; a [1] tensor of another dtype promotes the result
            if isinstance(c, fx.Node) and (value.dim() > 1 or (value.dim() == 1 and value.dtype != dtype)):
                continue
            return ScalarOp(kind, x, float(value.reshape(())), torch.finfo(dtype).eps)
        return None

    def sole_reader(self, value):
        users = list(value.users)
        return users[0] if len(users) == 1 and users[0].op != "output" else None

    def output(self, node):
        return node

    def is_relu6(self, node, value) -> bool:
        if node.op != "call_function" or (node.target not in RELU6_TARGETS and
                                          (RELU6 is None or node.target is not RELU6.default)):
            return False
        kw = self.builder._arguments(node)
        if kw is None or kw.get("input") is not value:
            return False
        if node.target not in RELU6_TARGETS:
            return True
        bounds = (kw.get("min_val"), kw.get("max_val")) if node.target is aten.hardtanh.default else \
            (kw.get("min"), kw.get("max"))
        return bounds == (0, 6)

    def product_of(self, node) -> tuple | None:
        if node.op != "call_function" or node.target is not aten.mul.Tensor:
            return None
        a, b = node.args[:2] if len(node.args) >= 2 else (None, None)
        return (a, b) if _is_node(a) and _is_node(b) else None

    def unchanged(self, value, depth: int = 4) -> bool:
        """No reader of `value`, or of a view of it, writes in place (capture functionalizes most
        in-place ops, but not a write through a view)."""
        for user in value.users:
            if user.op != "call_function":
                continue
            target = user.target
            if isinstance(target, torch._ops.OpOverload):
                if target._schema.is_mutable:
                    return False
                if not any(r.alias_info is not None for r in target._schema.returns):
                    continue
            if depth == 0 or not self.unchanged(user, depth - 1):    # a view (or an op we cannot read)
                return False
        return True


def lifts_module(*types: type, subclasses: bool = False):
    def register(fn):
        for t in types:
            MODULE_LIFTERS[t] = (fn, subclasses)
        return fn
    return register


def _module_lifter(cls: type):
    entry = MODULE_LIFTERS.get(cls)
    if entry is not None:
        return entry[0]
    return next((MODULE_LIFTERS[c][0] for c in cls.__mro__[1:] if c in MODULE_LIFTERS and MODULE_LIFTERS[c][1]), None)


@lifts_module(nn.Conv2d, subclasses=True)
def _lift_conv_module(module, inputs, base):
    spec = conv_spec_of_module(module)
    return Op("conv", **base, conv=spec if isinstance(spec, ConvSpec) else None,
              reason=spec if isinstance(spec, str) else None)


@lifts_module(AffineModule)
def _lift_affine_module(module, inputs, base):
    """A shift a fold left in front of a padded conv."""
    return Op("affine", **base, affine=module.affine) if len(inputs) == 1 else None


@lifts_module(ActivationModule)
def _lift_activation_module(module, inputs, base):
    """An activation a rule lowered (native_act's hardswish from its written-out form)."""
    return Op("act", **base, act=module.name) if len(inputs) == 1 else None


@lifts_module(nn.Linear)
def _lift_linear_module(module, inputs, base):
    """A lowered linear, over [N, C] (layout "nc") or the last axis of a 3-d or 4-d tensor ("nhwc")."""
    if len(inputs) != 1 or _rank(inputs[0]) not in (2, 3, 4):
        return None
    spec = ConvSpec(module.weight.detach()[:, :, None, None], None if module.bias is None else module.bias.detach())
    return Op("conv", **base, conv=spec, layout="nc" if _rank(inputs[0]) == 2 else "nhwc")


@lifts_module(nn.LayerNorm, UnitAffineLayerNorm)
def _lift_layer_norm_module(module, inputs, base):
    """A LayerNorm fold_norm lowered (no affine): named as the op it was."""
    if len(module.normalized_shape) != 1 or module.elementwise_affine:
        return None
    base["label"] = "layer_norm"
    return Op("norm", **base, norm=LayerNorm(float(module.eps), None), layout="nhwc")


def _split_sizes(name: str, kw: dict, channels: int) -> list | None:
    """The part sizes of a split of `channels` channels, as torch sizes them, or None."""
    if name in ("split_with_sizes", "unsafe_split_with_sizes"):
        sizes = list(kw["split_sizes"])
    elif name in ("split", "unsafe_split") and isinstance(kw.get("split_size"), int) and kw["split_size"] > 0:
        size = kw["split_size"]
        sizes = [min(size, channels - start) for start in range(0, channels, size)]
    elif name == "chunk" and kw["chunks"] > 0:
        size = -(-channels // kw["chunks"])
        sizes = [min(size, channels - start) for start in range(0, channels, size)]
    elif name == "tensor_split" and isinstance(kw.get("sections"), int) and kw["sections"] > 0:
        n = kw["sections"]
        sizes = [channels // n + (i < channels % n) for i in range(n)]
    elif name == "tensor_split" and kw.get("indices") is not None and all(int(i) >= 0 for i in kw["indices"]):
        cuts = [min(int(i), channels) for i in kw["indices"]]
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [channels])]
    else:
        return None
    return sizes if all(isinstance(n, int) and n >= 0 for n in sizes) and sum(sizes) == channels else None


def _is_node(arg) -> bool:
    return isinstance(arg, fx.Node) and arg.op != "get_attr"


def _channels(arg) -> int | None:
    value = arg.meta.get("val") if isinstance(arg, fx.Node) else None
    return int(value.shape[1]) if isinstance(value, torch.Tensor) and value.dim() == 4 and \
        isinstance(value.shape[1], int) else None


def _per_channel(c: torch.Tensor, channels: int | None) -> torch.Tensor | None:
    """c as a float64 [C] vector when it broadcasts over NCHW as a per-channel value, else None."""
    if channels is None or not c.is_floating_point() and c.dim() > 0:
        return None
    if c.numel() == 1 and c.dim() <= 4:
        return c.double().reshape(1).expand(channels).clone()
    if c.numel() == channels and c.dim() >= 3 and c.shape[-3:] == (channels, 1, 1):
        return c.double().reshape(channels)
    return None


def _last_axis(c: torch.Tensor, x) -> torch.Tensor | None:
    """c as a float64 [C] vector when it broadcasts over the last axis of a 3-d / 4-d x (a layer
    scale over channels-last activations or tokens), else None."""
    value = x.meta.get("val") if isinstance(x, fx.Node) else None
    if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4) or not isinstance(value.shape[-1], int) \
            or not c.is_floating_point():
        return None
    channels = int(value.shape[-1])
    if c.dim() >= 1 and c.dim() <= value.dim() and c.shape[-1] == channels and c.numel() == channels:
        return c.double().reshape(channels)
    return None


def _rank(arg) -> int | None:
    value = arg.meta.get("val") if isinstance(arg, fx.Node) else None
    return value.dim() if isinstance(value, torch.Tensor) else None


def _conv_padding(padding, kernel, dilation) -> tuple | str:
    """(top, bottom, left, right) for conv2d's padding: two ints, or "valid" / "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        sides = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            sides += [total // 2, total - total // 2]
        return tuple(sides)
    if not all(isinstance(p, int) for p in padding):
        return "the conv padding depends on the input size (dynamic shape)"
    ph, pw = (padding * 2)[:2] if len(padding) == 1 else padding
    return (ph, ph, pw, pw)
