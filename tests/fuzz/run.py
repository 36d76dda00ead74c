"""Run one fuzz case through optimize() (fx), optimize_onnx() (onnx) and the CLI (cli), and judge it.

    outcomes = run_case(random_case(7), formats=("fx", "onnx"))

Each format gives an Outcome whose status is one of
    ok               the optimized model matches the original on fresh inputs
    wrong            it does not (compare.tolerance), or its outputs have another structure
    crash            an exception that is not a documented clear error, or the optimized model
                     fails to run on a fresh input (CLI: exit code 1 or 3)
    declined         a ValueError/TypeError (OnnxInputError included) raised at the API boundary
                     (rewrite/entry/api.py, onnx_api.py, options.py, passes/onnx/io.py, runtime.py),
                     CLI exit code 2: a clear refusal, counted apart
    input-modified   the model (or ModelProto, or the CLI's input file, or the example input)
                     changed, or the original no longer computes what it did
    export-skipped   torch.onnx.export could not export the model (onnx/cli only; not a failure)
`corrupt=True` perturbs the optimized model before it is judged: the self-check expects "wrong".
"""
from __future__ import annotations

import copy
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch

from rewrite import optimize

from . import compare
from .graphs import build_model, example_input, random_input

FORMATS = ("fx", "onnx", "cli")
FAILURES = ("wrong", "crash", "input-modified")
BOUNDARY_FILES = ("rewrite/entry/api.py", "rewrite/entry/onnx_api.py", "rewrite/options.py", "passes/onnx/io.py",
                  "passes/onnx/runtime.py")


@dataclass
class Outcome:
    fmt: str
    status: str
    detail: str = ""
    exc_type: str = ""
    applied: Counter = field(default_factory=Counter)   # applied rewrites by kind
    rolled_back: int = 0
    retried: bool = False                               # the whole-model check failed at first
    error: float | None = None
    tol: float | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    def signature(self) -> tuple:
        """What 'failing the same way' means to the shrinker."""
        return (self.fmt, self.status, self.exc_type)

    def __str__(self) -> str:
        err = f" err {self.error:.2e} (tol {self.tol:.1e})" if self.error is not None and self.tol else ""
        return f"[{self.fmt}] {self.status}{err} in {self.seconds:.1f}s{': ' + self.detail if self.detail else ''}"


def classify(fmt: str, exc: BaseException) -> Outcome:
    """declined for a clear ValueError/TypeError from the API boundary, else crash (with the trace)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1].filename.replace("\\", "/") if frames else ""
    message = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
    if isinstance(exc, (ValueError, TypeError)) and where.endswith(BOUNDARY_FILES):
        return Outcome(fmt, "declined", message, type(exc).__name__)
    tail = "".join(traceback.format_list(frames[-4:]))
    return Outcome(fmt, "crash", f"{message}\n{tail}", type(exc).__name__)


def fresh_inputs(case: dict, hw=None) -> list[torch.Tensor]:
    """Two inputs unlike the example: another batch size, then the example's batch with another
    seed (laid out channels_last where the case says so)."""
    spec, fr = case["model"], case["fresh"]
    second = random_input(spec, spec["batch"], fr["seed"] + 1, hw, fr["scale"], fr["shift"])
    if fr.get("channels_last"):
        second = second.contiguous(memory_format=torch.channels_last)
    return [random_input(spec, fr["batch"], fr["seed"], hw, fr["scale"], fr["shift"]), second]


def _report_counts(out: Outcome, report) -> Outcome:
    out.applied = Counter(s.kind for s in report.applied)
    out.rolled_back = len(report.by_status("rolled_back"))
    out.retried = any("whole-model check failed" in n or "retrying" in n for n in report.notes)
    return out


def run_fx(case: dict, corrupt: bool = False, tamper=None) -> Outcome:
    """optimize() on the case's model; judged against float64 on fresh inputs.
    tamper(model) (self-check only) changes the original right after optimize() returns."""
    model, x = build_model(case["model"]), example_input(case["model"])
    opts, budget = dict(case["fx"]["options"]), case["fx"]["options"].get("factorize_error_budget")
    fresh = fresh_inputs(case, case["fresh"]["hw"] if opts.get("dynamic_spatial") else None)
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        before = [model(f) for f in fresh]
    snap, x_before = compare.snapshot_module(model), x.clone()
    work = copy.deepcopy(model) if case["fx"]["inplace"] else model
    try:
        fast = optimize(work, x, inplace=case["fx"]["inplace"], **opts)
    except Exception as exc:  # noqa: BLE001 - classified
        return classify("fx", exc)
    if tamper is not None:
        tamper(model)
    changed = compare.snapshot_diff(snap, compare.snapshot_module(model))
    if changed or not torch.equal(x, x_before):
        return Outcome("fx", "input-modified", changed or "the example input changed")
    out = _report_counts(Outcome("fx", "ok"), fast.rewrite_report)
    if corrupt:
        out.detail = f"corrupted {compare.corrupt_module(fast)}"
    worst = (0.0, compare.FLOOR)
    for f, orig in zip(fresh, before):
        with torch.no_grad():
            ref = reference(f.double())
            try:
                y = fast(f)
            except Exception as exc:  # noqa: BLE001 - an optimized model that fails on a fresh input
                crash = classify("fx", exc)
                crash.status, crash.detail = "crash", f"optimized model fails on input {tuple(f.shape)}: {crash.detail}"
                return crash
            again = model(f)
        if any(not torch.equal(a, b) for a, b in zip(compare.as_list(again), compare.as_list(orig))):
            return Outcome("fx", "input-modified", "the original model computes something else after optimize()")
        if len(compare.as_list(y)) != len(compare.as_list(orig)):
            return Outcome("fx", "wrong", f"{len(compare.as_list(y))} outputs, the original has {len(compare.as_list(orig))}")
        worst = judge(out, compare.max_rel_error(y, ref), compare.tolerance(compare.max_rel_error(orig, ref), budget), worst)
    out.error, out.tol = worst
    return out


def judge(out: Outcome, err: float, tol: float, worst: tuple) -> tuple:
    """Mark `out` wrong when err misses tol (NaN misses); returns the worse (err, tol) pair."""
    if not err <= tol:
        out.status = "wrong"
    return (err, tol) if not err <= tol * worst[0] / worst[1] else worst


def run_case(case: dict, formats=("fx", "onnx"), corrupt: bool = False) -> list[Outcome]:
    """The outcome of each requested format (cli only where the case draws it, or alone)."""
    from .onnx_run import run_cli, run_onnx

    runners = {"fx": run_fx, "onnx": run_onnx, "cli": run_cli}
    outcomes = []
    for fmt in formats:
        if fmt == "cli" and not (case["cli"] or tuple(formats) == ("cli",)):
            continue
        started = time.perf_counter()
        outcome = runners[fmt](case, corrupt)
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
    return outcomes

