"""The chain patterns, written once over the neutral view (passes/view.py) for both formats.

Each matcher walks a View and yields one `Match` per site it considers: the ops a rewrite would
replace, the chain in IR form, the chain's input value (and a residual), or the reason the site
cannot be rewritten (the real blocker, named in the graph's own terms). The rules
(rewrite/rules) then decide whether the rewrite pays; the adapters lower and verify it.

    merge      parallel linear branches from one x, summed (add / sub trees) → one conv
    fold       conv → affine (BatchNorm, per-channel scale/shift); affine → conv; zero pad → conv
    factorize  a dense KxK conv
    reverse    dw → pw, pw → dw, or a dense 1x1 next to any conv, with nothing between
    fuse       dw (+act1) (+squeeze-excitation) → pw (+act2) (+residual add)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import os

import torch

from rewrite.algebra import absorb_pad
from rewrite.ir import Activation, Affine, ParallelBranches, SqueezeExcite
from rewrite.rules import is_reversible_pair
from rewrite.rules.fuse import FUSABLE_ACTIVATIONS

from .view import Op, View

SE_GATES = ("sigmoid", "hardsigmoid")
# Ops a depthwise → pointwise walk looks through to name what stands between the two convs.
MAX_BETWEEN = 4


@dataclass(eq=False)
class Match:
    kind: str                   # merge | fold | factorize | reverse | fuse
    name: str                   # the site's name (its head op's)
    ops: list                   # the ops a rewrite replaces, in order; ops[-1] produces `output`
    layers: list = field(default_factory=list)   # the chain in IR, as the rule sees it
    input: object = None        # the value the chain reads
    output: object = None       # the value the chain produces
    reason: str | None = None   # set: declined by the matcher, with this reason
    residual: object = None     # fuse: the value added after act2, or None
    fuse: dict = field(default_factory=dict)     # fuse: dw, act1, se, pw, act2, se_ops

    @property
    def layout(self) -> str:
        """"nc" where the match's convs are linears over [N, C] (lowered as linears), else "nchw"."""
        return "nc" if any(op.kind == "conv" and op.layout == "nc" for op in self.ops) else "nchw"

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


def _conv_reason(op: Op, linear_ok: bool = False) -> str | None:
    """Why the conv op cannot be rewritten here, or None. A linear over [N, C] (layout "nc") is
    folded and collapsed (linear_ok), never merged, factorized or fused."""
    if op.reason:
        return op.reason
    if op.layout == "nhwc":
        return "a linear over a channels-last tensor is not rewritten"
    if op.layout == "nc" and not linear_ok:
        return "a linear over [N, C] is only folded into or collapsed with its neighbours"
    return None


# -- merge -----------------------------------------------------------------------------------

COMBINERS = ("add", "sub")


def _distributes(view: View, op: Op | None) -> bool:
    """op is a constant affine applied to a partial sum that only it reads: s·(a ± b) + t."""
    if op is None or op.kind != "affine" or op.affine is None:
        return False
    inner = view.producer(op.inputs[0])
    return inner is not None and inner.kind in COMBINERS and view.sole_user(inner.output) is op


def _is_sum_root(view: View, op: Op) -> bool:
    """An add/sub not itself summed further up (through constant affines)."""
    parent = view.sole_user(op.output)
    while _distributes(view, parent):
        parent = view.sole_user(parent.output)
    return parent is None or parent.kind not in COMBINERS


def _sum_terms(view: View, root: Op):
    """(terms [(value, coefficient or None)], combiner and affine ops, constant shift or None) of
    the sum tree under `root`: y = Σ c_k · term_k + shift."""
    terms, ops, shift = [], [], None

    def walk(value, coef, top):
        nonlocal shift
        op = view.producer(value)
        inner = top or view.sole_user(value) is not None
        if inner and op is not None and op.kind in COMBINERS and len(op.inputs) == 2 and \
                view.shape(op.inputs[0]) is not None and view.shape(op.inputs[0]) == view.shape(op.inputs[1]):
            ops.append(op)
            walk(op.inputs[0], coef, False)
            walk(op.inputs[1], (-1.0 if coef is None else -coef) if op.kind == "sub" else coef, False)
            # coefficients: None (1), -1.0, or a float64 per-channel tensor
        elif inner and not top and _distributes(view, op):
            ops.append(op)
            scale, t = op.affine.scale.double(), op.affine.shift.double()
            t = t if coef is None else torch.as_tensor(coef, dtype=torch.float64) * t
            shift = t if shift is None else shift + t
            walk(op.inputs[0], scale if coef is None else torch.as_tensor(coef, dtype=torch.float64) * scale, False)
        else:
            terms.append((value, coef))

    walk(root.output, None, True)
    return terms, ops, shift


