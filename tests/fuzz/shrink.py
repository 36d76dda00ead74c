"""Greedy shrinking of a failing case, and the repro printed for the smallest one.

    small = shrink(case, fails=same_failure(outcome))

Candidates, tried in order, each a smaller or simpler copy of the case: drop a block; replace a
composite block by its conv units; drop a unit inside a block (or an inverted residual's expand
or SE); reset one option to its default; simplify one unit (no BN, identity activation, no
bias, plain padding, ...); batch 1. The first candidate that still fails the same way becomes
the case, and the search restarts, until no candidate fails or the time is up.
"""
from __future__ import annotations

import copy
import json
import time
from typing import Callable, Iterator

from .units import InvalidSpec

UNIT_SIMPLER = (("bn", False), ("act", "identity"), ("scale", False), ("fconv", False), ("inplace", False),
                ("factor", None), ("bias", False), ("dilation", 1), ("stride", 1), ("mult", 1),
                ("pad", {"how": "sym"}), ("k", 3), ("k", 1))
UNIT_LISTS = ("body", "then", "else")


def _units(block: dict) -> list[dict]:
    """The conv units inside a block, in a fixed order (the dicts themselves)."""
    if block["type"] in ("unit", "shared", "tied", "functional"):
        return [block["unit"]]
    if block["type"] == "ir":
        return [u for u in (block.get("expand"), block["dw"], block["project"]) if u]
    if block["type"] == "concat":
        return [u for branch in block["branches"] for u in branch]
    if block["type"] == "parallel":
        return list(block["branches"])
    return [u for key in UNIT_LISTS for u in block.get(key, [])]


def _matters(unit: dict, key: str, simple) -> bool:
    """Whether setting unit[key] = simple changes the model built (and makes it simpler)."""
    if key == "k":
        return unit["kind"] != "pw" and unit["k"] > simple
    if key in ("dilation", "pad"):
        return unit["kind"] != "pw" and unit["k"] > 1
    if key == "mult":
        return unit["kind"] == "dw"
    if key == "factor":
        return unit["kind"] == "dense" and unit["k"] > 1
    return True


def _inner_lists(block: dict) -> list[list]:
    if block["type"] == "concat":
        return list(block["branches"])
    if block["type"] == "parallel":
        return [block["branches"]]
    return [block[key] for key in UNIT_LISTS if key in block]


def candidates(case: dict) -> Iterator[dict]:
    """Every one-step simplification of `case`, smallest-first."""
    blocks = case["model"]["blocks"]

    def with_blocks(new):
        c = copy.deepcopy(case)
        c["model"]["blocks"] = copy.deepcopy(new)
        return c

    for i in range(len(blocks)):
        yield with_blocks(blocks[:i] + blocks[i + 1:])
    for i, b in enumerate(blocks):
        if b["type"] != "unit" and _units(b):
            yield with_blocks(blocks[:i] + [{"type": "unit", "unit": u} for u in _units(b)] + blocks[i + 1:])
    for i, b in enumerate(blocks):
        for j, units in enumerate(_inner_lists(b)):
            for k in range(len(units)):
                c = with_blocks(blocks)
                del _inner_lists(c["model"]["blocks"][i])[j][k]
                yield c
        if b["type"] == "concat" and len(b["branches"]) > 1:
            for j in range(len(b["branches"])):
                c = with_blocks(blocks)
                del c["model"]["blocks"][i]["branches"][j]
                yield c
        for key in ("expand", "se", "residual", "identity", "add", "scale"):
            if b.get(key):
                c = with_blocks(blocks)
                c["model"]["blocks"][i][key] = None if key in ("expand", "se") else False
                yield c
    for fmt in ("fx", "onnx"):
        for key in case[fmt]["options"]:
            c = copy.deepcopy(case)
            del c[fmt]["options"][key]
            yield c
    for path, simple in ((("fx", "inplace"), False), (("onnx", "use_inputs"), False), (("cli",), False)):
        c = copy.deepcopy(case)
        parent = c if len(path) == 1 else c[path[0]]
        if parent[path[-1]] != simple:
            parent[path[-1]] = simple
            yield c
    n_units = sum(len(_units(b)) for b in blocks)
    for idx in range(n_units):
        for key, simple in UNIT_SIMPLER:
            c = copy.deepcopy(case)
            unit = [u for b in c["model"]["blocks"] for u in _units(b)][idx]
            if unit.get(key) != simple and _matters(unit, key, simple):
                unit[key] = copy.deepcopy(simple)
                yield c
    if case["model"]["batch"] != 1:
        c = copy.deepcopy(case)
        c["model"]["batch"] = 1
        c["fresh"]["batch"] = 2
        yield c


def size(case: dict) -> int:
    """Blocks + units + options: what shrinking drives down."""
    blocks = case["model"]["blocks"]
    return len(blocks) + sum(len(_units(b)) for b in blocks) + len(case["fx"]["options"]) + len(case["onnx"]["options"])


def shrink(case: dict, fails: Callable[[dict], bool], seconds: float = 120.0,
           log: Callable[[str], None] = lambda message: None) -> dict:
    """The smallest case reached greedily from `case` for which fails(case) holds.
    A candidate that cannot be built (InvalidSpec) counts as not failing."""
    deadline, current, tries = time.monotonic() + seconds, case, 0
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for cand in candidates(current):
            if time.monotonic() >= deadline:
                break
            tries += 1
            try:
                failing = fails(cand)
            except InvalidSpec:
                failing = False
            if failing:
                current, improved = cand, True
                log(f"shrink: {size(current)} ({len(current['model']['blocks'])} blocks) after {tries} tries")
                break
    return current


def same_failure(signature: tuple) -> Callable[[dict], bool]:
    """The predicate 'this case still fails with `signature` (fmt, status, exception type)'."""
    from .run import run_case

    def fails(case: dict) -> bool:
        return any(o.signature() == signature for o in run_case(case, formats=(signature[0],)))

    return fails


def repro(case: dict, fmt: str) -> str:
    """A pasteable Python snippet that rebuilds the case and runs it (from the repository root)."""
    call = {
        "fx": "fast = optimize(model, x, inplace={inplace}, **case['fx']['options'])\nprint(fast.rewrite_report)",
        "onnx": ("proto = export(model, x, case['onnx']['constant_folding'])\n"
                 "optimized, report = optimize_onnx(proto, batch=case['onnx']['batch'], seed=case['onnx']['seed'], "
                 "**case['onnx']['options'])\nprint(report)"),
    }.get(fmt, "")
    return "\n".join([
        f"# fuzz case {case['seed']} ({fmt}); run from the repository root: PYTHONPATH=. python THIS_FILE.py",
        "import json",
        "from rewrite import optimize, optimize_onnx",
        "from tests.fuzz.graphs import build_model, example_input",
        "from tests.fuzz.onnx_run import export",
        "from tests.fuzz.run import run_case",
        f"case = json.loads({json.dumps(json.dumps(case))})",
        "model, x = build_model(case['model']), example_input(case['model'])",
        "print(model)",
        call.format(inplace=case["fx"]["inplace"]),
        f"print(*run_case(case, formats=({fmt!r},)), sep='\\n')",
    ])
