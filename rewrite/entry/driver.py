"""The checked-optimize driver both entry points call: `optimize` (PyTorch, api.py) and
`optimize_onnx` (ONNX files, onnx_api.py) differ only in their `Front`.

    run the passes and the whole-model check            Front.run(RunState) -> Attempt
    on a failure: roll back the culprits only           rewrite_checked (retry.py), or the
                                                        approximate ladder (approximate.py)
    a weak check (the original far from float64)       a warning
    nothing passed                                      the original, re-checked (PyTorch), or
                                                        refused with the report (ONNX)
    measured cost model: the whole model timed          after_whole_model_timing (retry.py)
    one report, built once                              rewrite.report.build_report

Options are resolved once, by the entry point, before the Front is made; what each run is told
(sites to skip, to keep to) is the RunState the retries pass to Front.run, never the options.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol

from ..numerics import weak_check_warning
from ..options import RewriteOptions, RunState
from ..report import ModelCheck, Report, RunFacts, build_report
from .approximate import rewrite_approximate
from .retry import Attempt, after_whole_model_timing, rewrite_checked


class Front(Protocol):
    """What the driver needs from an entry point: its format's run, original and timing."""

    weak_hint: str      # how the user gives check inputs the whole-model check can trust

    def run(self, state: RunState) -> Attempt:
        """The passes over a fresh copy of the original, then the whole-model check of the result."""

    def original(self):
        """A fresh copy of the original model, to return."""

    def original_check(self, original) -> ModelCheck | None:
        """The whole-model check of the original itself when no rewritten model passed (it is then
        returned), or None: the entry point refuses instead (the driver's Outcome says so)."""

    def unchanged(self):
        """What to return when the check passed with nothing applied (a copy of the original, since a
        re-exported graph can run slower than the module it came from), or None: the result as is."""

    def timed(self, result) -> tuple | None:
        """(original runner, result runner, inputs) to time the whole model both ways, or None."""

    def runner(self, result) -> Callable:
        """A callable running a rebuilt result on timed()'s inputs."""

    def timing_label(self, facts: RunFacts) -> str:
        """Where the whole model is timed, for the cost model's note, e.g. " in onnxruntime 1.32.0"."""


@dataclass(frozen=True)
class Outcome:
    result: object      # the model to return; None when passed is False and the front refuses
    report: Report
    passed: bool        # a rewritten model (or the original, where returned) passed the whole-model check


def checked_optimize(front: Front, options: RewriteOptions, dtype, baseline: float | None, tolerance: float,
                     approximate: bool = False, say: Callable[[str], None] = lambda message: None) -> Outcome:
    """Run `front` through the checks, retries and timing (module docstring); the report is built
    once, at the end, from what each stage returned."""
    state = RunState()
    final = (rewrite_approximate if approximate else rewrite_checked)(front.run, state, say)
    rolled_back = dict(final.rolled_back)
    notes = list(dict.fromkeys(list(final.history) + final.notes)) + ([final.verdict] if final.verdict else [])
    weak = weak_check_warning(dtype, baseline, tolerance, front.weak_hint)
    warnings = [weak] if weak else []
    check, result = final.check, final.result
    if not final.passed:
        restored = front.original()
        recheck = front.original_check(restored)
        if recheck is None:
            return Outcome(None, build_report(final.facts, check, rolled_back, notes, warnings), False)
        result, check = restored, dataclasses.replace(check, rel_error=recheck.rel_error,
                                                      max_abs_error=recheck.max_abs_error)
        notes.append("returned the original model unchanged")
    applied = final.passed and bool(final.applied())
    if final.passed and not applied:
        copy = front.unchanged()
        if copy is not None:
            result = copy
            notes.append("no rewrite applied: returned a copy of the original model")
    timing = None
    if options.measured:
        timed = front.timed(result) if applied else None
        decided = after_whole_model_timing(front.run, options, state, final, result, timed,
                                           front.timing_label(final.facts), runner=front.runner)
        result = decided.result if decided.result is not None else front.original()
        rolled_back.update(decided.rolled_back)
        notes += decided.notes
        check, timing = decided.check or check, decided.timing
    return Outcome(result, build_report(final.facts, check, rolled_back, notes, warnings, timing), True)
