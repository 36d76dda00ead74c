"""`optimize_onnx(src, dst=None, **options)`: the ONNX entry point.

    model, report = optimize_onnx("mobilenet_v2.onnx", "fast.onnx", target="h100")

Loads and validates the file (a clear `OnnxInputError` for anything unusable), rewrites a copy
with the ONNX passes (each site verified on the spot in onnxruntime), then compares the whole
optimized model with the original evaluated in float64 on the same inputs (seeded random inputs
of the declared shapes, or the caller's), within max(the dtype's default, 2x the original's own
error); see _reference for when float64 is out of reach. When that check fails, only the sites responsible are
rolled back, found by bisection (rewrite/entry/retry.py); when no rewritten model passes, `ModelCheckError` is
raised and nothing is written. The output passes `onnx.checker`, keeps the graph's inputs and
outputs, and is written atomically, never over the input unless `overwrite=True`.

onnx, onnxruntime and onnx-graphsurgeon are imported here, never by `import rewrite`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from typing import Callable, NamedTuple

import numpy as np
import onnx
import torch

from passes.onnx import cleanup as clean
from passes.onnx import io, reference, runtimes
from passes.onnx import runtime as ort_runtime
from passes.onnx.io import OnnxInputError
from passes.onnx.pipeline import optimize_graph

from ..numerics import max_abs_error, model_tolerance, rel_error, rms_rel_error, within
from ..options import Calibration, RewriteOptions, RunState
from ..report import ModelCheck, Report
from .approximate import split_samples
from .driver import checked_optimize
from .retry import Attempt

__all__ = ["optimize_onnx", "OnnxInputError", "ModelCheckError"]

TORCH_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
                onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.BFLOAT16: torch.bfloat16}


# sizes tried, in order, for dynamic spatial dimensions the caller gave no size for: multiples
# of 32 (detectors downsample by 32), small first to keep the checks fast
SPATIAL_SIZES = (64, 224, 32, 320)
# the float64 evaluation of the original gives up past this (then: the rounding-spread estimate)
REFERENCE_BUDGET_S = 8.0


class ModelCheckError(RuntimeError):
    """No rewritten model passed the whole-model check; `.report` says what was tried."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def optimize_onnx(src, dst=None, *, overwrite: bool = False, inputs=None, batch: int = 1,
                  input_shapes: dict | None = None, seed: int = 0, external_data: bool | None = None,
                  progress: Callable[[str], None] | None = None, verbose: bool = False, cleanup: bool = True,
                  runtime: str = "onnxruntime", calibration=None, **options) -> tuple[onnx.ModelProto, Report]:
    """Rewrite an ONNX model for speed; returns (optimized ModelProto, Report).

    src: a path to a .onnx file (its external data is read too) or an onnx.ModelProto (left unchanged).
    dst: where to write the result (None: not written). Refused if it is `src` unless `overwrite`.
    inputs: the check inputs, a dict {input name: array} or a .npz path; default seeded random
        inputs of the declared shapes, dynamic dimensions (named, empty, -1 or 0) set to `batch`
        (first), a size the model runs at (spatial: the first of SPATIAL_SIZES) or 1, unless
        `input_shapes` = {input name: shape} says otherwise.
    external_data: write tensors to `<dst>.data`; default when the input had external data or
        the model is over 2 GB.
    progress: called with one-line progress messages (per site when verbose or > 50 sites).
    calibration (with approximate=REL): samples of what the model really sees, a dict {input name:
        array} or a .npz path, samples stacked on the leading axis; a quarter (at least one) is held
        out to measure the error, and the first held-out sample is the check input unless `inputs`
        is given (rewrite/entry/approximate.py).
    cleanup: first the generic clean-up by onnxslim when it is installed (passes/onnx/cleanup.py:
        constant folding, dead nodes, shape inference), checked like a rewrite; False: skip it.
    runtime: where the measured cost model times each site's two forms and the whole model, as the
        file will run: "onnxruntime" (default; CPU provider, optimizations on), "openvino" (OpenVINO's
        CPU plugin at f32) or "openvino-default" (at the CPU's default precision, bf16 where the CPU
        has it); passes/onnx/runtimes.py says why "openvino" is f32. OpenVINO is an optional extra
        (pip install openvino). The numerical checks run in onnxruntime whatever the runtime.
    options: see `rewrite.options.RewriteOptions` (passes, target, cost_model, min_speedup,
        factorize_error_budget, site_tolerance, model_tolerance, check, force_fuse, force_blocks).
    """
    opts = RewriteOptions.from_kwargs(options, "optimize_onnx").resolved("cpu")   # a CPU runtime
    runtimes.check(runtime)
    say = progress or (lambda message: None)
    loaded = io.load(src)
    io.validate(loaded)
    dst = io.resolve_destination(loaded, dst, overwrite) if dst is not None else None
    model = loaded.model
    dtype = model_dtype(model)
    held = _calibration(model, opts, calibration)
    if held is not None:
        opts = dataclasses.replace(opts, calibration=held)
        inputs = held.held[0] if inputs is None else inputs
    # a dynamic spatial dimension with no hint: the first of SPATIAL_SIZES the model runs at
    sizes = SPATIAL_SIZES if inputs is None and not input_shapes and ort_runtime.dynamic_spatial(model) else (None,)
    reference = reference_note = baseline = None
    for size in sizes:
        try:
            feeds = ort_runtime.user_inputs(model, inputs) if inputs is not None else \
                ort_runtime.random_inputs(model, batch, input_shapes, seed, spatial=size or ort_runtime.SPATIAL_DEFAULT)
        except OnnxInputError:
            if opts.check or inputs is not None or input_shapes:
                raise
            feeds = None        # unchecked: the passes fall back to static shapes from shape inference
        if not opts.check:
            break
        say("running the original model" + (f" (dynamic spatial dims set to {size})" if size else ""))
        try:
            reference, reference_note, baseline = _reference(model, feeds, say)
            break
        except OnnxInputError:
            if size == sizes[-1]:
                raise
    full_check = _passes_full_check(model)
    held_references = [ort_runtime.run(model, feeds) for feeds in held.held] if held else []
    tol = model_tolerance(dtype, opts.model_tolerance, baseline or 0.0)

    history = list(loaded.notes) + ([_inputs_note(feeds, inputs, size)] if feeds is not None else [])
    history += [reference_note] if reference_note else []
    source = model
    if cleanup:
        say("generic clean-up (onnxslim)")
        slimmed, note = clean.slim(model)
        if slimmed is not None and reference is not None:
            passed, alone = _passes(slimmed, feeds, reference, tol, full_check)
            if not passed:
                err = alone.rel_error
                why = alone.notes[-1] if alone.notes else f"rel error {err:.2e} > {tol:.1e}" if err is not None \
                    else "it failed"
                slimmed, note = None, f"{note}: its model misses the whole-model check ({why}); not used"
        source = slimmed if slimmed is not None else model
        history.append(note)

    front = _OnnxFront(model, source, opts, dtype, feeds, reference, baseline, tol, full_check, history, held,
                       held_references, progress, verbose, runtime, say)
    outcome = checked_optimize(front, opts, dtype, baseline, tol, approximate=held is not None, say=say)
    if not outcome.passed:
        raise ModelCheckError("the optimized model failed the whole-model check even with every rewrite "
                              "rolled back; nothing written", outcome.report)
    optimized = outcome.result
    if dst is not None:
        external = external_data if external_data is not None else (loaded.external or io.too_big(optimized))
        say(f"writing {dst}" + (" (external data)" if external else ""))
        io.save(optimized, dst, external)
    return optimized, outcome.report


