"""Conv units, the building brick of the fuzzer's models: [pad] → conv → [BN] → act → [scale].

(blocks.py builds the composite blocks and the model around them; each unit has its own
"seed" for its weights.) A conv "unit" is

    {"kind": dense|dw|pw|grouped, "k": 1|3|5, "stride", "dilation", "out" (None: keep C),
     "mult" (dw), "groups" (grouped), "bias", "pad": {...}, "factor": None|dw_pw|pw_dw,
     "bn", "act", "inplace", "scale", "fconv", "seed"}

and ``pad`` says how the conv is padded: ``{"how": "sym"|"hw"|"same"|"mode"|"explicit",
"pads": [l, r, t, b], "p": [ph, pw], "mode": constant|reflect|replicate|circular,
"value": v, "style": "module"|"functional"}``. A spec the builder cannot realise at the shapes
it meets (an output of size 0, a shape-keeping body that changes the shape) raises InvalidSpec.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_CH = 32
ACTS = ("relu", "relu6", "silu", "hardswish", "gelu", "sigmoid", "identity")


class InvalidSpec(ValueError):
    """The spec cannot be built at the shapes it meets (the shrinker treats it as 'passes')."""


def make_act(name: str, inplace: bool = False) -> nn.Module:
    """The activation module called `name` (in-place where torch has that variant)."""
    table = {"relu": lambda: nn.ReLU(inplace), "relu6": lambda: nn.ReLU6(inplace),
             "silu": lambda: nn.SiLU(inplace), "hardswish": lambda: nn.Hardswish(inplace),
             "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
    return table[name]()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


def _randn(shape, g, scale=1.0) -> torch.Tensor:
    return torch.randn(shape, generator=g) * scale


def batchnorm(c: int, g: torch.Generator) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm2d with random running statistics and a non-trivial affine."""
    return _drawn(nn.BatchNorm2d(c), c, g)


def batchnorm1d(c: int, g: torch.Generator) -> nn.BatchNorm1d:
    """An eval-mode BatchNorm1d over [N, C], statistics and affine drawn as batchnorm's."""
    return _drawn(nn.BatchNorm1d(c), c, g).eval()


def _drawn(bn, c: int, g: torch.Generator):
    """`bn` with random running statistics and affine (the draws in a fixed order: replayed seeds
    depend on it)."""
    with torch.no_grad():
        bn.running_mean.copy_(_randn(c, g, 0.5))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        bn.weight.copy_((torch.rand(c, generator=g) + 0.5) * torch.sign(_randn(c, g) + 0.3))
        bn.bias.copy_(_randn(c, g, 0.2))
    return bn


def init_conv(conv: nn.Conv2d, g: torch.Generator, factor: str | None = None, rank: int = 1) -> None:
    """Random weights of unit gain; `factor` makes a dense conv exactly dw→pw or pw→dw."""
    w = conv.weight
    cout, cin_g, kh, kw = w.shape
    with torch.no_grad():
        if factor == "dw_pw" and conv.groups == 1:
            dw = _randn((cin_g * rank, kh, kw), g, 1.0 / kh)
            pw = _randn((cout, cin_g * rank), g, 1.0 / math.sqrt(cin_g * rank))
            w.copy_(torch.einsum("oim,imhw->oihw", pw.view(cout, cin_g, rank), dw.view(cin_g, rank, kh, kw)))
        elif factor == "pw_dw" and conv.groups == 1:
            dw = _randn((cout, kh, kw), g, 1.0 / kh)
            pw = _randn((cout, cin_g), g, 1.0 / math.sqrt(cin_g))
            w.copy_(pw[:, :, None, None] * dw[:, None])
        else:
            w.copy_(_randn(w.shape, g, 1.0 / math.sqrt(cin_g * kh * kw)))
        if conv.bias is not None:
            conv.bias.copy_(_randn(cout, g, 0.1))


class Unit(nn.Module):
    """[explicit pad] → conv → [BatchNorm] → activation → [· layer scale]."""

    def __init__(self, conv, pad=None, fpad=None, bn=None, act=None, scale=None, fconv=False):
        super().__init__()
        self.pad, self.fpad, self.conv, self.bn, self.fconv = pad, fpad, conv, bn, fconv
        self.act = act if act is not None else nn.Identity()
        self.scale = scale

    def forward(self, x):
        if self.pad is not None:
            x = self.pad(x)
        if self.fpad is not None:
            pads, mode, value = self.fpad
            x = F.pad(x, pads, value=value) if mode == "constant" else F.pad(x, pads, mode=mode)
        c = self.conv
        if self.fconv:
            x = F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
        else:
            x = c(x)
        if self.bn is not None:
            x = self.bn(x)
        x = self.act(x)
        return x * self.scale if self.scale is not None else x


