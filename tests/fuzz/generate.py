"""A random fuzz case from its seed: the model spec, the options of each format, the fresh inputs.

    case = random_case(1234)      # the same dict for the same seed, on any machine

A case is a JSON-able dict:
    {"seed", "model": model spec (graphs.py), "fx": {"options", "inplace"},
     "onnx": {"options", "batch", "seed", "use_inputs", "constant_folding"}, "cli": bool,
     "fresh": {"batch", "seed", "hw", "scale", "shift", "channels_last"}}
Blocks are drawn one at a time and kept only if the model still builds at the shapes reached.

Generator versions: a seed below 2**31 is a version-1 case (every seed recorded before version 2
existed, the regression seeds replayed in tests/test_fuzz.py included, builds exactly as it
did). A seed of 2**31 or more is a version-2 case: the same draws from random.Random(seed), then,
from a separate stream (random.Random(f"head-{seed}")) that version 1 never reads, a classifier
head over [N, C] appended to the model with probability HEAD_PROBABILITY (global pool → optional
BatchNorm1d → Linear → optional BatchNorm1d → optional activation → optional second Linear →
optional BatchNorm1d; exported to ONNX, each Linear is a Gemm). `python -m tests.fuzz
--generator 2` draws version-2 seeds.
"""
from __future__ import annotations

import random

from rewrite.options import PASSES

from .graphs import build_block
from .units import ACTS, MAX_CH, InvalidSpec

BLOCK_WEIGHTS = {"unit": 26, "ir": 12, "residual": 10, "se": 5, "shared": 5, "tied": 5, "functional": 5,
                 "concat": 7, "parallel": 7, "cond": 5, "layerscale": 4, "affine": 3, "bn": 4, "act": 3, "tap": 3, "pool": 3}


VERSION2 = 2**31              # seeds from here on are version-2 cases
HEAD_PROBABILITY = 0.6


def case_seed(rng: random.Random, generator: int = 1) -> int:
    """The next case seed of a run's sequence, for generator version 1 or 2."""
    return rng.randrange(2**31) + (VERSION2 if generator == 2 else 0)


def random_head(rng: random.Random) -> dict:
    """A head spec: layers over [N, C] after a global pool."""
    layers = []
    if rng.random() < 0.4:
        layers.append({"kind": "bn"})
    layers.append({"kind": "linear", "out": rng.choice([4, 8, 10, 16, 32]), "bias": rng.random() < 0.8})
    if rng.random() < 0.4:
        layers.append({"kind": "bn"})
    if rng.random() < 0.6:
        if rng.random() < 0.4:
            layers.append({"kind": "act", "act": rng.choice(["relu", "silu", "gelu", "hardswish"])})
        layers.append({"kind": "linear", "out": rng.choice([4, 8, 10, 16]), "bias": rng.random() < 0.8})
        if rng.random() < 0.2:
            layers.append({"kind": "bn"})
    return {"type": "head", "pool": rng.choice(["mean", "adaptive"]), "layers": layers, "seed": _seed(rng)}


def _seed(rng: random.Random) -> int:
    return rng.randrange(2**31)