class _OnnxFront:
    """optimize_onnx()'s side of the driver (rewrite/entry/driver.py): a run is optimize_graph over
    the (cleaned) source; the whole-model check runs the result in onnxruntime against the
    reference, or, with fitted sites, against the original's outputs on the held-out calibration
    samples; timing runs both models in the timing runtime."""

    weak_hint = "inputs=, or rewrite-onnx --inputs FILE.npz"

    def __init__(self, model, source, opts, dtype, feeds, reference, baseline, tol, full_check, history, held,
                 held_references, progress, verbose, runtime, say):
        self.model, self.source, self.opts, self.dtype, self.feeds = model, source, opts, dtype, feeds
        self.reference, self.baseline, self.tol, self.full_check = reference, baseline, tol, full_check
        self.history, self.held, self.held_references = history, held, held_references
        self.progress, self.verbose, self.runtime, self.say = progress, verbose, runtime, say

    def run(self, state: RunState) -> Attempt:
        optimized, facts = optimize_graph(self.source, self.opts, self.dtype, self.feeds, state=state,
                                          progress=self.progress, verbose=self.verbose, runtime=self.runtime)
        facts = dataclasses.replace(facts, notes=tuple(dict.fromkeys(self.history + list(facts.notes))))
        self.say("whole-model check")
        passed, check = _passes(optimized, self.feeds, self.reference, self.tol, self.full_check)
        check = dataclasses.replace(check, baseline_error=self.baseline, budget=self.opts.approximate)
        err = check.rel_error
        if any(site.fitted_error is not None for site in facts.applied) and (passed or err is not None):
            return self._held_out_attempt(optimized, facts, check)
        return Attempt(optimized, facts, check, passed,
                       "the ONNX checker" if err is None else f"rel error {err:.2e} > {self.tol:.1e}")

    def _held_out_attempt(self, optimized: onnx.ModelProto, facts, check: ModelCheck) -> Attempt:
        """The whole-model check of a model with fitted sites: its error on the held-out calibration
        samples (against the original in onnxruntime) within the budget, and the ONNX checker."""
        notes = ()
        try:
            sess = ort_runtime.session(optimized)
            error = rms_rel_error((out, ref[name]) for feeds, ref in zip(self.held.held, self.held_references)
                                  for name, out in zip(ref, sess.run(list(ref), feeds))
                                  if np.issubdtype(ref[name].dtype, np.floating))
        except Exception as exc:  # noqa: BLE001 - a rewritten model that fails to run is rolled back
            notes = (f"the optimized model failed to run ({ort_runtime.error_text(exc, 200)})",)
            error = float("inf")
        budget = self.opts.approximate
        check = dataclasses.replace(check, held_out_error=error, budget=budget, notes=check.notes + notes)
        return Attempt(optimized, facts, check, within(error, budget),
                       f"held-out rel error {error:.2e} > budget {budget:g}")

    def original(self):
        copy = onnx.ModelProto()
        copy.CopyFrom(self.model)
        return copy

    def original_check(self, original):
        return None        # nothing passed: refused (ModelCheckError), nothing written

    def unchanged(self):
        return None        # the cleaned model is returned, even with no rewrite in it

    def timed(self, result):
        # timed only when a rewrite is in it: the clean-up alone is onnxslim's work, not a decision of ours
        return _whole_models(self.model, result, self.feeds, self.runtime)

    def runner(self, result):
        return _runner(result, self.feeds, self.runtime)

    def timing_label(self, facts) -> str:
        return f" in {facts.runtime or self.runtime}"


