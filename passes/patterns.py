"""The chain patterns, written once over the neutral view (passes/view.py) for both formats.

Each matcher walks a View and yields one `Match` per site it considers: the ops a rewrite would
replace, the chain in IR form, the chain's input value (and a residual), or the reason the site
cannot be rewritten (the real blocker, named in the graph's own terms). The rules
(rewrite/rules) then decide whether the rewrite pays; the adapters lower and verify it.

    fold       conv → affine (BatchNorm, per-channel scale/shift); zero pad → conv
    factorize  a dense KxK conv
    reverse    dw → pw or pw → dw with nothing between
    fuse       dw (+act1) (+squeeze-excitation) → pw (+act2) (+residual add)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rewrite.ir import Activation, SqueezeExcite
from rewrite.rules import is_reversible_pair
from rewrite.rules.fuse import FUSABLE_ACTIVATIONS

from .view import Op, View

SE_GATES = ("sigmoid", "hardsigmoid")
# Ops a depthwise → pointwise walk looks through to name what stands between the two convs.
MAX_BETWEEN = 4


@dataclass(eq=False)
class Match:
    kind: str                   # fold | factorize | reverse | fuse
    name: str                   # the site's name (its head op's)
    ops: list                   # the ops a rewrite replaces, in order; ops[-1] produces `output`
    layers: list = field(default_factory=list)   # the chain in IR, as the rule sees it
    input: object = None        # the value the chain reads
    output: object = None       # the value the chain produces
    reason: str | None = None   # set: declined by the matcher, with this reason
    residual: object = None     # fuse: the value added after act2, or None
    fuse: dict = field(default_factory=dict)     # fuse: dw, act1, se, pw, act2, se_ops

    @property
    def runtime_inputs(self) -> list:
        """The values the chain reads at run time: its input, and the residual it adds."""
        return [self.input] + ([self.residual] if self.residual is not None else [])

    def nodes_in(self, graph_nodes) -> list:
        """The format nodes of the match's ops, in the graph's order."""
        chosen = {id(node) for op in self.ops for node in op.nodes}
        return [node for node in graph_nodes if id(node) in chosen]

    @property
    def before(self) -> str:
        return " → ".join(op.describe() for op in self.ops) if self.reason else \
            " → ".join(layer.describe() for layer in self.layers)


def _declined(kind: str, op: Op, reason: str, ops=None) -> Match:
    return Match(kind, op.name, ops or [op], reason=reason)


def _conv_reason(op: Op) -> str | None:
    if op.reason:
        return op.reason
    if op.layout != "nchw":
        return "a linear over a channels-last tensor is not rewritten"
    return None


# -- fold ------------------------------------------------------------------------------------

def fold_matches(view: View):
    """conv → affine where the conv's output feeds only the affine; zero pad → conv."""
    for op in view.ops:
        if op.kind == "affine":
            conv = view.producer(op.inputs[0])
            if conv is None or conv.kind != "conv":
                continue
            ops = [conv, op]
            reason = _conv_reason(conv) or op.reason
            if reason is None and view.readers(conv.output) > 1:
                reason = (f"conv output has {view.readers(conv.output)} readers; folding the {op.label} "
                          "would change what the others see")
            if reason:
                yield _declined("fold", conv, reason, ops)
                continue
            yield Match("fold", conv.name, ops, [conv.conv, op.affine], conv.inputs[0], op.output)
        elif op.kind == "pad":
            conv = view.sole_user(op.output)
            if conv is None or conv.kind != "conv":
                continue
            ops = [op, conv]
            reason = op.reason or _conv_reason(conv)
            if reason:
                yield _declined("fold", conv, reason, ops)
                continue
            yield Match("fold", conv.name, ops, [op.pad, conv.conv], op.inputs[0], conv.output)


# -- factorize -------------------------------------------------------------------------------

def factorize_matches(view: View):
    """Every dense conv that is not already in factored form (depthwise or 1x1)."""
    for op in view.ops:
        if op.kind != "conv" or op.origin in ("factorize", "reverse"):
            continue
        if op.conv is not None and (op.conv.is_depthwise or op.conv.kernel_size == (1, 1)):
            continue                # already in factored form
        if op.reason:
            yield _declined("factorize", op, op.reason)
            continue
        yield Match("factorize", op.name, [op], [op.conv], op.inputs[0], op.output)


# -- reverse ---------------------------------------------------------------------------------

def _between_reason(op: Op) -> str:
    if op.kind == "act":
        return f"nonlinearity ({op.act}) between the convs blocks the exact collapse"
    if op.kind == "affine":
        return f"{op.label} between the convs (not folded) blocks the collapse"
    return f"{op.label} between the convs blocks the collapse"


def reverse_matches(view: View):
    """dw → pw or pw → dw; with one op between them, declined with what it is."""
    for op in view.ops:
        if not op.liftable_conv or op.origin == "factorize":
            continue
        if not (op.conv.is_depthwise or op.conv.kernel_size == (1, 1)):
            continue
        nxt = view.sole_user(op.output)
        between = None
        if nxt is not None and nxt.kind != "conv":
            between, nxt = nxt, view.sole_user(nxt.output)
        if nxt is None or not nxt.liftable_conv or not is_reversible_pair(op.conv, nxt.conv):
            continue
        if between is not None:
            yield _declined("reverse", op, _between_reason(between), [op, between, nxt])
            continue
        yield Match("reverse", op.name, [op, nxt], [op.conv, nxt.conv], op.inputs[0], nxt.output)


