"""The fuzzer proves it can fail: on a fixed case, a clean run must be "ok", and a run whose
optimized model is corrupted (one weight tensor scaled by 1 + 1e-2) must be "wrong"; an input
model or ModelProto changed behind optimize()'s back must be "input-modified".

    problems = self_check(("fx", "onnx"))     # [] when every judge works
"""
from __future__ import annotations

import random

import torch

from .generate import random_unit
from .onnx_run import run_cli, run_onnx
from .run import run_fx


def self_check_case() -> dict:
    """conv3x3+BN+ReLU → inverted residual (pw expand, dw 3x3, pw project, + x) → pw: a little of
    every pass, default options."""
    rng = random.Random(0)
    plain = dict(factor=None, scale=False, fconv=False, inplace=False, dilation=1, stride=1, mult=1, bias=True)

    def unit(kind, out, act):
        k = 1 if kind == "pw" else 3
        return dict(random_unit(rng, kind=kind, out=out, act=act, k=k), **plain, pad={"how": "sym", "p": [k // 2]}, bn=True)

    blocks = [{"type": "unit", "unit": unit("dense", 8, "relu")},
              {"type": "ir", "expand": unit("pw", 16, "relu6"), "dw": unit("dw", None, "relu6"), "se": None,
               "project": unit("pw", 8, "identity"), "residual": True},
              {"type": "unit", "unit": unit("pw", 12, "identity")}]
    return {"seed": -1, "model": {"in_ch": 3, "hw": [10, 10], "batch": 2, "seed": 7, "blocks": blocks},
            "fx": {"options": {}, "inplace": False},
            "onnx": {"options": {}, "batch": 2, "seed": 0, "use_inputs": False, "constant_folding": False},
            "cli": True, "fresh": {"batch": 3, "seed": 11, "hw": None, "scale": 1.0, "shift": 0.0}}


def _tamper_module(model: torch.nn.Module) -> None:
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0


def _tamper_proto(proto) -> None:
    proto.doc_string += " tampered"


def self_check(formats=("fx", "onnx")) -> list[str]:
    """What the judges missed on the fixed case ([] when all is well)."""
    case, problems = self_check_case(), []
    runners = {"fx": run_fx, "onnx": run_onnx, "cli": run_cli}
    for fmt in formats:
        run = runners[fmt]
        for label, kwargs, expected in (("clean", {}, "ok"), ("corrupted", {"corrupt": True}, "wrong")):
            out = run(case, **kwargs)
            if out.status != expected:
                problems.append(f"{fmt} {label}: expected {expected}, got {out}")
        if fmt != "cli":
            out = run(case, tamper=_tamper_module if fmt == "fx" else _tamper_proto)
            if out.status != "input-modified":
                problems.append(f"{fmt} tampered input: expected input-modified, got {out}")
    return problems
