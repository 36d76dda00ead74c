"""Build a fuzz model and its inputs from a model spec (a JSON-able dict).

    {"in_ch": C, "hw": [H, W], "batch": B, "seed": S, "container": "list"|"seq", "blocks": [block, ...]}

A "head" block (generator version 2 only, see generate.py) ends the model: a global pool to
[N, C], then Linears over [N, C] with optional BatchNorm1d before / after and an activation
between two Linears (a classifier head; exported to ONNX as Gemm). No block follows it.

Blocks run in sequence; each is a dict with a "type" from BLOCKS, its conv units (units.py)
inline, so removing a block or a unit leaves a spec that still builds (or raises InvalidSpec).
The builder reads channel counts and sizes from the tensor reaching each block, so the spec
carries no shapes but the input's. Every model is returned in eval mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .units import (MAX_CH, InvalidSpec, _gen, _randn, batchnorm, batchnorm1d, build_unit, build_units, make_act,
                    run_units)

BLOCKS = ("unit", "residual", "ir", "se", "shared", "tied", "functional", "concat", "parallel", "cond",
          "layerscale", "affine", "bn", "act", "tap", "pool", "head")
# blocks whose output may be their input tensor itself
PASS_THROUGH = ("tap", "act", "cond", "parallel")


class Residual(nn.Module):
    """x + [gamma ·] body(x)."""

    def __init__(self, body, gamma=None):
        super().__init__()
        self.body, self.gamma = body, gamma

    def forward(self, x):
        y = run_units(self.body, x)
        return x + (self.gamma * y if self.gamma is not None else y)


class SqueezeExcite(nn.Module):
    """x · gate(fc2(act(fc1(mean(x))))), pooled by mean or adaptive_avg_pool2d."""

    def __init__(self, c, b: dict):
        super().__init__()
        g, r = _gen(b["seed"]), max(1, c // b.get("reduce", 4))
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1, bias=b.get("bias", True)), nn.Conv2d(r, c, 1)
        for conv in (self.fc1, self.fc2):
            with torch.no_grad():
                conv.weight.copy_(_randn(conv.weight.shape, g, 1.0 / conv.weight.shape[1] ** 0.5))
                if conv.bias is not None:
                    conv.bias.copy_(_randn(conv.bias.shape, g, 0.3))
        self.act, self.gate, self.pool = make_act(b.get("act", "relu")), b.get("gate", "sigmoid"), b.get("pool", "mean")

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True) if self.pool == "mean" else F.adaptive_avg_pool2d(x, 1)
        s = self.fc2(self.act(self.fc1(s)))
        return x * (torch.sigmoid(s) if self.gate == "sigmoid" else F.hardsigmoid(s))


class InvertedResidual(nn.Module):
    """[pw expand] → dw → [SE] → pw project, + x when the shape allows and the spec asks."""

    def __init__(self, expand, dw, se, project, residual):
        super().__init__()
        self.expand, self.dw, self.se, self.project, self.residual = expand, dw, se, project, residual

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        y = self.se(y) if self.se is not None else y
        y = self.project(y)
        return x + y if self.residual else y


class Shared(nn.Module):
    """One unit called `times` times in a row (a module reused)."""

    def __init__(self, unit, times):
        super().__init__()
        self.unit, self.times = unit, times

    def forward(self, x):
        for _ in range(self.times):
            x = self.unit(x)
        return x


class Tied(nn.Module):
    """unit → act → a second conv whose weight is the same Parameter as the unit's conv."""

    def __init__(self, unit, other, act):
        super().__init__()
        self.unit, self.other, self.act = unit, other, act

    def forward(self, x):
        return self.other(self.act(self.unit(x)))