def random_pad(rng: random.Random, k: int, d: int, keep: bool) -> dict:
    """How a k x k conv (dilation d) is padded; keep: the output keeps the input's size (stride 1)."""
    total = d * (k - 1)
    how = rng.choice(["sym", "sym", "sym", "hw", "same", "mode", "explicit", "explicit", "explicit"])
    if keep and how == "hw":
        how = "sym"
    if how == "sym":
        return {"how": "sym", "p": [total // 2 if keep else rng.randint(0, total // 2)]}
    if how == "hw":
        return {"how": "hw", "p": [rng.randint(0, total // 2), rng.randint(0, total // 2)]}
    if how == "mode":
        return {"how": "mode", "mode": rng.choice(["reflect", "replicate", "circular"])}
    if how == "same":
        return {"how": "same"}
    if keep:
        l, t = rng.randint(0, total), rng.randint(0, total)
        pads = [l, total - l, t, total - t]
    else:
        pads = [rng.randint(0, max(1, total)) for _ in range(4)]
    mode = rng.choice(["constant", "constant", "constant", "reflect", "replicate"])
    value = 0.0 if mode != "constant" or rng.random() < 0.7 else rng.choice([0.5, -1.0, 2.0])
    return {"how": "explicit", "pads": pads, "mode": mode, "value": value,
            "style": rng.choice(["module", "functional"])}


def random_unit(rng: random.Random, keep: bool = False, kind: str | None = None, k: int | None = None,
                out: int | None = None, stride: int | None = None, act: str | None = None) -> dict:
    """A conv unit spec; keep: stride 1, same channels, same size."""
    kind = kind or rng.choice(["dense", "dense", "dw", "dw", "pw", "pw", "grouped"])
    k = 1 if kind == "pw" else (k or rng.choice([1, 3, 3, 3, 5]))
    d = rng.choice([1, 1, 1, 2]) if k > 1 else 1
    s = 1 if keep else (stride or rng.choice([1, 1, 1, 2]))
    return {
        "kind": kind, "k": k, "stride": s, "dilation": d,
        "out": None if keep else (out or rng.choice([4, 8, 8, 12, 16, 16, 24, 32])),
        "mult": 1 if keep else rng.choice([1, 1, 1, 2]), "groups": rng.choice([2, 4]),
        "bias": rng.random() < 0.6, "pad": random_pad(rng, k, d, keep or s == 1 and rng.random() < 0.5),
        "factor": rng.choice([None, None, "dw_pw", "pw_dw"]), "factor_rank": rng.choice([1, 1, 2]),
        "bn": rng.random() < 0.6, "act": act or rng.choice(ACTS), "inplace": rng.random() < 0.2,
        "scale": rng.random() < 0.1, "fconv": rng.random() < 0.15, "seed": _seed(rng),
    }


def random_se(rng: random.Random) -> dict:
    return {"type": "se", "reduce": rng.choice([2, 4, 8]), "act": rng.choice(["relu", "silu", "relu6"]),
            "gate": rng.choice(["sigmoid", "hardsigmoid"]), "pool": rng.choice(["mean", "adaptive"]),
            "bias": rng.random() < 0.8, "seed": _seed(rng)}


def random_block(rng: random.Random, c: int) -> dict:
    """One block spec (its shapes are checked by building it)."""
    t = rng.choices(list(BLOCK_WEIGHTS), weights=list(BLOCK_WEIGHTS.values()))[0]
    keep_units = lambda n: [random_unit(rng, keep=True) for _ in range(n)]  # noqa: E731
    if t == "unit":
        return {"type": "unit", "unit": random_unit(rng)}
    if t == "residual":
        return {"type": "residual", "body": keep_units(rng.randint(1, 3)), "scale": rng.random() < 0.3, "seed": _seed(rng)}
    if t == "ir":
        e, act = rng.choice([1, 2, 3, 4]), rng.choice(ACTS[:5])
        out = rng.choice([c, c, 8, 16, 24])
        return {"type": "ir",
                "expand": None if e == 1 else random_unit(rng, kind="pw", out=min(MAX_CH, c * e), act=act),
                "dw": dict(random_unit(rng, kind="dw", stride=rng.choice([1, 1, 2]), act=act), mult=1),
                "se": random_se(rng) if rng.random() < 0.35 else None,
                "project": dict(random_unit(rng, kind="pw", out=out, act="identity"), bn=rng.random() < 0.8),
                "residual": rng.random() < 0.8}
    if t == "se":
        return random_se(rng)
    if t == "shared":
        return {"type": "shared", "unit": random_unit(rng, keep=True), "times": rng.choice([2, 2, 3])}
    if t in ("tied", "functional"):
        unit = random_unit(rng, keep=True, kind=rng.choice(["dense", "dw", "pw"]))
        unit["pad"] = {"how": "sym", "p": [unit["dilation"] * (unit["k"] - 1) // 2]}
        return {"type": t, "unit": unit, "act": rng.choice(ACTS), "add": rng.random() < 0.5, "seed": _seed(rng)}
    if t == "concat":
        branches = [[random_unit(rng, keep=False, stride=1, out=rng.choice([4, 8, 12]))
                     for _ in range(rng.randint(1, 2))] for _ in range(rng.randint(1, 3))]
        for units in branches:
            for u in units:
                u["pad"] = random_pad(rng, u["k"], u["dilation"], keep=True)
        return {"type": "concat", "branches": branches, "identity": rng.random() < 0.4}
    if t == "parallel":
        stride, out = rng.choice([1, 1, 2]), rng.choice([c, c, 8, 16])
        kinds = [rng.choice(["dense", "dense", "dw", "pw", "grouped"]) for _ in range(rng.randint(1, 3))]
        out = c if "dw" in kinds else out
        branches = []
        for kind in kinds:
            u = dict(random_unit(rng, kind=kind, stride=stride, out=out, act="identity"), mult=1)
            u["pad"] = (random_pad(rng, u["k"], u["dilation"], keep=True) if stride == 1 else
                        {"how": "sym", "p": [u["dilation"] * (u["k"] - 1) // 2]})
            branches.append(u)
        return {"type": "parallel", "branches": branches, "signs": [rng.choice([1, 1, -1]) for _ in branches],
                "identity": rng.random() < 0.4, "act": rng.choice(ACTS)}
    if t == "cond":
        return {"type": "cond", "then": keep_units(rng.randint(1, 2)), "else": keep_units(rng.randint(0, 2)),
                "thresh": rng.choice([0.0, 0.0, 0.1, -0.1])}
    if t in ("layerscale", "affine", "bn"):
        return {"type": t, "seed": _seed(rng)}
    if t == "act":
        return {"type": "act", "act": rng.choice(ACTS), "inplace": rng.random() < 0.3}
    if t == "pool":
        return {"type": "pool", "how": rng.choice(["max", "avg"])}
    return {"type": "tap"}


def random_model(rng: random.Random) -> dict:
    """A model spec of 1-6 blocks, each kept only if the model builds with it (C ≤ 32 throughout)."""
    spec = {"in_ch": rng.choice([1, 3, 3, 4, 8, 16]), "hw": [rng.randint(6, 16), rng.randint(6, 16)],
            "batch": rng.choice([1, 1, 2, 3]), "seed": _seed(rng), "blocks": [],
            "container": rng.choice(["list", "seq"])}
    c, (h, w) = spec["in_ch"], spec["hw"]
    for _ in range(rng.randint(1, 6)):
        for _try in range(6):
            b = random_block(rng, c)
            try:
                _, shape = build_block(b, c, h, w)
            except InvalidSpec:
                continue
            if shape[0] <= MAX_CH:
                spec["blocks"].append(b)
                c, h, w = shape
                break
    if not spec["blocks"]:
        spec["blocks"].append({"type": "unit", "unit": random_unit(rng, keep=True, kind="pw")})
    return spec


def random_options(rng: random.Random, fx: bool) -> dict:
    """Random optimize()/optimize_onnx() options (only the non-default ones are set)."""
    o: dict = {}
    if rng.random() < 0.4:
        o["passes"] = [p for p in PASSES if rng.random() < 0.5]
    if rng.random() < 0.7:
        o["target"] = rng.choice(["cpu", "h100"])
    if rng.random() < 0.15:
        o["check"] = False
    if rng.random() < 0.25:
        o["force_fuse"] = True
    if rng.random() < 0.5:
        o["min_speedup"] = rng.choice([0.0, 0.5, 1.0, 1.5, 3.0])
    if rng.random() < 0.15:
        o["factorize_error_budget"] = rng.choice([1e-6, 1e-5, 1e-4, 1e-3])
    if fx and rng.random() < 0.3:
        o["channels_last"] = rng.choice([True, False])
    if fx and rng.random() < 0.15:
        o["dynamic_spatial"] = True
    return o


def random_case(seed: int) -> dict:
    """The fuzz case of `seed` (deterministic)."""
    rng = random.Random(seed)
    model = random_model(rng)
    if seed >= VERSION2:
        head_rng = random.Random(f"head-{seed}")
        if head_rng.random() < HEAD_PROBABILITY:
            model["blocks"].append(random_head(head_rng))
    fx = random_options(rng, fx=True)
    fresh_hw = [model["hw"][0] + rng.randint(0, 3), model["hw"][1] + rng.randint(0, 3)]
    return {
        "seed": seed, "model": model,
        "fx": {"options": fx, "inplace": rng.random() < 0.1},
        "onnx": {"options": random_options(rng, fx=False), "batch": rng.choice([1, 2, 3]), "seed": _seed(rng),
                 "use_inputs": rng.random() < 0.2, "constant_folding": rng.random() < 0.5},
        "cli": rng.random() < 0.25,
        "fresh": {"batch": rng.choice([b for b in (1, 2, 3, 4) if b != model["batch"]]), "seed": _seed(rng),
                  "hw": fresh_hw if fx.get("dynamic_spatial") else None,
                  "scale": rng.choice([1.0, 1.0, 2.0, 0.5]), "shift": rng.choice([0.0, 0.0, 0.3, -0.3]),
                  "channels_last": rng.random() < 0.3},
    }