def _linear_step(view: View, value):
    """(the op producing `value` if it is a liftable affine or conv, the value it reads) or None."""
    op = view.producer(value)
    if op is None or not ((op.kind == "affine" and op.affine is not None) or
                          (op.kind == "conv" and _conv_reason(op) is None)):
        return None
    return op, op.inputs[0]


def _branch(view: View, value, stop_at=frozenset()):
    """Walk a summed term back through affines and at most one conv (with a zero pad before it),
    each read by this branch alone: (the value the branch starts from, its ops, its layers, why
    it stopped earlier or None).

    Where a value on the way has other readers, the walk stops there; if it would otherwise have
    reached one of `stop_at` (where the other branches start) through linear ops, it starts
    there instead, and why says which readers stopped it."""
    ops, layers, why = [], [], None
    while True:
        op = view.producer(value)
        if op is None:
            break
        if view.sole_user(value) is None:
            probe, seen = value, 0
            while probe not in stop_at and seen < 3 and _linear_step(view, probe) is not None:
                probe, seen = _linear_step(view, probe)[1], seen + 1
            if probe in stop_at and probe != value:
                why = f"a branch's output also feeds {view.describe_readers(value)}; merging would hide it"
                value = probe
            break
        if op.kind == "affine" and op.affine is not None:
            ops.insert(0, op)
            layers.insert(0, op.affine)
            value = op.inputs[0]
            continue
        if op.kind == "conv" and _conv_reason(op) is None:
            ops.insert(0, op)
            conv, value = op.conv, op.inputs[0]
            pad = view.producer(value)
            if pad is not None and pad.kind == "pad" and pad.pad is not None and view.sole_user(value) is op:
                ops.insert(0, pad)        # a TF "same" pad belongs to its branch
                conv, value = absorb_pad(pad.pad, conv), pad.inputs[0]
            layers.insert(0, conv)
        else:
            why = _conv_reason(op) if op.kind == "conv" else op.reason if op.kind == "affine" else \
                f"{op.describe()} stands between a branch and the shared input"
        break
    return value, ops, layers, why


def _site_name(names: list[str]) -> str:
    """The longest common module path of the branches' ops (a block's name), else the first."""
    prefix = os.path.commonprefix(names)
    if prefix not in names:
        cut = max(prefix.rfind("."), prefix.rfind("/"))
        prefix = prefix[:cut] if cut > 0 else ""
    return prefix or names[0]


def _sum_site(view: View, root: Op):
    """(x, the branches reading x, the other branches, combiner ops, shift) of the sum at `root`,
    or None when fewer than two summed branches read one value or none of them has a conv."""
    terms, combiners, shift = _sum_terms(view, root)
    first = [_branch(view, value)[0] for value, _ in terms]
    others = [frozenset(s for j, s in enumerate(first) if j != i) for i in range(len(first))]
    branches = [(_branch(view, value, others[i]), coef) for i, (value, coef) in enumerate(terms)]
    starts = [start for (start, _, _, _), _ in branches]
    x = max(dict.fromkeys(starts), key=starts.count)
    mine = [b for b in branches if b[0][0] == x and b[0][3] is None]
    foreign = [b for b in branches if b[0][0] != x or b[0][3] is not None]
    at_x = [b for b in branches if b[0][0] == x]
    if len(at_x) < 2 or not any(why or any(op.kind == "conv" for op in ops) for (_, ops, _, why), _ in at_x):
        return None                     # a plain residual add, or no conv to merge into
    return x, mine, sorted(foreign, key=lambda b: b[0][0] != x), combiners, shift


