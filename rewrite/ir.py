"""Chain IR: the format-independent description of a conv chain.

A *chain* is a short run of layers lifted out of a graph (FX or ONNX):

    ConvSpec  — a 2-D convolution with explicit, possibly asymmetric, zero padding
    ZeroPad   — an explicit zero pad of the spatial dimensions (absorbed into the next conv)
    Affine    — a per-channel y = scale * x + shift (an eval-mode BatchNorm, a bias, a scale)
    Activation — an elementwise nonlinearity, by name

Front ends lift graph nodes into these records and lower them back; the algebra in
`rewrite.algebra` and the rules in `rewrite.rules` only ever see the IR. Every record can be
evaluated with plain torch (`apply`), in any float dtype, which is what the tests use as ground
truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Union

import torch
import torch.nn.functional as F

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


@dataclass(frozen=True, eq=False)
class ConvSpec:
    """y = conv2d(pad(x, padding), weight, bias, stride, dilation, groups).

    `weight` has PyTorch layout [out_channels, in_channels / groups, kh, kw]. Padding is zeros,
    given per side so that TF/ONNX-style asymmetric "same" padding is representable.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    stride: Pair = (1, 1)
    padding: Padding4 = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def kernel_size(self) -> Pair:
        return (self.weight.shape[2], self.weight.shape[3])

    @property
    def is_dense(self) -> bool:
        return self.groups == 1

    @property
    def is_depthwise(self) -> bool:
        """groups == in_channels > 1 with out_channels a multiple r of in_channels."""
        return self.groups > 1 and self.groups == self.in_channels and self.out_channels % self.groups == 0

    @property
    def multiplier(self) -> int:
        """Depthwise channel multiplier r (output channel j reads input channel j // r)."""
        return self.out_channels // self.in_channels

    @property
    def is_pointwise(self) -> bool:
        """A plain 1x1 conv: groups 1, no padding (stride is allowed, it only subsamples)."""
        return self.groups == 1 and self.kernel_size == (1, 1) and self.padding == (0, 0, 0, 0)

    @property
    def has_symmetric_padding(self) -> bool:
        t, b, l, r = self.padding
        return t == b and l == r

    def describe(self) -> str:
        kh, kw = self.kernel_size
        if self.is_depthwise:
            kind = f"dw{kh}x{kw}" + (f" r={self.multiplier}" if self.multiplier > 1 else "")
        elif self.is_pointwise:
            kind = "pw"
        elif self.is_dense:
            kind = f"conv{kh}x{kw}"
        else:
            kind = f"gconv{kh}x{kw} g={self.groups}"
        extra = f" s{self.stride[0]}" if self.stride != (1, 1) else ""
        return f"{kind} {self.in_channels}->{self.out_channels}{extra}"

    def output_hw(self, h: int, w: int) -> Pair:
        t, b, l, r = self.padding
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return ((h + t + b - dh * (kh - 1) - 1) // sh + 1, (w + l + r - dw * (kw - 1) - 1) // sw + 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:           # a linear over [N, C]: the 1x1 conv on a 1x1 map
            return self.apply(x[:, :, None, None])[:, :, 0, 0]
        t, b, l, r = self.padding
        if any(self.padding):
            x = F.pad(x, (l, r, t, b))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def to(self, dtype: torch.dtype) -> "ConvSpec":
        return replace(self, weight=self.weight.to(dtype), bias=None if self.bias is None else self.bias.to(dtype))


@dataclass(frozen=True, eq=False)
class TransposedConv:
    """y = conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation).

    `weight` has PyTorch's (and ONNX's) layout [in_channels, out_channels / groups, kh, kw];
    padding (top, bottom, left, right) crops the full output, output_padding adds rows and columns
    at the bottom and right. Lifted so that a rule can recognise the non-overlapping case (kernel =
    stride), which is a 1x1 conv followed by depth_to_space (rewrite.algebra.shuffle)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    stride: Pair = (1, 1)
    padding: Padding4 = (0, 0, 0, 0)
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    @property
    def in_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def kernel_size(self) -> Pair:
        return (self.weight.shape[2], self.weight.shape[3])

    def describe(self) -> str:
        kh, kw = self.kernel_size
        extra = f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride[0]}x{self.stride[1]}"
        groups = f" g={self.groups}" if self.groups > 1 else ""
        return f"deconv{kh}x{kw} {self.in_channels}->{self.out_channels}{extra}{groups}"

    def output_hw(self, h: int, w: int) -> Pair:
        t, b, l, r = self.padding
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel_size, self.stride, self.dilation, self.output_padding
        return ((h - 1) * sh - t - b + dh * (kh - 1) + oh + 1, (w - 1) * sw - l - r + dw * (kw - 1) + ow + 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The full output (output_padding's rows and columns at the bottom and right), cropped by
        the per-side padding."""
        t, b, l, r = self.padding
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, 0, self.output_padding, self.groups, self.dilation)
        return y[..., t:y.shape[-2] - b, l:y.shape[-1] - r]

    def to(self, dtype: torch.dtype) -> "TransposedConv":
        return replace(self, weight=self.weight.to(dtype), bias=None if self.bias is None else self.bias.to(dtype))