# -- fuse ------------------------------------------------------------------------------------

def _match_se(view: View, tip) -> tuple[list, SqueezeExcite] | str:
    """(the SE's ops, mean first and the gating mul last, SqueezeExcite) for
    tip · gate(expand(act(reduce(mean(tip))))), or the reason the product is not one."""
    users = view.users(tip)
    mul = next((u for u in users if u.kind == "mul"), None)
    mean = next((u for u in users if u.kind == "mean"), None)
    if len(users) != 2 or mul is None or mean is None or tip in view.outputs:
        return "a product between the depthwise and pointwise convs that is not a squeeze-excitation"
    ops, convs, act, gate = [mean], [], None, None
    for step in ("reduce", "act", "expand", "gate"):
        nxt = view.sole_user(ops[-1].output)
        if nxt is None:
            return f"squeeze-excitation {step} has no single next layer"
        if step in ("reduce", "expand"):
            if nxt.kind != "conv" or _conv_reason(nxt):
                return f"squeeze-excitation {step} is not a rewritable conv ({_conv_reason(nxt) or nxt.label})"
            convs.append(nxt.conv)
        elif nxt.kind != "act":
            if step == "act":
                continue            # a linear excitation: reduce feeds expand directly
            return f"squeeze-excitation gate is not a known activation ({nxt.label})"
        elif step == "act":
            act = nxt.act
        else:
            gate = nxt.act
        ops.append(nxt)
    if view.sole_user(ops[-1].output) is not mul or set(mul.inputs) != {tip, ops[-1].output}:
        return "squeeze-excitation gate does not scale the depthwise output alone"
    return ops + [mul], SqueezeExcite(convs[0], act, convs[1], gate)


def _blocker(view: View, value, after_se: bool) -> str:
    """Why no pointwise conv directly follows `value`: what stands before the next conv, if any."""
    readers = view.readers(value)
    if readers > 1:
        return f"the depthwise output has {readers} readers ({view.describe_readers(value)}); fusing would hide it"
    between, op = [], view.sole_user(value)
    while op is not None and op.kind != "conv" and len(between) < MAX_BETWEEN:
        between.append(op)
        op = view.sole_user(op.output)
    if op is not None and op.kind == "conv" and between:
        blocker = next((o for o in between if o.kind != "layout"), between[0])
        if blocker.kind == "act" and after_se:
            return (f"{blocker.act} after the squeeze-excitation blocks the fusion (the fused kernel applies "
                    "its activation before the gate)")
        return f"{blocker.describe()} between the depthwise and pointwise convs blocks the fusion"
    return f"no pointwise conv follows (the depthwise output goes to {view.describe_readers(value)})"


def fuse_matches(view: View):
    """Every depthwise conv: dw (+act1) (+SE) → pw (+act2) (+ residual), or why not."""
    for op in view.ops:
        if op.kind != "conv" or op.conv is None or not op.conv.is_depthwise or op.layout != "nchw":
            continue
        if op.reason:
            yield _declined("fuse", op, op.reason)
            continue
        yield _fuse_match(view, op)


def _fuse_match(view: View, dw: Op) -> Match:
    ops, tip = [dw], dw.output
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "affine":
        return _declined("fuse", dw, f"{nxt.label} after the depthwise conv is not folded")
    act1 = None
    if nxt is not None and nxt.kind == "act":
        act1, tip = nxt.act, nxt.output
        ops.append(nxt)
    se, se_ops = None, []
    if any(u.kind == "mul" for u in view.users(tip)):
        found = _match_se(view, tip)
        if isinstance(found, str):
            return _declined("fuse", dw, f"{found} blocks the fusion")
        se_ops, se = found
        ops.extend(se_ops)
        tip = se_ops[-1].output
    pw = view.sole_user(tip)
    if pw is None or pw.kind != "conv":
        return _declined("fuse", dw, _blocker(view, tip, se is not None))
    reason = _conv_reason(pw)
    if reason:
        what = "pointwise conv" if pw.conv is None or pw.conv.kernel_size == (1, 1) else "next conv"
        return _declined("fuse", dw, f"{what}: {reason}")
    ops.append(pw)
    tip = pw.output
    act2 = None
    nxt = view.sole_user(tip)
    if nxt is not None and nxt.kind == "act" and nxt.act in FUSABLE_ACTIVATIONS:
        act2, tip = nxt.act, nxt.output     # an activation the kernel lacks stays outside the group
        ops.append(nxt)
    residual = None
    add = view.sole_user(tip)
    if add is not None and add.kind == "add" and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] == tip else add.inputs[0]
        shape = view.shape(tip)
        if other != tip and shape is not None and view.shape(other) == shape:
            residual = other
            ops.append(add)
            tip = add.output
    layers = [dw.conv] + ([Activation(act1)] if act1 else []) + [pw.conv] + ([Activation(act2)] if act2 else [])
    return Match("fuse", dw.name, ops, layers, dw.inputs[0], tip, residual=residual,
                 fuse=dict(dw=dw.conv, act1=act1, se=se, pw=pw.conv, act2=act2))


MATCHERS = {"fold": fold_matches, "factorize": factorize_matches, "reverse": reverse_matches,
            "fuse": fuse_matches}
