"""What every rule is made of, and the records it passes on.

A rule (one file in this package) is a matcher over the neutral view (rewrite/view.py) that
yields one `Match` per site it considers, and a planner that turns a Match into a `Plan` (the
rewrite, in chain IR) or a `Decline` (the reason it is not worth it or not possible). It
registers itself with `register(Rule(...))`; the package collects every rule into `RULES`, which
the options, the report, the command line and the pass manager read. Adding a rule is one file
here and its test in tests/rules/.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..ir import describe_chain
from ..view import Op, View


@dataclass
class Plan:
    """Replace `before` by `after` (same function, within `tolerance` when not None)."""

    kind: str
    before: list
    after: list
    predicted_speedup: float
    note: str = ""
    tolerance: float | None = None   # set for approximate rewrites: the user's error budget
    removes_work: bool = False       # the rewrite only removes ops, as a fold does: never timed
    fitted_error: float | None = None   # an approximate rewrite's relative output error on held-out samples
    reference: list | None = None    # an approximate rewrite's own function (the fit as one chain): the site
                                     # check compares the lowered form with it, not with the original
    stand_ins: dict = field(default_factory=dict)   # a removed value whose shape is read elsewhere → the
                                     # index in `after` of the layer producing its shape (−1: the input)
    alternatives: tuple = ()         # other chains computing the same function as `after`: with the measured
                                     # cost model each is checked and timed against `after` where the model
                                     # runs, and the fastest is lowered (decouple: r parallel dw→pw pairs
                                     # against one dw conv with multiplier r); otherwise `after` stands

    @property
    def describe_before(self) -> str:
        return describe_chain(self.before)

    @property
    def describe_after(self) -> str:
        return describe_chain(self.after)


@dataclass
class Decline:
    """The site stays as it is, for `reason`. With `until` (a later pass's kind) the decline is
    provisional: it holds only while that pass is still to run; once it has run (or when it will
    not run), the pass manager plans the site again on the graph as it is then and applies `then`,
    the plan for that case, if the site is still there. fold keeps a TF-"same" pad before a
    depthwise conv this way, for the fuse pass, and absorbs it if the conv did not fuse. The
    planner itself never needs to know which passes have run."""

    kind: str
    reason: str
    before: list
    predicted_speedup: float | None = None
    until: str | None = None
    then: "Plan | None" = None

    @property
    def describe_before(self) -> str:
        return describe_chain(self.before)


@dataclass(eq=False)
class Match:
    """One site a matcher considered: the ops a rewrite would replace, the chain in IR, the values
    it reads and produces, or the reason the matcher already declines it (named in the graph's
    own terms). `parts` carries a rule's own typed record of what it matched (fuse: FuseParts)."""

    kind: str                   # the rule's kind
    name: str                   # the site's name (its head op's)
    ops: list                   # the ops a rewrite replaces, in order; ops[-1] produces `output`
    layers: list = field(default_factory=list)   # the chain in IR, as the planner sees it
    input: object = None        # the value the chain reads
    output: object = None       # the value the chain produces
    reason: str | None = None   # set: declined by the matcher, with this reason
    residual: object = None     # a value added at the chain's end (fuse), or None
    parts: object = None        # the rule's typed record of the match, where it needs one
    more_inputs: tuple = ()     # the other inputs of a site that reads several (a Concat's branches)
    whole: object = None        # where the site is not a chain of layers (a squeeze-excitation; a residual
                                # added inside the record): one record computing it all, apply(input[,
                                # residual]) with .to(dtype); a format whose reference is lifted
                                # (ONNX) checks the site against it in float64 instead of `layers`

    @property
    def layout(self) -> str:
        """"nc" where the match's convs are linears over [N, C] (lowered as linears), else "nchw"."""
        return "nc" if any(op.kind == "conv" and op.layout == "nc" for op in self.ops) else "nchw"

    @property
    def runtime_inputs(self) -> list:
        """The values the chain reads at run time: its input (and the other inputs of a multi-input
        site), and the residual it adds."""
        return [self.input, *self.more_inputs] + ([self.residual] if self.residual is not None else [])

    def nodes_in(self, graph_nodes) -> list:
        """The format nodes of the match's ops, in the graph's order."""
        chosen = {id(node) for op in self.ops for node in op.nodes}
        return [node for node in graph_nodes if id(node) in chosen]

    @property
    def before(self) -> str:
        return " → ".join(op.describe() for op in self.ops) if self.reason else describe_chain(self.layers)


def declined(kind: str, op: Op, reason: str, ops=None) -> Match:
    """A match the matcher itself declines, named after `op`."""
    return Match(kind, op.name, ops or [op], reason=reason)


def conv_reason(op: Op, linear_ok: bool = False) -> str | None:
    """Why the conv op cannot be rewritten here, or None. A linear over [N, C] (layout "nc") is
    folded and collapsed (linear_ok), never merged, factorized or fused."""
    if op.reason:
        return op.reason
    if op.layout == "nhwc":
        return "a linear over a channels-last tensor is not rewritten"
    if op.layout == "nc" and not linear_ok:
        return "a linear over [N, C] is only folded into or collapsed with its neighbours"
    return None


def common_name(names: list[str]) -> str:
    """The longest common module path of a site's ops (a block's name), else the first name."""
    prefix = os.path.commonprefix(names)
    if prefix not in names:
        cut = max(prefix.rfind("."), prefix.rfind("/"))
        prefix = prefix[:cut] if cut > 0 else ""
    return prefix or names[0]


def never_skipped(options) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    """One rewrite kind.

    order: its place in the pipeline (rules run in increasing order).
    matches(view): every site it considers, as Matches.
    plan(match, input_shape, dtype, options): a Plan or a Decline for a Match the matcher did not
        decline; input_shape is NCHW (a linear's [N, C] comes as [N, C, 1, 1]).
    timed: with the measured cost model, an applied site is timed both ways and kept only when
        min_speedup faster (never for a Plan that removes_work).
    skipped(options): why the whole pass does not run with these options, or None.
    statistics(match): where set, a fresh accumulator (`.add(activation)`) of what the planner needs to
        know about the activations reaching a site over the calibration samples; the pass manager
        streams the fit and held-out samples through the graph and hands the planner the pair of
        accumulators as match.parts (rule decouple: input-patch moments).
    owns(op): whether `op` is what this rule is there to remove (fold: a BatchNorm or per-channel
        affine; fold_norm: a LayerNorm's affine). Such an op still in the result with no site of
        any rule over it gets a "left" record saying why (nothing is left silently), or None.
    conservative: the whole-model retry ladder's last rung before no rewrite at all keeps only the
        sites of conservative rules (fold: exact up to rounding, and what every deployment path
        already does), when bisection found no culprit set.
    channels_last: its applied sites want NHWC activations (fuse: the fused kernel reads and writes
        NHWC), so with channels_last=None (auto) the FX front end lays the model's conv weights out
        channels_last once such a site was applied (passes/fx/layout.py).
    captures: the view op kinds whose input activation its site checks read, besides those every
        front end keeps (conv, pad, affine, norm and slice inputs, add / sub operands): both front
        ends capture them too (a rule over permutes names "layout", one over activations "act").
    """

    kind: str
    order: int
    matches: Callable[[View], Iterator[Match]]
    plan: Callable
    timed: bool
    summary: str
    skipped: Callable[[object], str | None] = never_skipped
    statistics: Callable | None = None
    owns: Callable[[Op], bool] | None = None
    conservative: bool = False
    channels_last: bool = False
    captures: tuple = ()


_REGISTERED: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    if rule.kind in _REGISTERED and _REGISTERED[rule.kind] is not rule:
        raise ValueError(f"two rules of kind {rule.kind!r}")
    _REGISTERED[rule.kind] = rule
    return rule


def registered() -> dict[str, Rule]:
    """The registered rules by kind, in pipeline order."""
    return dict(sorted(_REGISTERED.items(), key=lambda item: item[1].order))


# -- the channel axis through permutes and flattens (fold_linear, fold_norm) -------------------

def moved_axis(shape_op, axis: int, shape) -> int | None:
    """Where the channel axis `axis` of a tensor of `shape` lands after `shape_op` (a Permute or
    Flatten record), or None when the op mixes the channels with another axis."""
    from ..ir import Permute
    if shape is None:
        return None
    axis %= len(shape)
    if isinstance(shape_op, Permute):
        return shape_op.perm.index(axis) if len(shape_op.perm) == len(shape) else None
    start, end = shape_op.start, shape_op.end
    if axis < start:
        return axis
    if axis > end:
        return axis - (end - start)
    return start if all(shape[d] == 1 for d in range(start, end + 1) if d != axis) else None


@dataclass
class Walk:
    """The permutes and flattens after a value, each its value's only reader, the op they lead to
    (`end`, None when a value has several readers or is a graph output) and the channel axis at
    that op's input (None when a flatten mixed the channels with another axis)."""

    shape_ops: list
    end: Op | None
    axis: int | None
    value: object


def walk_shape_ops(view: View, value, axis: int | None) -> Walk:
    shape_ops = []
    while True:
        user = view.sole_user(value)
        if user is None or user.kind not in ("layout", "reshape") or user.shape_op is None or axis is None:
            return Walk(shape_ops, user, axis, value)
        axis = moved_axis(user.shape_op, axis, view.shape(value))
        shape_ops.append(user)
        value = user.output


def reads_axis(op: Op, axis: int | None, shape) -> bool:
    """Whether a conv op reads its input channels from axis `axis` of an input of `shape` (an
    affine op: acts on it)."""
    if axis is None or shape is None:
        return False
    axis %= len(shape)
    last = op.layout in ("nhwc", "nc") if op.kind == "conv" else (op.affine is not None and op.affine.axis == -1)
    return axis == len(shape) - 1 if last else axis == 1
