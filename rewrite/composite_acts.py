"""Activations written out over several elementwise nodes: the pattern, written once for both
formats over a small query protocol that each front end answers for its own nodes.

    x → x + 3 → clip(·, 0, 6) → x·(·) → (·)/6 | (·)·(1/6)     = hardswish(x)
    x → x + 3 → clip(·, 0, 6) → (·)/6 | (·)·(1/6) → x·(·)     = hardswish(x)
    x → x + 3 → clip(·, 0, 6) → (·)/6 | (·)·(1/6)             = hardsigmoid(x)

since hardsigmoid(x) = clip(x + 3, 0, 6)/6 and hardswish(x) = x·hardsigmoid(x). Paddle2ONNX below
opset 14 writes every hardswish this way, as do torch's export of x·relu6(x + 3)/6, timm's and
Keras' hard_swish through tf2onnx, and onnx2torch's conversion of any of them back to PyTorch
(aten add → hardtanh → mul → div). Either operand order of each add and product; the constants
one-element floats that do not change the dtype or rank of what they meet, exactly 3 and 6 (1/6 to
the rounding of the dtype the product computes in); every value inside read by the next node only
(and not a graph output), so that the nodes can be replaced as one; and x itself not written in
place between the first node and the last (x is read twice, by the add and by the product).

A front end answers five questions about its nodes (`ElementwiseGraph`); `hard_composite` reads
nothing else, so the ONNX view (passes/onnx/lift.py) and the FX view (passes/fx/view.py) find the
same activations. x·(x + 3 clipped) alone, without the sixth, is 6·hardswish and is not matched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Protocol


@dataclass(frozen=True)
class ScalarOp:
    """A node computing x ∘ c, with ∘ one of add | mul | div (c ∘ x for add and mul too), x a float
    activation and c a one-element float constant that leaves x's dtype and rank as they are; eps:
    the machine epsilon of the dtype the node computes in."""
    kind: str
    x: Hashable
    c: float
    eps: float


@dataclass(frozen=True)
class Composite:
    act: str                 # "hardswish" | "hardsigmoid"
    nodes: tuple             # the format's nodes, in the order they compute
    output: Hashable         # the value the last node produces
    input: Hashable          # x


class ElementwiseGraph(Protocol):
    def scalar_op(self, node) -> ScalarOp | None:
        """What `node` computes when it is an activation ∘ a one-element float constant."""

    def sole_reader(self, value):
        """The one node reading `value`, or None (several, none, or it is a graph output)."""

    def output(self, node) -> Hashable:
        """The value `node` produces."""

    def is_relu6(self, node, value) -> bool:
        """Whether `node` computes clip(value, 0, 6)."""

    def product_of(self, node) -> tuple | None:
        """(a, b) when `node` computes a·b of two activations, else None."""

    def unchanged(self, value) -> bool:
        """Whether nothing writes `value` in place (itself or through a view of it)."""


def hard_composite(g: ElementwiseGraph, add) -> Composite | None:
    """The hardswish or hardsigmoid whose first node is `add` (x + 3), if it is written out as above."""
    first = g.scalar_op(add)
    if first is None or first.kind != "add" or first.c != 3.0:
        return None
    x = first.x
    if not g.unchanged(x):
        return None
    clip = g.sole_reader(g.output(add))
    if clip is None or not g.is_relu6(clip, g.output(add)):
        return None
    nxt = g.sole_reader(g.output(clip))
    if nxt is None:
        return None
    if _is_product(g, nxt, x, g.output(clip)):
        sixth = g.sole_reader(g.output(nxt))
        if sixth is not None and _is_sixth(g, sixth, g.output(nxt)):
            return Composite("hardswish", (add, clip, nxt, sixth), g.output(sixth), x)
        return None
    if not _is_sixth(g, nxt, g.output(clip)):
        return None
    mul = g.sole_reader(g.output(nxt))
    if mul is not None and _is_product(g, mul, x, g.output(nxt)):
        return Composite("hardswish", (add, clip, nxt, mul), g.output(mul), x)
    return Composite("hardsigmoid", (add, clip, nxt), g.output(nxt), x)


def _is_sixth(g: ElementwiseGraph, node, value) -> bool:
    """`node` computes value/6: a division by exactly 6, or a product by 1/6 to the rounding of
    the constant's dtype."""
    op = g.scalar_op(node)
    if op is None or op.x is not value:
        return False
    if op.kind == "div":
        return op.c == 6.0
    return op.kind == "mul" and abs(op.c - 1 / 6) <= op.eps / 6


def _is_product(g: ElementwiseGraph, node, a, b) -> bool:
    factors = g.product_of(node)
    return factors is not None and {id(factors[0]), id(factors[1])} == {id(a), id(b)}