def merge_matches(view: View):
    """Every sum (a tree of add / sub, through constant scales) of ≥ 2 linear branches of one x.
    When the sum also adds something else (a block's residual), its largest sub-sum of x's
    branches alone is merged instead."""
    used = set()
    for root in view.ops:
        if root.kind not in COMBINERS or not _is_sum_root(view, root):
            continue
        site = _sum_site(view, root)
        if site is None:
            continue
        if site[2]:
            inner = (_sum_site(view, op) for op in site[3][1:] if op.kind in COMBINERS)
            site = next((s for s in inner if s is not None and not s[2]), site)
        x, mine, foreign, combiners, shift = site
        names = [op.name for (_, ops, _, _), _ in mine for op in ops if op.kind == "conv"] or [combiners[0].name]
        name = _site_name(names)
        name = name if name not in used else names[0]
        used.add(name)
        all_ops = [op for (_, ops, _, _), _ in mine for op in ops] + combiners[::-1]
        if foreign:
            (start, _, _, why), _ = foreign[0]
            producer = view.producer(start)
            reason = why or f"{producer.describe() if producer else 'a graph input'} stands between a branch " \
                "and the shared input"
            yield Match("merge", name, all_ops or [root], reason=reason)
            continue
        channels = view.shape(combiners[0].inputs[0])[1]
        parallel = ParallelBranches(tuple(tuple(layers) + _coefficient(coef, channels)
                                          for (_, _, layers, _), coef in mine), shift)
        yield Match("merge", name, all_ops, [parallel], x, combiners[0].output)


def _coefficient(coef, channels: int) -> tuple:
    """A term's coefficient (None = 1, a scalar sign, a per-channel scale) as a trailing Affine."""
    if coef is None:
        return ()
    scale = torch.as_tensor(coef, dtype=torch.float64)
    scale = scale.expand(channels).clone() if scale.dim() == 0 else scale.reshape(-1)
    return (Affine(scale, torch.zeros_like(scale)),)


# -- fold ------------------------------------------------------------------------------------

def fold_matches(view: View):
    """conv → affine where the conv's output feeds only the affine; else affine → conv where the
    affine feeds only the conv; zero pad → conv."""
    for op in view.ops:
        if op.kind == "affine":
            conv = view.producer(op.inputs[0])
            if conv is None or conv.kind != "conv":
                before = _affine_before_conv(view, op)
                if before is not None:
                    yield before
                continue
            ops = [conv, op]
            reason = _conv_reason(conv, linear_ok=True) or op.reason
            if reason is None and view.readers(conv.output) > 1:
                reason = (f"conv output has {view.readers(conv.output)} readers; folding the {op.label} "
                          "would change what the others see")
            if reason:
                before = _affine_before_conv(view, op) if view.readers(conv.output) > 1 else None
                yield before if before is not None and before.reason is None else _declined("fold", conv, reason, ops)
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


def _affine_before_conv(view: View, op: Op) -> Match | None:
    """affine → conv, where the affine's output feeds only that conv (a pre-activation BatchNorm)."""
    conv = view.sole_user(op.output)
    if conv is None or conv.kind != "conv" or op.affine is None:
        return None
    reason = _conv_reason(conv, linear_ok=True)
    if reason:
        return _declined("fold", conv, reason, [op, conv])
    return Match("fold", conv.name, [op, conv], [op.affine, conv.conv], op.inputs[0], conv.output)


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
    """A dense 1x1 next to another conv (dw → pw, pw → dw, pw → pw, KxK → pw, pw → KxK); a
    separable pair with one op between them is declined with what it is."""
    for op in view.ops:
        if not op.liftable_conv or op.origin == "factorize":
            continue
        nxt = view.sole_user(op.output)
        between = None
        if nxt is not None and nxt.kind != "conv":
            between, nxt = nxt, view.sole_user(nxt.output)
        if nxt is None or not nxt.liftable_conv or nxt.origin == "factorize" or nxt.layout != op.layout or \
                not is_reversible_pair(op.conv, nxt.conv):
            continue
        if between is not None:
            if op.conv.is_depthwise or nxt.conv.is_depthwise:   # the separable pairs say what blocks them
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


MATCHERS = {"merge": merge_matches, "fold": fold_matches, "factorize": factorize_matches, "reverse": reverse_matches,
            "fuse": fuse_matches}