class Functional(nn.Module):
    """unit → act → F.conv2d with the unit's conv weight and bias read off the module [+ the unit's output]."""

    def __init__(self, unit, act, add):
        super().__init__()
        self.unit, self.act, self.add = unit, act, add

    def forward(self, x):
        y = self.unit(x)
        c = self.unit.conv
        pad = (c.dilation[0] * (c.kernel_size[0] - 1) // 2, c.dilation[1] * (c.kernel_size[1] - 1) // 2)
        z = F.conv2d(self.act(y), c.weight, c.bias, 1, pad, c.dilation, c.groups)
        return z + y if self.add else z


class Concat(nn.Module):
    """cat([x,] branch_1(x), branch_2(x), ...) along channels."""

    def __init__(self, branches, identity):
        super().__init__()
        self.branches, self.identity = branches, identity

    def forward(self, x):
        outs = [x] if self.identity else []
        return torch.cat(outs + [run_units(b, x) for b in self.branches], dim=1)


class Parallel(nn.Module):
    """act(±branch_1(x) ± branch_2(x) ... [+ x]): parallel conv branches summed (RepVGG-style)."""

    def __init__(self, branches, signs, identity, act):
        super().__init__()
        self.branches, self.signs, self.identity, self.act = branches, signs, identity, act

    def forward(self, x):
        y = x if self.identity else None
        for sign, branch in zip(self.signs, self.branches):
            z = branch(x)
            y = (z if sign > 0 else -z) if y is None else (y + z if sign > 0 else y - z)
        return self.act(y)


class Cond(nn.Module):
    """A data-dependent branch: `if x.mean() > thresh` runs one body (an nn.Sequential), else the other."""

    def __init__(self, then, other, thresh):
        super().__init__()
        self.then, self.other, self.thresh = then, other, thresh

    def forward(self, x):
        if x.mean() > self.thresh:
            return self.then(x)
        return self.other(x)


class LayerScale(nn.Module):
    """x · gamma, gamma a Parameter of shape (C, 1, 1)."""

    def __init__(self, gamma):
        super().__init__()
        self.gamma = gamma

    def forward(self, x):
        return x * self.gamma


class Affine(nn.Module):
    """x · s + t with constant per-channel buffers."""

    def __init__(self, s, t):
        super().__init__()
        self.register_buffer("s", s)
        self.register_buffer("t", t)

    def forward(self, x):
        return x * self.s + self.t


class Tap(nn.Identity):
    """Marks an extra model output: the tensor here is returned as well."""


class Head(nn.Module):
    """Global pool ("mean": x.mean((2, 3)); "adaptive": AdaptiveAvgPool2d(1) → flatten), then
    layers over [N, C]."""

    def __init__(self, pool: str, layers):
        super().__init__()
        self.how = pool
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "adaptive" else None
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        x = x.mean((2, 3)) if self.pool is None else torch.flatten(self.pool(x), 1)
        return self.layers(x)


def build_head(b: dict, c: int):
    """(Head, its output shape as (C, 1, 1)) for a head spec on a C-channel input."""
    g, layers = _gen(b["seed"]), []
    for layer in b["layers"]:
        if layer["kind"] == "bn":
            layers.append(batchnorm1d(c, g))
        elif layer["kind"] == "act":
            layers.append(make_act(layer["act"]))
        elif layer["kind"] == "linear":
            out = min(int(layer["out"]), MAX_CH)
            lin = nn.Linear(c, out, bias=bool(layer.get("bias", True)))
            with torch.no_grad():
                lin.weight.copy_(_randn((out, c), g, c ** -0.5))
                if lin.bias is not None:
                    lin.bias.copy_(_randn(out, g, 0.2))
            layers.append(lin)
            c = out
        else:
            raise InvalidSpec(f"unknown head layer {layer['kind']!r}")
    return Head(b.get("pool", "mean"), layers), (c, 1, 1)


class FuzzNet(nn.Module):
    """The blocks in sequence; returns the last tensor, plus every tapped one. With
    container="seq" the blocks are an nn.Sequential that forward() calls (taps return nothing
    extra then), else an nn.ModuleList that forward() loops over."""

    def __init__(self, blocks, container: str = "list"):
        super().__init__()
        self.seq = container == "seq"
        self.blocks = nn.Sequential(*blocks) if self.seq else nn.ModuleList(blocks)

    def forward(self, x):
        if self.seq:
            return self.blocks(x)
        taps = []
        for b in self.blocks:
            x = b(x)
            if isinstance(b, Tap):
                taps.append(x)
        return (x, *taps) if taps else x


def build_block(b: dict, c: int, h: int, w: int):
    """(module, output shape) for block spec `b` on a [C, H, W] input."""
    t = b["type"]
    if t == "unit":
        return build_unit(b["unit"], c, h, w)
    if t == "residual":
        body, _ = build_units(b["body"], c, h, w, keep=True)
        gamma = nn.Parameter(torch.rand(c, 1, 1, generator=_gen(b["seed"])) + 0.5) if b.get("scale") else None
        return Residual(body, gamma), (c, h, w)
    if t == "ir":
        expand, shape = (None, (c, h, w)) if b.get("expand") is None else build_unit(b["expand"], c, h, w)
        dw, shape = build_unit(b["dw"], *shape)
        se = SqueezeExcite(shape[0], b["se"]) if b.get("se") else None
        project, shape = build_unit(b["project"], *shape)
        return InvertedResidual(expand, dw, se, project, bool(b.get("residual")) and shape == (c, h, w)), shape
    if t == "se":
        return SqueezeExcite(c, b), (c, h, w)
    if t == "shared":
        unit, _ = build_unit(b["unit"], c, h, w, keep=True)
        return Shared(unit, b.get("times", 2)), (c, h, w)
    if t == "tied":
        unit, _ = build_unit(b["unit"], c, h, w, keep=True)
        conv = unit.conv
        pad = tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
        other = nn.Conv2d(c, c, conv.kernel_size, 1, pad, conv.dilation, conv.groups, bias=True)
        other.weight = conv.weight                       # tied: one Parameter, two convs
        with torch.no_grad():
            other.bias.copy_(_randn(c, _gen(b["seed"]), 0.1))
        return Tied(unit, other, make_act(b.get("act", "relu"))), (c, h, w)
    if t == "functional":
        unit, _ = build_unit(b["unit"], c, h, w, keep=True)
        return Functional(unit, make_act(b.get("act", "relu")), bool(b.get("add"))), (c, h, w)
    if t == "concat":
        branches, cout = nn.ModuleList(), c if b.get("identity") else 0
        for units in b["branches"]:
            mods, (cb, hb, wb) = build_units(units, c, h, w)
            if (hb, wb) != (h, w):
                raise InvalidSpec("a concat branch changed the spatial size")
            branches.append(mods)
            cout += cb
        if cout == 0:
            raise InvalidSpec("an empty concat")
        return Concat(branches, bool(b.get("identity"))), (cout, h, w)
    if t == "parallel":
        mods, shapes = nn.ModuleList(), set()
        for u in b["branches"]:
            m, shape = build_unit(u, c, h, w)
            mods.append(m)
            shapes.add(shape)
        identity = bool(b.get("identity")) and shapes <= {(c, h, w)}
        if len(shapes) != 1 and not (identity and not mods):
            raise InvalidSpec(f"parallel branches of shapes {sorted(shapes)}")
        signs = (list(b.get("signs", [])) + [1] * len(mods))[:len(mods)]
        return Parallel(mods, signs, identity, make_act(b.get("act", "identity"))), shapes.pop() if shapes else (c, h, w)
    if t == "cond":
        then, _ = build_units(b["then"], c, h, w, keep=True)
        other, _ = build_units(b["else"], c, h, w, keep=True)
        return Cond(nn.Sequential(*then), nn.Sequential(*other), b.get("thresh", 0.0)), (c, h, w)
    if t == "layerscale":
        g = _gen(b["seed"])
        return LayerScale(nn.Parameter((torch.rand(c, 1, 1, generator=g) + 0.5) * torch.sign(_randn((c, 1, 1), g) + 0.5))), (c, h, w)
    if t == "affine":
        g = _gen(b["seed"])
        return Affine(torch.rand(c, 1, 1, generator=g) + 0.5, _randn((c, 1, 1), g, 0.3)), (c, h, w)
    if t == "bn":
        return batchnorm(c, _gen(b["seed"])), (c, h, w)
    if t == "act":    # in place: on a tensor a Tap may have returned already, which then changes too
        return make_act(b["act"], b.get("inplace", False)), (c, h, w)
    if t == "tap":
        return Tap(), (c, h, w)
    if t == "head":
        return build_head(b, c)
    if t == "pool":
        if h < 2 or w < 2:
            raise InvalidSpec("pooling a map smaller than 2x2")
        return (nn.MaxPool2d(2) if b.get("how") == "max" else nn.AvgPool2d(2)), (c, h // 2, w // 2)
    raise InvalidSpec(f"unknown block type {t!r}")


def build_model(spec: dict) -> nn.Module:
    """The eval-mode FuzzNet of a model spec (InvalidSpec if it cannot be built)."""
    c, (h, w) = spec["in_ch"], spec["hw"]
    blocks, may_be_input = [], True
    for i, b in enumerate(spec["blocks"]):
        if b["type"] == "head" and i != len(spec["blocks"]) - 1:
            raise InvalidSpec("a block after the [N, C] head")
        if b["type"] == "act" and may_be_input:
            b = dict(b, inplace=False)   # an in-place op on the caller's own input tensor is no model
        m, (c, h, w) = build_block(b, c, h, w)
        blocks.append(m)
        may_be_input = may_be_input and b["type"] in PASS_THROUGH
    if not blocks:
        raise InvalidSpec("a model without blocks")
    return FuzzNet(blocks, spec.get("container", "list")).eval()


def random_input(spec: dict, batch: int, seed: int, hw=None, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """A seeded float32 input [batch, in_ch, H, W] for the model of `spec`."""
    h, w = hw or spec["hw"]
    g = _gen(seed)
    return torch.randn(batch, spec["in_ch"], h, w, generator=g) * scale + shift


def example_input(spec: dict) -> torch.Tensor:
    """The example input optimize() sees (the fresh inputs of a case differ from it)."""
    return random_input(spec, spec["batch"], spec["seed"] + 1)