def _pad_module(pads, mode, value):
    if mode == "constant":
        return nn.ZeroPad2d(pads) if value == 0 else nn.ConstantPad2d(pads, value)
    return {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "circular": nn.CircularPad2d}[mode](pads)


def _conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def build_unit(u: dict, c: int, h: int, w: int, keep: bool = False):
    """(Unit, (C', H', W')) for unit spec `u` on a [C, H, W] input; keep: the shape must not change."""
    g = _gen(u["seed"])
    kind, k, s, d = u["kind"], u["k"], u["stride"], u["dilation"]
    if kind == "pw":
        k = d = 1
    if kind == "dw":
        mult = u.get("mult", 1) if c * u.get("mult", 1) <= MAX_CH else 1
        cout, groups = c * mult, c
    else:
        cout = u.get("out") or c
        groups = 1
        if kind == "grouped":
            groups = math.gcd(math.gcd(c, cout), u.get("groups", 2))
    pad, conv_pad, padding_mode = u["pad"], (0, 0), "zeros"
    pad_mod = fpad = None
    ph = pw = 0                         # explicit (left+right, top+bottom) widths
    how = pad["how"] if k > 1 or pad["how"] == "explicit" else "sym"
    if how == "sym":
        conv_pad = (pad.get("p", [d * (k - 1) // 2])[0],) * 2
    elif how == "hw":
        conv_pad = tuple(pad["p"])
    elif how == "same":
        if s != 1:
            raise InvalidSpec("padding='same' needs stride 1")
        conv_pad = "same"
    elif how == "mode":
        conv_pad, padding_mode = (d * (k - 1) // 2,) * 2, pad["mode"]
    else:  # explicit: a pad op before the conv
        l, r, t, b = pad["pads"]
        mode = pad.get("mode", "constant")
        if mode in ("reflect", "circular") and max(l, r) >= w or mode in ("reflect", "circular") and max(t, b) >= h:
            raise InvalidSpec(f"{mode} pad wider than the input")
        if pad.get("style") == "module":
            pad_mod = _pad_module((l, r, t, b), mode, pad.get("value", 0.0))
        else:
            fpad = ((l, r, t, b), mode, pad.get("value", 0.0))
        ph, pw = t + b, l + r
    if padding_mode != "zeros" and (conv_pad[0] >= h or conv_pad[1] >= w):
        raise InvalidSpec("padding_mode pad wider than the input")
    conv = nn.Conv2d(c, cout, k, s, conv_pad, d, groups=groups, bias=u["bias"], padding_mode=padding_mode)
    init_conv(conv, g, u.get("factor") if kind == "dense" and k > 1 else None, u.get("factor_rank", 1))
    if conv_pad == "same":
        ho, wo = h, w
    else:
        ho = _conv_out(h + ph, k, s, conv_pad[0], d)
        wo = _conv_out(w + pw, k, s, conv_pad[1], d)
    if ho < 1 or wo < 1:
        raise InvalidSpec(f"conv output of size {ho}x{wo}")
    if keep and (cout, ho, wo) != (c, h, w):
        raise InvalidSpec(f"a shape-keeping unit maps {(c, h, w)} to {(cout, ho, wo)}")
    bn = batchnorm(cout, g) if u.get("bn") else None
    act = make_act(u.get("act", "identity"), u.get("inplace", False))
    scale = nn.Parameter(torch.rand(cout, 1, 1, generator=g) + 0.5) if u.get("scale") else None
    return Unit(conv, pad_mod, fpad, bn, act, scale, u.get("fconv", False)), (cout, ho, wo)


def build_units(units: list, c: int, h: int, w: int, keep: bool = False):
    """A ModuleList of units in sequence, and the shape they produce."""
    mods = nn.ModuleList()
    for u in units:
        m, (c, h, w) = build_unit(u, c, h, w, keep)
        mods.append(m)
    return mods, (c, h, w)


def run_units(mods, x):
    for m in mods:
        x = m(x)
    return x