def _calibration(model: onnx.ModelProto, opts: RewriteOptions, calibration) -> Calibration | None:
    """The fit and held-out samples as feeds dicts, or None without approximate; a clear error
    for a calibration given without a budget or a budget without calibration."""
    if opts.approximate is None:
        if calibration is not None:
            raise OnnxInputError("calibration inputs are for approximate rewriting: give approximate=REL (--approximate "
                             "REL) too; the default rewrites are exact and need none")
        return None
    if calibration is None:
        raise OnnxInputError(f"approximate={opts.approximate:g} needs calibration inputs (calibration=FILE.npz, "
                         "--calibration FILE.npz: arrays named after the model's inputs, samples stacked on the "
                         "leading axis); nothing approximate is ever applied without them")
    if not opts.check:
        raise OnnxInputError("approximate rewriting is judged by the whole-model check on held-out samples; it needs "
                         "the checks on")
    stacked = ort_runtime.user_arrays(calibration)
    counts = {name: len(a) for name, a in stacked.items()}
    if len(set(counts.values())) > 1:
        raise OnnxInputError(f"calibration: the inputs hold different numbers of samples {counts}")
    count = next(iter(counts.values()), 0)
    samples = [ort_runtime.user_inputs(model, {name: a[i:i + 1] for name, a in stacked.items()}) for i in range(count)]
    return split_samples(samples)


