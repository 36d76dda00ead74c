"""The format-neutral view of an op graph: what every rule's matcher reads, whatever the format.

Each front end (passes/fx, passes/onnx) turns its graph into a `View`: a list of `Op`s in
execution order, each with the activation values it reads and the value it produces. Values are
opaque hashable keys (an fx.Node, an ONNX tensor name). An op carries what the rules need in
IR form: a ConvSpec for a conv (a linear over a channels-last tensor is a 1x1 conv with layout
"nhwc", a linear over a 2-d [N, C] tensor one with layout "nc"), an Affine for an eval-mode
BatchNorm or a constant per-channel scale/shift, an activation name, a ZeroPad; or the reason it
cannot be lifted (weights computed at run time, shared with another op, a BatchNorm in training
mode...). Several format nodes may make one op (ONNX writes SiLU as Sigmoid·Mul); `nodes` lists
them, so a rewrite removes all of them, and `View.native_acts` says how many nodes each
activation's shortest standard form takes in the format (the native_act rule's measure). One format node may also stand in several ops: a split
is one slice op per part, each listing the split's node (View.siblings finds the others), so a
rewrite may remove the split only when it takes every part.

Kinds:
    conv    a 2-D convolution (or a linear over the channel axis)    conv | reason
    affine  y = scale[c]·x + shift[c]                                 affine | reason
    act     an elementwise activation                                 act
    affine_act  an activation of a per-channel affine of its input,   affine, act
            act(scale[c]·x + shift[c]): ONNX's HardSigmoid(α, β) = hardsigmoid(6α·x + 6β − 3), torch's
            hardsigmoid (α 1/6, β 1/2) of an affine. One op, for one format node; a rule that folds
            the affine into the conv before it (fuse, into a squeeze-excitation's expand conv) gets
            the plain activation.
    pad     a constant pad of H and W                                 pad (ZeroPad) | reason
    mean    the global spatial mean, [B, C, H, W] → [B, C, 1, 1]
    mul     a product of two activations (a gate)
    add     a sum of two activations (a residual)
    sub     a difference of two activations, inputs[0] − inputs[1]
    layout  a permutation of the axes (NCHW ⇄ NHWC); shape_op: its Permute, where known
    reshape a flatten that keeps the last axis; shape_op: its Flatten
    norm    a LayerNorm over the last axis                          norm (LayerNorm) | reason
    concat  a concatenation of its inputs, in order, along `axis` (1: the channels of NCHW / [N, C])
    slice   channels [start, stop) of axis 1 of its input (`channels`): a part of a split, x[:, a:b]
    deconv  a 2-D transposed convolution with constant weights          deconv (TransposedConv) | reason
    other   anything else (label says what)

An op may also read values for their shape only (`shape_inputs`: torch's `reshape_as(x, other)`
reads `other`'s shape, `x.size()`, ONNX Shape). Such a reader is not a user of the value: a rewrite
may remove the op that produces it, and the front end then points the reader at a value of the
same shape in the rewritten chain (Plan.stand_ins).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

from rewrite.ir import Affine, ConvSpec, Flatten, LayerNorm, Permute, TransposedConv, ZeroPad

KINDS = ("conv", "affine", "act", "affine_act", "pad", "mean", "mul", "add", "sub", "layout", "reshape", "norm", "concat",
         "slice", "deconv", "other")


@dataclass(eq=False)
class Op:
    kind: str
    inputs: tuple                  # activation values read, in order
    output: Hashable               # the value produced
    name: str                      # site name: module path (FX) or node name (ONNX)
    label: str                     # what it is, in the graph's own terms ("conv2d", "LayerNormalization")
    nodes: tuple = ()              # the format's nodes this op stands for
    conv: ConvSpec | None = None
    deconv: TransposedConv | None = None
    affine: Affine | None = None
    act: str | None = None
    pad: ZeroPad | None = None
    norm: LayerNorm | None = None
    shape_op: Permute | Flatten | None = None
    reason: str | None = None      # why a conv / affine / pad cannot be lifted
    layout: str = "nchw"           # "nhwc": a linear (affine, norm) over the last axis of a channels-last
                                   # tensor [B, H, W, C] or tokens [B, N, C]; "nc": a linear over [N, C]
    origin: str | None = None      # the pass whose rewrite created this op
    shape_inputs: tuple = ()       # values read for their shape only (not counted as users)
    axis: int | None = None        # concat: the axis it joins along (non-negative)
    channels: tuple | None = None  # slice: (start, stop) of the channels of axis 1 it keeps

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"op kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def liftable_conv(self) -> bool:
        """A conv the folds and collapses may rewrite: NCHW, or a linear over [N, C] (a 1x1 conv
        on a 1x1 map)."""
        return self.kind == "conv" and self.conv is not None and self.layout in ("nchw", "nc")

    def describe(self) -> str:
        if self.deconv is not None:
            return self.deconv.describe()
        if self.conv is not None:
            return self.conv.describe() + {"nhwc": " (linear over NHWC)", "nc": " (linear)"}.get(self.layout, "")
        if self.kind == "affine_act":
            return self.label      # its act is of an affine: "HardSigmoid(alpha 0.2, beta 0.5)", not "hardsigmoid"
        return self.act or self.label      # in the graph's own terms ("LayerNormalization", "layer_norm")


@dataclass
class View:
    ops: list
    outputs: set = field(default_factory=set)      # values that are graph outputs
    shapes: dict = field(default_factory=dict)     # value → full shape, where known
    native_acts: dict = field(default_factory=dict)   # activation name → nodes of its shortest standard form in
                                   # this format (ONNX: at its opset); empty where an act op is always one node (FX)

    def __post_init__(self):
        self._producer = {op.output: op for op in self.ops}
        self._users: dict = {}
        self._shape_users: dict = {}
        self._standing_for: dict = {}      # id(format node) → the ops listing it
        for op in self.ops:
            for node in op.nodes:
                self._standing_for.setdefault(id(node), []).append(op)
            for v in dict.fromkeys(op.inputs):
                self._users.setdefault(v, []).append(op)
            for v in dict.fromkeys(op.shape_inputs):
                self._shape_users.setdefault(v, []).append(op)

    def producer(self, value) -> Op | None:
        return self._producer.get(value)

    def users(self, value) -> list:
        return self._users.get(value, [])

    def shape_readers(self, value) -> list:
        """Ops reading only the shape of `value` (not among its users)."""
        return self._shape_users.get(value, [])

    def readers(self, value) -> int:
        """Ops reading `value`, plus one if it is a graph output."""
        return len(self.users(value)) + (value in self.outputs)

    def sole_user(self, value) -> Op | None:
        """The one op reading `value`, or None (several readers, or it is also a graph output)."""
        users = self.users(value)
        return users[0] if len(users) == 1 and value not in self.outputs else None

    def describe_readers(self, value) -> str:
        names = [op.describe() for op in self.users(value)] + (["<graph output>"] if value in self.outputs else [])
        return ", ".join(names) or "nothing"

    def siblings(self, op: Op) -> list:
        """The other ops that stand for one of `op`'s format nodes (the other parts of its split)."""
        found = {id(o): o for node in op.nodes for o in self._standing_for.get(id(node), []) if o is not op}
        return list(found.values())

    def shape(self, value) -> tuple | None:
        return self.shapes.get(value)