@dataclass(frozen=True)
class DepthToSpace:
    """y = pixel_shuffle(x, block): channel c·b² + i·b + j of x goes to channel c, row offset i and
    column offset j of y (ONNX DepthToSpace in mode "CRD")."""

    block: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.block)

    def describe(self) -> str:
        return f"depth_to_space {self.block}"


@dataclass(frozen=True)
class ZeroPad:
    """y = pad(x) with zeros: (top, bottom, left, right) rows/columns added around H×W."""

    padding: Padding4

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.padding
        return F.pad(x, (l, r, t, b))

    def describe(self) -> str:
        return "pad(" + ",".join(str(p) for p in self.padding) + ")"


@dataclass(frozen=True, eq=False)
class Affine:
    """y = scale[c] * x + shift[c] over the channel dimension: dim 1 (axis 1), or the last dim
    (axis −1: a layer scale or bias over a channels-last tensor [B, H, W, C] or tokens [B, N, C])."""

    scale: torch.Tensor
    shift: torch.Tensor
    axis: int = 1

    @staticmethod
    def from_batchnorm(mean, var, eps: float, gamma=None, beta=None) -> "Affine":
        """Eval-mode BatchNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta."""
        scale = torch.rsqrt(var.double() + eps)
        if gamma is not None:
            scale = scale * gamma.double()
        shift = -mean.double() * scale
        if beta is not None:
            shift = shift + beta.double()
        return Affine(scale, shift)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2) if self.axis == 1 else (-1,)
        return x * self.scale.to(x.dtype).view(shape) + self.shift.to(x.dtype).view(shape)

    def describe(self) -> str:
        return "affine" if self.axis == 1 else "affine(last axis)"


def _hardswish(x):
    return F.hardswish(x)


