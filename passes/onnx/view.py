"""An onnx-graphsurgeon graph as the neutral view (rewrite/view.py). Values are tensor names.

    Conv (constant float weights)                 → conv     (name: the node's; else its reason:
    ConvInteger, QLinearConv                         weights computed at run time, quantized...)
    BatchNormalization (inference)                → affine   (else its reason: training mode...)
    Mul/Add/Sub/Div of an activation by a per-channel constant → affine
    Relu, Clip(0,6), Sigmoid·Mul, HardSwish, the Erf GELU, x·Clip(x + 3, 0, 6)/6… → act (one op for all its nodes)
    HardSigmoid(α, β) other than torch's (1/6, 1/2) → affine_act: hardsigmoid of Affine(6α, 6β − 3)
    Pad (constant zero, H/W only)                 → pad      (else its reason)
    ReduceMean over (H, W) keepdims / GlobalAveragePool → mean
    Mul / Add / Sub of two activations            → mul / add / sub
    Mul/Add/Sub/Div of a 3-d/4-d activation by a [C] constant over its last axis → affine, layout "nhwc"
    LayerNormalization over the last axis         → norm (LayerNorm; its Scale, B as the affine)
    ReduceMean → Sub → Pow(2) / Mul → ReduceMean → Add(ε) → Sqrt → Div [→ Mul(γ)] [→ Add(β)] over
        the last axis (a LayerNorm as exporters write it below opset 17, and tf2onnx) → norm, all its nodes
    Transpose                                     → layout (Permute)
    Flatten(axis 1), a Reshape that merges adjacent axes (shapes captured) → reshape (Flatten)
    MatMul by a constant over a 3-d/4-d tensor (+ Add of a constant [C_out] bias, its only reader)
                                                  → conv, 1x1, layout "nhwc" (a Linear over NHWC / tokens)
    Gemm of a 2-d activation by constants          → conv, 1x1, layout "nc" (a Linear over [N, C])
    ConvTranspose (constant weights, explicit pads) → deconv
    Shape                                         → other, reading its input for the shape only
    Concat                                        → concat (its axis, non-negative where the rank is known)
    Split of axis 1 (sizes constant, or equal parts) → one slice per output (its channel range),
                                                     each op listing the one Split node
    Slice of axis 1 alone, constant bounds, step 1 → slice
    anything else                                 → other, labelled with the op type

The view's native_acts: each activation's node count in the standard form the lowering writes at
the model's opset (passes/onnx/lower.py: native_act_sizes), against which the native_act rule
finds the activations written out longer.

An activation is any tensor that is not a constant (initializer, Constant node, or an Identity
of one); Constant nodes and Identities of constants are weights, not ops. Every lowering writes
fresh initializers and never edits one in place, so an initializer several nodes read is no
reason to leave a site alone.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch

from rewrite.ir import Affine, ConvSpec, Flatten, LayerNorm, Permute

from rewrite.view import Op, View
from .graph import STANDARD_DOMAINS, constant_value, is_constant, is_op, sole_consumer
from .lift import (QUANTIZED_CONVS, activation_at, batchnorm_affine, constant_affine, conv_spec, deconv_spec,
                   hard_sigmoid_affine, slice_channels, split_parts, zero_pad)
from .lower import native_act_sizes

MEAN_OPSET_AXES_INPUT = 18    # ReduceMean takes its axes as an input from opset 18

LIFTERS: dict[str, list] = {}
"""How the view recognises each standard op type: op_type → the lifters tried in turn, each
(builder, node, its activation inputs, shapes, producers, base Op fields) → Op or None (not
recognised: the next one, else an "other" op). Declared with @lifts beside each lifter."""

BEFORE_ACTIVATIONS = {"Conv", *QUANTIZED_CONVS}   # lifted before the activation patterns are tried


def lifts(*op_types: str):
    def register(fn):
        for op_type in op_types:
            LIFTERS.setdefault(op_type, []).append(fn)
        return fn
    return register


class OnnxViewBuilder:
    def __init__(self, graph: gs.Graph, opset: int, dtype: torch.dtype, overridable: set, static_spatial: bool):
        self.graph, self.opset, self.dtype = graph, opset, dtype
        self.overridable, self.static_spatial = overridable, static_spatial
        self.native_acts = native_act_sizes(opset)

    def build(self, shapes: dict, origin: dict) -> View:
        """The view of the graph as it is now; origin: id(node) → (the pass that made it, node)."""
        ops, claimed, by_output = [], set(), {}
        for node in self.graph.nodes:
            if id(node) in claimed or not node.outputs or self._is_weight(node):
                continue
            for op in self._split(node, shapes) or [self._lift(node, shapes, by_output)]:
                claimed.update(id(n) for n in op.nodes)
                op.origin = origin.get(id(node), (None,))[0]
                by_output[op.output] = op
                ops.append(op)
        outputs = {t.name for t in self.graph.outputs}
        return View(ops, outputs, shapes, self.native_acts)

    def _is_weight(self, node: gs.Node) -> bool:
        return is_op(node, "Constant") or (is_op(node, "Identity") and is_constant(node.outputs[0], self.overridable))

    def _split(self, node: gs.Node, shapes: dict) -> list | None:
        """A Split of the channels: one slice op per output, each standing for the Split node."""
        if not is_op(node, "Split") or is_constant(node.inputs[0], self.overridable):
            return None
        x = node.inputs[0].name
        parts = split_parts(node, shapes.get(x), self.overridable, self.opset)
        if parts is None:
            return None
        name = node.name or f"Split:{node.outputs[0].name}"
        return [Op("slice", (x,), output=t.name, name=f"{name}:{i}", label="Split", nodes=(node,), channels=part)
                for i, (t, part) in enumerate(zip(node.outputs, parts))]

    def _activations(self, node: gs.Node) -> tuple:
        return tuple(t.name for t in node.inputs if t.name and not is_constant(t, self.overridable))

    def _lift(self, node: gs.Node, shapes: dict, by_output: dict) -> Op:
        """The op a node starts: a conv; else an activation written over one or more nodes
        (lift.py activation_at); else what the first lifter of LIFTERS[node.op] that recognises
        the node makes of it; else "other"."""
        base = dict(output=node.outputs[0].name, name=node.name or f"{node.op}:{node.outputs[0].name}",
                    label=node.op if (node.domain or "") in STANDARD_DOMAINS else f"{node.domain}.{node.op}",
                    nodes=(node,))
        lifters = LIFTERS.get(node.op, ()) if (node.domain or "") in STANDARD_DOMAINS else ()
        if node.op in BEFORE_ACTIVATIONS and lifters:
            return lifters[0](self, node, (), shapes, by_output, base)
        act = activation_at(self.graph, node, self.overridable)
        if act is not None:
            return Op("act", (act.input.name,), **{**base, "output": act.output.name, "nodes": tuple(act.nodes)},
                      act=act.name)
        inputs = self._activations(node)
        for lift in lifters:
            op = lift(self, node, inputs, shapes, by_output, base)
            if op is not None:
                return op
        return Op("other", inputs, **base)

    # -- the lifters, by op type (tried in the order they are declared) ----------------------

    @lifts("Conv", *QUANTIZED_CONVS)
    def _lift_conv(self, node, inputs, shapes, by_output, base):
        return self._conv(node, shapes, base)

    @lifts("ConvTranspose")
    def _lift_deconv(self, node, inputs, shapes, by_output, base):
        spec = deconv_spec(node, self.overridable)
        if not isinstance(spec, str) and spec.weight.dtype != self.dtype:
            spec = f"transposed conv weight dtype {spec.weight.dtype} differs from the model's {self.dtype}"
        x = node.inputs[0].name
        return Op("deconv", (x,), **base, reason=spec) if isinstance(spec, str) else Op("deconv", (x,), **base, deconv=spec)

    @lifts("HardSigmoid")
    def _lift_hard_sigmoid(self, node, inputs, shapes, by_output, base):
        """HardSigmoid(α, β) other than torch's (activation_at took that one)."""
        if not (inputs and node.inputs[0].name == inputs[0]):
            return None
        hard = hard_sigmoid_affine(node, self._channels(node.inputs[0], shapes, by_output))
        if hard is None:
            return None
        affine, label = hard
        return Op("affine_act", inputs[:1], **{**base, "label": label}, affine=affine, act="hardsigmoid")

    @lifts("BatchNormalization")
    def _lift_batch_norm(self, node, inputs, shapes, by_output, base):
        affine = batchnorm_affine(node, self.overridable)
        return Op("affine", (node.inputs[0].name,), **base, affine=None if isinstance(affine, str) else affine,
                  reason=affine if isinstance(affine, str) else None)

    @lifts("Mul", "Add", "Sub", "Div")
    def _lift_constant_affine(self, node, inputs, shapes, by_output, base):
        if len(inputs) != 1:
            return None
        x = next(t for t in node.inputs if t.name == inputs[0])
        affine = constant_affine(node, x, self._channels(x, shapes, by_output), self.overridable)
        if affine is not None:
            return Op("affine", inputs, **base, affine=affine)
        affine = self._last_axis_affine(node, x, shapes.get(x.name))
        if affine is not None:
            return Op("affine", inputs, **base, affine=affine, layout="nhwc")
        return None

    @lifts("Concat")
    def _lift_concat(self, node, inputs, shapes, by_output, base):
        if len(inputs) != len(node.inputs):
            return None
        rank = len(shapes[inputs[0]]) if inputs and inputs[0] in shapes else None
        axis = int(node.attrs.get("axis", 0))
        return Op("concat", inputs, **base, axis=axis % rank if rank else (axis if axis >= 0 else None))

    @lifts("Shape")
    def _lift_shape(self, node, inputs, shapes, by_output, base):
        return Op("other", (), **base, shape_inputs=inputs)

    @lifts("Slice")
    def _lift_slice(self, node, inputs, shapes, by_output, base):
        if not (inputs and node.inputs[0].name == inputs[0]):
            return None
        channels = slice_channels(node, shapes.get(inputs[0]), self.overridable, self.opset)
        return Op("slice", inputs[:1], **base, channels=channels) if channels is not None else None

    @lifts("Mul", "Add", "Sub")
    def _lift_binary(self, node, inputs, shapes, by_output, base):
        return Op(node.op.lower(), inputs, **base) if len(node.inputs) == 2 and len(inputs) == 2 else None

    @lifts("Pad")
    def _lift_pad(self, node, inputs, shapes, by_output, base):
        if not (inputs and node.inputs[0].name == inputs[0]):
            return None
        pad = zero_pad(node, self.overridable, self.opset)
        return Op("pad", inputs[:1], **base, pad=None if isinstance(pad, str) else pad,
                  reason=pad if isinstance(pad, str) else None)

    @lifts("GlobalAveragePool", "ReduceMean")
    def _lift_mean(self, node, inputs, shapes, by_output, base):
        return Op("mean", inputs, **base) if self._is_mean(node) else None

    @lifts("ReduceMean")
    def _lift_decomposed_layer_norm(self, node, inputs, shapes, by_output, base):
        return self._decomposed_layer_norm(node, shapes, base)

    @lifts("Transpose")
    def _lift_transpose(self, node, inputs, shapes, by_output, base):
        perm = node.attrs.get("perm")
        return Op("layout", inputs, **base, shape_op=Permute(tuple(int(p) for p in perm)) if perm else None)

    @lifts("Flatten", "Reshape")
    def _lift_reshape(self, node, inputs, shapes, by_output, base):
        if not (inputs and node.inputs[0].name == inputs[0]):
            return None
        before = shapes.get(inputs[0])
        flatten = _flatten(before, shapes.get(node.outputs[0].name)) if node.op == "Reshape" else \
            _flatten_axis(before, int(node.attrs.get("axis", 1)))
        return Op("reshape", inputs[:1], **base, shape_op=flatten) if flatten is not None else None

    @lifts("LayerNormalization")
    def _lift_layer_norm(self, node, inputs, shapes, by_output, base):
        if not (inputs and node.inputs[0].name == inputs[0]):
            return None
        return self._layer_norm(node, shapes, base) or Op("other", inputs, **base)

    @lifts("MatMul")
    def _lift_matmul(self, node, inputs, shapes, by_output, base):
        if not (len(inputs) == 1 and node.inputs[0].name == inputs[0]):
            return None
        return self._linear(node, shapes, base) or Op("other", inputs, **base)

    @lifts("Gemm")
    def _lift_gemm(self, node, inputs, shapes, by_output, base):
        if not (len(inputs) == 1 and node.inputs[0].name == inputs[0]):
            return None
        return self._gemm(node, base) or Op("other", inputs, **base)

    def _linear(self, node: gs.Node, shapes: dict, base: dict) -> Op | None:
        """x·W over the last axis of a 4-d (channels-last) x: a 1x1 conv with layout "nhwc", as
        torch exports ConvNeXt's pointwise Linear layers."""
        x = node.inputs[0].name
        weight = constant_value(node.inputs[1], self.overridable)
        shape = shapes.get(x)
        if weight is None or weight.ndim != 2 or shape is None or len(shape) not in (3, 4) or \
                not np.issubdtype(weight.dtype, np.floating):
            return None
        w = torch.from_numpy(np.ascontiguousarray(weight.T))[:, :, None, None]
        add = sole_consumer(self.graph, node.outputs[0])
        if is_op(add, "Add") and len(add.inputs) == 2:
            bias = constant_value(next(t for t in add.inputs if t is not node.outputs[0]), self.overridable) \
                if any(t is node.outputs[0] for t in add.inputs) and add.inputs[0] is not add.inputs[1] else None
            if bias is not None and bias.shape == (w.shape[0],) and bias.dtype == weight.dtype:
                spec = ConvSpec(w, torch.from_numpy(np.ascontiguousarray(bias)))
                return Op("conv", (x,), **{**base, "output": add.outputs[0].name, "nodes": (node, add)}, conv=spec,
                          layout="nhwc")
        return Op("conv", (x,), **base, conv=ConvSpec(w), layout="nhwc")

    def _layer_norm(self, node: gs.Node, shapes: dict, base: dict) -> Op | None:
        """LayerNormalization(X, Scale, B; axis, epsilon) over the last axis of X."""
        x = node.inputs[0].name
        shape = shapes.get(x)
        axis = int(node.attrs.get("axis", -1))
        if len([o for o in node.outputs if o.name]) > 1 or (axis != -1 and (shape is None or axis != len(shape) - 1)):
            return None
        values = [constant_value(t, self.overridable) if t.name else None for t in node.inputs[1:3]] + [None]
        if values[0] is None or (len(node.inputs) > 2 and node.inputs[2].name and values[1] is None):
            return Op("norm", (x,), **base, reason="the LayerNormalization's Scale or B is not constant",
                      layout="nhwc")
        scale = torch.from_numpy(np.asarray(values[0], np.float64).reshape(-1))
        shift = torch.zeros_like(scale) if values[1] is None else \
            torch.from_numpy(np.asarray(values[1], np.float64).reshape(-1))
        plain = bool((scale == 1).all()) and not bool(shift.any())
        affine = None if plain else Affine(scale, shift, -1)
        return Op("norm", (x,), **base, norm=LayerNorm(float(node.attrs.get("epsilon", 1e-5)), affine),
                  layout="nhwc")

    def reduces_last_axis(self, node: gs.Node, shapes: dict) -> bool:
        """ReduceMean keeping dims over the last axis only."""
        if not is_op(node, "ReduceMean") or not int(node.attrs.get("keepdims", 1)) or not node.inputs:
            return False
        if self.opset < MEAN_OPSET_AXES_INPUT:
            axes = node.attrs.get("axes")
        else:
            axes = constant_value(node.inputs[1], self.overridable) if len(node.inputs) > 1 else None
        shape = shapes.get(node.inputs[0].name)
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        return axes == [-1] or (shape is not None and axes == [len(shape) - 1])

    def _decomposed_layer_norm(self, mean: gs.Node, shapes: dict, base: dict) -> Op | None:
        """y = (x − E[x]) / sqrt(E[(x − E[x])²] + ε) [· γ] [+ β] over the last axis, written out op
        by op (torch below opset 17, tf2onnx), starting at its first ReduceMean: one norm op over
        all its nodes, or None where the nodes are not exactly that (or a value inside is read
        elsewhere)."""
        if not self.reduces_last_axis(mean, shapes):
            return None
        x = mean.inputs[0]
        if is_constant(x, self.overridable):
            return None
        follow = lambda t: sole_consumer(self.graph, t)   # noqa: E731
        sub = follow(mean.outputs[0])
        if not is_op(sub, "Sub") or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
            return None
        d = sub.outputs[0]
        readers = list(d.outputs)
        if len(readers) not in (2, 3) or any(o is d for o in self.graph.outputs):
            return None
        square = next((n for n in readers if is_op(n, "Pow") and n.inputs[0] is d and _is_value(
            constant_value(n.inputs[1], self.overridable), 2.0)), None) or \
            next((n for n in readers if is_op(n, "Mul") and n.inputs[0] is d and n.inputs[1] is d), None)
        var = follow(square.outputs[0]) if square is not None else None
        if var is None or not self.reduces_last_axis(var, shapes):
            return None
        add = follow(var.outputs[0])
        eps = constant_value(next((t for t in add.inputs if t is not var.outputs[0]), None), self.overridable) \
            if is_op(add, "Add") and len(add.inputs) == 2 else None
        sqrt = follow(add.outputs[0]) if eps is not None and eps.size == 1 else None
        div = follow(sqrt.outputs[0]) if is_op(sqrt, "Sqrt") else None
        if not is_op(div, "Div") or div.inputs[0] is not d or div.inputs[1] is not sqrt.outputs[0] or \
                set(map(id, readers)) != {id(square), id(div)}:
            return None
        nodes, y = [mean, sub, square, var, add, sqrt, div], div.outputs[0]
        shape = shapes.get(x.name)
        channels = shape[-1] if shape is not None else None
        scale = shift = None
        for op_type in ("Mul", "Add"):
            nxt = follow(y)
            if not is_op(nxt, op_type) or len(nxt.inputs) != 2 or not any(t is y for t in nxt.inputs):
                continue
            c = constant_value(nxt.inputs[1] if nxt.inputs[0] is y else nxt.inputs[0], self.overridable)
            if c is None or channels is None or c.size != channels or (c.ndim and c.shape[-1] != channels):
                continue
            v = torch.from_numpy(np.asarray(c, np.float64).reshape(-1))
            scale, shift = (v, shift) if op_type == "Mul" else (scale, v)
            nodes.append(nxt)
            y = nxt.outputs[0]
        affine = None
        if scale is not None or shift is not None:
            c = channels
            affine = Affine(scale if scale is not None else torch.ones(c, dtype=torch.float64),
                            shift if shift is not None else torch.zeros(c, dtype=torch.float64), -1)
        return Op("norm", (x.name,), **{**base, "output": y.name, "nodes": tuple(nodes), "label": "LayerNorm (ReduceMean … Div)"},
                  norm=LayerNorm(float(eps.reshape(-1)[0]), affine), layout="nhwc")

    def _last_axis_affine(self, node: gs.Node, x: gs.Tensor, shape) -> Affine | None:
        """x·c, x + c, x − c, x / c with c a [C] constant over the last axis of a 3-d / 4-d x."""
        if shape is None or len(shape) not in (3, 4) or len(node.inputs) != 2:
            return None
        position = 0 if node.inputs[0] is x else 1
        if node.inputs[position] is not x or (position == 1 and node.op in ("Sub", "Div")):
            return None
        c = constant_value(node.inputs[1 - position], self.overridable)
        channels = shape[-1]
        if c is None or not np.issubdtype(c.dtype, np.floating) or c.size != channels or c.ndim < 1 or \
                c.shape[-1] != channels or c.ndim > len(shape):
            return None
        v = torch.from_numpy(np.asarray(c, np.float64).reshape(-1))
        one, zero = torch.ones_like(v), torch.zeros_like(v)
        scale, shift = {"Mul": (v, zero), "Add": (one, v), "Sub": (one, -v), "Div": (1 / v, zero)}[node.op]
        return Affine(scale, shift, -1)

    def _gemm(self, node: gs.Node, base: dict) -> Op | None:
        """Y = alpha·A·B' + beta·C with A the activation [N, C_in] (transA = 0), B constant
        (B' = B, or Bᵀ with transB) and C a constant [C_out] or scalar, or absent: a linear,
        lifted as a 1x1 conv with weight alpha·B'ᵀ and bias beta·C."""
        if int(node.attrs.get("transA", 0)):
            return None
        weight = constant_value(node.inputs[1], self.overridable)
        bias = constant_value(node.inputs[2], self.overridable) if len(node.inputs) > 2 and node.inputs[2].name \
            else None
        if weight is None or weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating) or \
                (len(node.inputs) > 2 and node.inputs[2].name and bias is None):
            return None
        w = np.asarray(weight, np.float64) * float(node.attrs.get("alpha", 1.0))
        w = w if int(node.attrs.get("transB", 0)) else w.T              # [C_out, C_in]
        if bias is not None:
            if bias.size not in (1, w.shape[0]) or bias.ndim > 2:
                return None
            bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (w.shape[0],)) * \
                float(node.attrs.get("beta", 1.0))
        dtype = torch.from_numpy(np.empty(0, weight.dtype)).dtype
        if dtype != self.dtype:
            return None
        spec = ConvSpec(torch.from_numpy(np.ascontiguousarray(w))[:, :, None, None].to(dtype),
                        None if bias is None else torch.from_numpy(np.ascontiguousarray(bias)).to(dtype))
        return Op("conv", (node.inputs[0].name,), **base, conv=spec, layout="nc")

    def _conv(self, node: gs.Node, shapes: dict, base: dict) -> Op:
        x = node.inputs[0].name
        shape = shapes.get(x)
        spatial = tuple(shape[2:]) if shape is not None and len(shape) == 4 and self.static_spatial else None
        spec = conv_spec(node, self.overridable, spatial)
        if not isinstance(spec, str) and spec.weight.dtype != self.dtype:
            spec = f"conv weight dtype {spec.weight.dtype} differs from the model's {self.dtype}"
        if isinstance(spec, str):
            return Op("conv", (x,), **base, reason=spec)
        return Op("conv", (x,), **base, conv=spec)

    @staticmethod
    def _channels(x: gs.Tensor, shapes: dict, by_output: dict) -> int | None:
        """The channel count of activation x: its producer conv's, else its captured shape's."""
        op = by_output.get(x.name)
        if op is not None and op.conv is not None:
            return op.conv.out_channels
        shape = shapes.get(x.name)
        return shape[1] if shape is not None and len(shape) == 4 else None

    def _is_mean(self, node: gs.Node) -> bool:
        """GlobalAveragePool, or ReduceMean over axes (2, 3) of a 4-D tensor keeping dims."""
        if is_op(node, "GlobalAveragePool"):
            return True
        if not is_op(node, "ReduceMean") or not int(node.attrs.get("keepdims", 1)):
            return False
        if self.opset < MEAN_OPSET_AXES_INPUT:
            axes = node.attrs.get("axes")
        else:
            axes = constant_value(node.inputs[1], self.overridable) if len(node.inputs) > 1 else None
        return axes is not None and sorted(int(a) % 4 for a in list(axes)) == [2, 3]


def _is_value(c, value: float) -> bool:
    return c is not None and c.size == 1 and float(np.asarray(c).reshape(-1)[0]) == value


def _flatten_axis(before, axis: int) -> Flatten | None:
    """ONNX Flatten(axis) of a tensor of shape `before`, [Π before[:axis], Π before[axis:]], as one
    torch flatten where it is one: axis 1 merges the trailing axes, axis r − 1 the leading ones."""
    if before is None or len(before) < 3:
        return None
    axis %= len(before)
    if axis == 1:
        return Flatten(1, len(before) - 1)
    return Flatten(0, len(before) - 2) if axis == len(before) - 1 else None


def _flatten(before, after) -> Flatten | None:
    """The Flatten(start, end) that turns shape `before` into `after` (adjacent axes merged), or None."""
    if before is None or after is None or len(after) >= len(before) or not after:
        return None
    merged = len(before) - len(after)
    for start in range(len(after)):
        end = start + merged
        if tuple(before[:start]) == tuple(after[:start]) and tuple(before[end + 1:]) == tuple(after[start + 1:]) \
                and int(np.prod(before[start:end + 1])) == after[start]:
            return Flatten(start, end)
    return None