def _whole_models(model: onnx.ModelProto, optimized: onnx.ModelProto, feeds, timing_runtime: str):
    """(original, optimized, no inputs): both models compiled in the timing runtime, to time;
    None without inputs or for a model too big to hold twice."""
    if feeds is None or io.too_big(model):
        return None
    return _runner(model, feeds, timing_runtime), _runner(optimized, feeds, timing_runtime), ()


def _runner(model: onnx.ModelProto, feeds: dict, timing_runtime: str):
    """A callable of no arguments running `model` on `feeds` in the timing runtime; its `.model`
    is the ModelProto (what a cost model's compare_models may look at, as the FX path passes the
    module itself)."""
    run = runtimes.compiled(model, timing_runtime)

    def call():
        return run(feeds)
    call.model = model
    return call


def model_dtype(model: onnx.ModelProto) -> torch.dtype:
    """The float dtype of the conv weights (most common), else of the first float graph input."""
    init = {t.name: t.data_type for t in model.graph.initializer}
    weights = Counter(init.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1)
    for data_type, _ in weights.most_common():
        if data_type in TORCH_DTYPES:
            return TORCH_DTYPES[data_type]
    for vi in ort_runtime.graph_inputs(model):
        if vi.type.tensor_type.elem_type in TORCH_DTYPES:
            return TORCH_DTYPES[vi.type.tensor_type.elem_type]
    return torch.float32


def _inputs_note(feeds: dict, inputs, size: int | None) -> str:
    """`size`: what the dynamic spatial dims were set to (None: there are none)."""
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
    if inputs is not None:
        return f"check inputs: the caller's, {shapes}"
    how = (f"; dynamic spatial dims set to {size} (give input_shapes / "
           "--input-shape NAME:D0,D1,... for the size the model is used at)" if size is not None else "")
    return f"check inputs: seeded random, {shapes}{how}"


class Reference(NamedTuple):
    outputs: dict       # what the optimized model is compared with (float64 where it could be had)
    original: dict      # the original's own outputs in onnxruntime