ACTIVATIONS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "hardswish": _hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
}


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity, by name (see ACTIVATIONS)."""

    name: str

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.name!r}; known: {sorted(ACTIVATIONS)}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class SqueezeExcite:
    """Squeeze-excitation: a ↦ a · gate(expand(act(reduce(mean_hw(a))))), per image and channel.

    reduce (K→S) and expand (S→K) are 1x1 convs with bias; act is an activation name or None;
    gate is "sigmoid" or "hardsigmoid".
    """

    reduce: ConvSpec
    act: str | None
    expand: ConvSpec
    gate: str

    def scale(self, a: torch.Tensor) -> torch.Tensor:
        """The gate [B, K, 1, 1] for the activation a [B, K, H, W]."""
        s = self.reduce.apply(a.mean((2, 3), keepdim=True))
        s = ACTIVATIONS[self.act](s) if self.act else s
        return ACTIVATIONS[self.gate](self.expand.apply(s))

    def to(self, dtype: torch.dtype) -> "SqueezeExcite":
        return replace(self, reduce=self.reduce.to(dtype), expand=self.expand.to(dtype))

    def describe(self) -> str:
        return f"SE({self.reduce.out_channels}, {self.act or 'linear'}, {self.gate})"


@dataclass(frozen=True, eq=False)
class FusedSepConv:
    """One fused op for y = act2(pw(act_after_gate(act1(dw(x')) [· se]))) [+ residual]: one kernel,
    the dw result kept on chip, or with `se` three (kernels/sep_conv/sep_conv_se.py). x' = x, or with
    `expand` the whole inverted-residual block's x' = act0(expand(x)) (a 1x1 dense conv, its
    result never written to device memory either: kernels/block/inverted_residual.py).

    act1/act2 are activation names or None; `residual` says whether a tensor of the output's
    shape is added after act2 (it is an extra input of the fused op). With `se`, the dw output is
    written once with its channel sums, the excitation MLP makes the gate, and the 1x1 GEMM scales
    its A tiles by it on chip; `act_after_gate`
    (only with `se`: ReXNet's ReLU6) is an activation of the gated product. dw is any kh x kw
    depthwise conv the kernel takes (1 <= kh, kw <= 7, padding symmetric per axis).
    """

    dw: ConvSpec
    act1: str | None
    pw: ConvSpec
    act2: str | None
    residual: bool = False
    se: SqueezeExcite | None = None
    act_after_gate: str | None = None
    expand: ConvSpec | None = None
    act0: str | None = None

    def apply(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.expand is not None:
            x = self.expand.apply(x)
            x = ACTIVATIONS[self.act0](x) if self.act0 else x
        y = self.dw.apply(x)
        y = ACTIVATIONS[self.act1](y) if self.act1 else y
        y = y * self.se.scale(y) if self.se else y
        y = ACTIVATIONS[self.act_after_gate](y) if self.act_after_gate else y
        y = self.pw.apply(y)
        y = ACTIVATIONS[self.act2](y) if self.act2 else y
        return y + residual if self.residual else y

    def to(self, dtype: torch.dtype) -> "FusedSepConv":
        return replace(self, dw=self.dw.to(dtype), pw=self.pw.to(dtype), se=self.se and self.se.to(dtype),
                       expand=self.expand and self.expand.to(dtype))

    def describe(self) -> str:
        parts = [self.expand and self.expand.describe(), self.act0, self.dw.describe(), self.act1, self.se.describe() if self.se else None, self.act_after_gate,
                 self.pw.describe(), self.act2, "+res" if self.residual else None]
        return "fused[" + " → ".join(p for p in parts if p) + "]"


@dataclass(frozen=True, eq=False)
class FusedMBConv:
    """One fused op for a Fused-MBConv block, y = act2(pw(act1(conv(x)))) [+ residual]: a dense
    kh x kw conv expanding C → Hd, then a 1x1 conv projecting Hd → N, the expanded tensor kept
    on chip (kernels/block/fused_mbconv.py). EfficientNetV2's early stages, MobileNetV4's FusedIB."""

    conv: ConvSpec
    act1: str | None
    pw: ConvSpec
    act2: str | None
    residual: bool = False

    def apply(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv.apply(x)
        y = ACTIVATIONS[self.act1](y) if self.act1 else y
        y = self.pw.apply(y)
        y = ACTIVATIONS[self.act2](y) if self.act2 else y
        return y + residual if self.residual else y

    def to(self, dtype: torch.dtype) -> "FusedMBConv":
        return replace(self, conv=self.conv.to(dtype), pw=self.pw.to(dtype))

    def describe(self) -> str:
        parts = [self.conv.describe(), self.act1, self.pw.describe(), self.act2, "+res" if self.residual else None]
        return "fused[" + " → ".join(p for p in parts if p) + "]"


@dataclass(frozen=True, eq=False)
class ParallelBranches:
    """y = Σ_i chain_i(x) + shift: parallel linear branches reading the same x, summed.

    Each branch is a tuple of layers: a ConvSpec followed by Affines (a BatchNorm, a layer scale,
    a sign as Affine(−1, 0)), Affines alone (a BatchNorm on x), or empty (x itself). `shift` is a
    per-channel constant added once (a shift applied to a partial sum), or None.
    """

    branches: tuple
    shift: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        y = sum(run_chain(branch, x) for branch in self.branches)
        return y if self.shift is None else y + self.shift.to(y.dtype).view(1, -1, 1, 1)

    def to(self, dtype: torch.dtype) -> "ParallelBranches":
        return replace(self, branches=tuple(tuple(layer.to(dtype) if isinstance(layer, ConvSpec) else layer
                                                  for layer in branch) for branch in self.branches))

    @property
    def convs(self) -> list:
        return [layer for branch in self.branches for layer in branch if isinstance(layer, ConvSpec)]

    def describe(self) -> str:
        parts = []
        for branch in self.branches:
            names = [layer.describe() for layer in branch if not isinstance(layer, Affine)]
            parts.append((names[0] if names else "x") + ("+affine" if any(isinstance(l, Affine) for l in branch) else ""))
        counted = dict.fromkeys(parts, 0)
        for part in parts:
            counted[part] += 1
        return "Σ[" + " | ".join(p if n == 1 else f"{n}× {p}" for p, n in counted.items()) + "]"


@dataclass(frozen=True, eq=False)
class Linear:
    """y = x·Wᵀ + b over the last axis of x, any rank (nn.Linear): `spec` is the equivalent 1x1
    conv [C_out, C_in, 1, 1], so the conv algebra applies unchanged."""

    spec: ConvSpec

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.spec.bias is None else self.spec.bias.to(x.dtype)
        return F.linear(x, self.spec.weight[:, :, 0, 0].to(x.dtype), bias)

    def to(self, dtype: torch.dtype) -> "Linear":
        return Linear(self.spec.to(dtype))

    def describe(self) -> str:
        return f"linear {self.spec.in_channels}->{self.spec.out_channels}"


@dataclass(frozen=True, eq=False)
class LayerNorm:
    """y = affine((x − mean) / sqrt(var + eps)), mean and var over the last axis; `affine` is the
    elementwise affine (γ, β) over that axis (Affine with axis −1), or None."""

    eps: float
    affine: Affine | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, x.shape[-1:], None, None, self.eps)
        return y if self.affine is None else self.affine.apply(y)

    def describe(self) -> str:
        return "layernorm" + ("+affine" if self.affine is not None else "")


@dataclass(frozen=True)
class Permute:
    """y = x.permute(perm)."""

    perm: tuple

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)

    def describe(self) -> str:
        return "permute(" + ",".join(str(p) for p in self.perm) + ")"


@dataclass(frozen=True)
class Flatten:
    """y = x.flatten(start, end) (dims of the input; end −1 is the last)."""

    start: int
    end: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.start, self.end)

    def describe(self) -> str:
        return f"flatten({self.start},{self.end})"


@dataclass(frozen=True, eq=False)
class Concat:
    """y = cat([conv_1(x_1), …, conv_k(x_k)], axis 1): convs each reading its own input (a split's
    parts, as MixNet's mixed convs do), their outputs joined along the channels. A site built on it
    takes k inputs (Match.more_inputs)."""

    convs: tuple

    def apply(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != len(self.convs):
            raise ValueError(f"a concat of {len(self.convs)} convs takes as many inputs, got {len(xs)}")
        return torch.cat([conv.apply(x) for conv, x in zip(self.convs, xs)], 1)

    def to(self, dtype: torch.dtype) -> "Concat":
        return Concat(tuple(conv.to(dtype) for conv in self.convs))

    @property
    def out_channels(self) -> int:
        return sum(conv.out_channels for conv in self.convs)

    def describe(self) -> str:
        return "cat[" + " | ".join(conv.describe() for conv in self.convs) + "]"


@dataclass(frozen=True, eq=False)
class MixedConv:
    """y = cat([conv_1(x[:, S_1]), …, conv_k(x[:, S_k])], axis 1): x's channels split into
    consecutive parts S_i (conv_i reads conv_i.in_channels of them, in order, covering x), one conv
    per part, their outputs joined along the channels (MixNet's mixed depthwise convs: split → one
    depthwise conv per kernel size → cat). One input, as a chain layer."""

    convs: tuple

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [conv.in_channels for conv in self.convs]
        if sum(sizes) != x.shape[1]:
            raise ValueError(f"the convs read {sum(sizes)} channels, the input has {x.shape[1]}")
        return torch.cat([conv.apply(part) for conv, part in zip(self.convs, torch.split(x, sizes, 1))], 1)

    def to(self, dtype: torch.dtype) -> "MixedConv":
        return MixedConv(tuple(conv.to(dtype) for conv in self.convs))

    @property
    def out_channels(self) -> int:
        return sum(conv.out_channels for conv in self.convs)

    def describe(self) -> str:
        return "mixed[" + " | ".join(conv.describe() for conv in self.convs) + "]"


def channels_last_input(layer) -> bool:
    """Whether a chain starting with `layer` reads its channels from the last axis."""
    return isinstance(layer, (Linear, LayerNorm)) or (isinstance(layer, Affine) and layer.axis == -1)


Layer = Union[ConvSpec, ZeroPad, Affine, Activation, FusedSepConv, FusedMBConv, ParallelBranches, Linear, LayerNorm,
              Permute, Flatten, Concat, MixedConv, TransposedConv, DepthToSpace]


def run_chain(layers: "list[Layer] | tuple[Layer, ...]", x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """Evaluate a chain layer by layer (the ground truth the algebra is tested against); `more`:
    the other inputs of a first layer that takes several (a Concat's)."""
    for i, layer in enumerate(layers):
        x = layer.apply(x, *more) if i == 0 and more else layer.apply(x)
    return x


def output_shape(layer, shape: tuple) -> tuple | None:
    """The full shape `layer` produces from an input of `shape`, or None where that is not worked
    out here. A ConvSpec reads NCHW, or [N, C] as a linear."""
    shape = tuple(shape)
    if isinstance(layer, (Affine, Activation, LayerNorm)):
        return shape
    if isinstance(layer, Linear):
        return shape[:-1] + (layer.spec.out_channels,)
    if isinstance(layer, ConvSpec):
        return (shape[0], layer.out_channels) if len(shape) == 2 else \
            (shape[0], layer.out_channels, *layer.output_hw(*shape[2:]))
    if isinstance(layer, ZeroPad):
        t, b, l, r = layer.padding
        return shape[:-2] + (shape[-2] + t + b, shape[-1] + l + r)
    if isinstance(layer, Permute):
        return tuple(shape[p] for p in layer.perm)
    if isinstance(layer, Flatten):
        s, e = layer.start % len(shape), layer.end % len(shape)
        return shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]
    if isinstance(layer, FusedSepConv):
        return (shape[0], layer.pw.out_channels, *layer.dw.output_hw(*shape[2:]))
    if isinstance(layer, FusedMBConv):
        return (shape[0], layer.pw.out_channels, *layer.conv.output_hw(*shape[2:]))
    if isinstance(layer, MixedConv):
        return (shape[0], layer.out_channels, *layer.convs[0].output_hw(*shape[2:]))
    if isinstance(layer, ParallelBranches) and all(layer.branches):
        return chain_shapes(layer.branches[0], shape)[-1]
    return None


def chain_shapes(layers, shape: tuple) -> list:
    """The full shape after each layer of a chain run on an input of `shape` (None from the first
    layer whose shape is not worked out on)."""
    shapes = []
    for layer in layers:
        shape = output_shape(layer, shape) if shape is not None else None
        shapes.append(shape)
    return shapes


def describe_chain(layers) -> str:
    return " → ".join(layer.describe() for layer in layers)