def _reference(model: onnx.ModelProto, feeds: dict, say=lambda message: None) -> tuple[Reference, str, float | None]:
    """(reference outputs, what they are, the original's own error against them or None).

    The reference is the original evaluated in float64 (passes/onnx/reference.py, within
    REFERENCE_BUDGET_S), and the original's own error against it widens the default tolerance
    (rewrite.numerics.model_tolerance), as for PyTorch models. Where float64 is out of reach (ops
    it cannot widen, past its budget), a float16 model is compared with its float32 copy, and a
    float32 model is its own reference, its own rounding error estimated from onnxruntime with
    its graph optimizations on against off (fused, re-laid-out kernels round differently)."""
    try:
        outputs = ort_runtime.run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        raise OnnxInputError(
            f"onnxruntime cannot run the model on inputs {shapes} ({ort_runtime.error_text(exc)}); "
            "give the input shapes or inputs, or disable the numerical checks (check=False / --no-check)") from None
    say("evaluating the original in float64")
    started = time.perf_counter()
    try:
        exact = reference.evaluate(model, feeds, REFERENCE_BUDGET_S)
        # integer outputs (indices, shapes) are compared exactly with the original's
        exact = {k: exact[k] if np.issubdtype(v.dtype, np.floating) else v for k, v in outputs.items()}
        own = _compare(outputs, exact)[0]
        if math.isfinite(own):
            return Reference(exact, outputs), (f"whole-model reference: the original evaluated in float64 (onnx.reference, convs in "
                           f"torch; {time.perf_counter() - started:.1f} s); its own error {own:.1e}"), own
        why = f"the original's float32 outputs are {own} away from it"
    except (reference.ReferenceUnavailable, ValueError) as exc:
        why = str(exc)
    wide = ort_runtime.widened_reference(model)
    if wide is not None:
        try:
            wide_feeds = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in feeds.items()}
            ref = ort_runtime.run(wide, wide_feeds)
            return Reference(ref, outputs), (f"whole-model reference: the original model widened to float32 (no float64 reference: "
                         f"{why})"), _compare(outputs, ref)[0]
        except Exception:  # noqa: BLE001 - fall back to the model as it is
            pass
    try:
        spread = _compare(reference.rounding_spread(model, feeds, outputs), outputs)[0]
    except Exception:  # noqa: BLE001 - then no estimate: the default tolerance stands
        spread = None
    estimate = (f"; its own rounding error estimated as {spread:.1e} from onnxruntime with graph optimizations "
                "on vs off" if spread is not None else "")
    return Reference(outputs, outputs), \
        f"whole-model reference: the original model in onnxruntime (no float64 reference: {why}){estimate}", \
        spread


def _passes_full_check(model: onnx.ModelProto) -> bool:
    try:
        io.check(model, full=True)
        return True
    except Exception:  # noqa: BLE001 - then the output is held to the basic checker only
        return False


def _passes(optimized, feeds, reference, tol: float, full_check: bool) -> tuple[bool, ModelCheck]:
    """(whether `optimized` passes the whole-model check, what the check measured and noted)."""
    try:
        io.check(optimized, full=full_check)
    except Exception as exc:  # noqa: BLE001
        return False, ModelCheck(notes=(f"the optimized model fails the ONNX checker ({str(exc).splitlines()[0][:200]})",))
    if reference is None:
        return True, ModelCheck()
    try:
        outputs = ort_runtime.run(optimized, feeds)
        err, abs_err = _compare(outputs, reference.outputs)
    except Exception as exc:  # noqa: BLE001 - a rewritten model that fails to run is rolled back
        note = f"the optimized model failed to run ({type(exc).__name__}: {ort_runtime.error_text(exc, 200)})"
        return False, ModelCheck(float("inf"), float("inf"), tol, notes=(note,))
    check = ModelCheck(err, abs_err, tol)
    if within(err, tol):
        return True, check
    # a tolerance tighter than the original's own error: what computes exactly the original's
    # outputs (every rewrite rolled back) still passes
    return reference.original is not reference.outputs and _compare(outputs, reference.original) == (0.0, 0.0), check


def _compare(outputs: dict, reference: dict) -> tuple[float, float]:
    if list(outputs) != list(reference):
        raise ValueError(f"optimized model has outputs {list(outputs)}, the original {list(reference)}")
    rel = absolute = 0.0
    for name, ref in reference.items():
        out = outputs[name]
        if np.issubdtype(ref.dtype, np.floating):
            y, r = torch.from_numpy(np.asarray(out, np.float64)), torch.from_numpy(np.asarray(ref, np.float64))
            rel, absolute = max(rel, rel_error(y, r)), max(absolute, max_abs_error(y, r))
        elif out.shape != ref.shape or not np.array_equal(out, ref):
            rel = absolute = float("inf")
    return rel, absolute
