"""`optimize_onnx(src, dst=None, **options)`: the ONNX entry point.

    model, report = optimize_onnx("mobilenet_v2.onnx", "fast.onnx", target="h100")

Loads and validates the file (a clear `OnnxInputError` for anything unusable), rewrites a copy
with the ONNX passes (each site verified on the spot in onnxruntime), then compares the whole
optimized model against the original in onnxruntime on the same inputs (seeded random inputs of
the declared shapes, or the caller's). When that check fails, only the sites responsible are
rolled back, found by bisection (rewrite/retry.py); when no rewritten model passes, `ModelCheckError` is
raised and nothing is written. The output passes `onnx.checker`, keeps the graph's inputs and
outputs, and is written atomically, never over the input unless `overwrite=True`.

onnx, onnxruntime and onnx-graphsurgeon are imported here, never by `import rewrite`.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import onnx
import torch

from passes.onnx import io, runtime
from passes.onnx.io import OnnxInputError
from passes.onnx.pipeline import optimize_graph

from .numerics import max_abs_error, model_tolerance, rel_error, within
from .options import RewriteOptions
from .report import Report
from .retry import Attempt, after_whole_model_timing, rewrite_checked

__all__ = ["optimize_onnx", "OnnxInputError", "ModelCheckError"]

TORCH_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
                onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.BFLOAT16: torch.bfloat16}


class ModelCheckError(RuntimeError):
    """No rewritten model passed the whole-model check; `.report` says what was tried."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def optimize_onnx(src, dst=None, *, overwrite: bool = False, inputs=None, batch: int = 1,
                  input_shapes: dict | None = None, seed: int = 0, external_data: bool | None = None,
                  progress: Callable[[str], None] | None = None, verbose: bool = False,
                  **options) -> tuple[onnx.ModelProto, Report]:
    """Rewrite an ONNX model for speed; returns (optimized ModelProto, Report).

    src: a path to a .onnx file (its external data is read too) or an onnx.ModelProto (left unchanged).
    dst: where to write the result (None: not written). Refused if it is `src` unless `overwrite`.
    inputs: the check inputs, a dict {input name: array} or a .npz path; default seeded random
        inputs of the declared shapes, symbolic dimensions set to `batch` (first) or 1, unless
        `input_shapes` = {input name: shape} says otherwise.
    external_data: write tensors to `<dst>.data`; default when the input had external data or
        the model is over 2 GB.
    progress: called with one-line progress messages (per site when verbose or > 50 sites).
    options: see `rewrite.options.RewriteOptions` (passes, target, cost_model, min_speedup,
        factorize_error_budget, site_tolerance, model_tolerance, check, force_fuse).
    """
    opts = RewriteOptions.from_kwargs(options, "optimize_onnx").resolved("cpu")   # onnxruntime's CPU provider
    say = progress or (lambda message: None)
    loaded = io.load(src)
    io.validate(loaded)
    dst = io.resolve_destination(loaded, dst, overwrite) if dst is not None else None
    model = loaded.model
    dtype = model_dtype(model)
    try:
        feeds = runtime.user_inputs(model, inputs) if inputs is not None else \
            runtime.random_inputs(model, batch, input_shapes, seed)
    except OnnxInputError:
        if opts.check or inputs is not None or input_shapes:
            raise
        feeds = None        # unchecked: the passes fall back to static shapes from shape inference
    reference = reference_note = baseline = None
    if opts.check:
        say("running the original model")
        reference, reference_note, baseline = _reference(model, feeds)
    full_check = _passes_full_check(model)
    tol = model_tolerance(dtype, opts.model_tolerance, baseline or 0.0)

    history = [reference_note] if reference_note else []

    def run(run_opts: RewriteOptions) -> Attempt:
        optimized, report = optimize_graph(model, run_opts, dtype, feeds, progress, verbose)
        report.notes = list(dict.fromkeys(history + report.notes))
        report.model_baseline_error = baseline
        say("whole-model check")
        passed = _passes(optimized, feeds, reference, report, tol, full_check)
        err = report.model_rel_error
        return Attempt(optimized, report, passed, "the ONNX checker" if err is None else f"rel error {err:.2e} > {tol:.1e}")

    final = rewrite_checked(run, opts, say)
    optimized, report = final.result, final.report
    report.record_rollback(final.rolled_back, final.history, final.verdict)
    if not final.passed:
        raise ModelCheckError("the optimized model failed the whole-model check even with every rewrite "
                              "rolled back; nothing written", report)
    if opts.measured:
        optimized, report = after_whole_model_timing(run, opts, final, optimized, _whole_models(model, optimized, feeds),
                                                     " in onnxruntime")
        if optimized is None:
            optimized = onnx.ModelProto()
            optimized.CopyFrom(model)
    if dst is not None:
        external = external_data if external_data is not None else (loaded.external or io.too_big(optimized))
        say(f"writing {dst}" + (" (external data)" if external else ""))
        io.save(optimized, dst, external)
    return optimized, report


def _whole_models(model: onnx.ModelProto, optimized: onnx.ModelProto, feeds):
    """(original, optimized, no inputs): both models in optimized onnxruntime sessions, to time;
    None without inputs or for a model too big to hold twice."""
    if feeds is None or io.too_big(model):
        return None
    original, rewritten = runtime.session(model, optimized=True), runtime.session(optimized, optimized=True)
    return (lambda: original.run(None, feeds)), (lambda: rewritten.run(None, feeds)), ()


def model_dtype(model: onnx.ModelProto) -> torch.dtype:
    """The float dtype of the conv weights (most common), else of the first float graph input."""
    init = {t.name: t.data_type for t in model.graph.initializer}
    weights = Counter(init.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1)
    for data_type, _ in weights.most_common():
        if data_type in TORCH_DTYPES:
            return TORCH_DTYPES[data_type]
    for vi in runtime.graph_inputs(model):
        if vi.type.tensor_type.elem_type in TORCH_DTYPES:
            return TORCH_DTYPES[vi.type.tensor_type.elem_type]
    return torch.float32


def _reference(model: onnx.ModelProto, feeds: dict) -> tuple[dict, str, float | None]:
    """(reference outputs, what they are, the original's own error against them or None).

    onnxruntime has no float64 Conv on CPU, so a float32 model is its own reference; a float16
    model is compared with its float32 copy, and its own error against that copy widens the
    default tolerance (rewrite.numerics.model_tolerance)."""
    try:
        outputs = runtime.run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        raise OnnxInputError(
            f"onnxruntime cannot run the model on inputs {shapes} ({str(exc).strip().splitlines()[0][:300]}); "
            "give the input shapes or inputs, or disable the numerical checks (check=False / --no-check)") from None
    wide = runtime.widened_reference(model)
    if wide is not None:
        try:
            wide_feeds = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in feeds.items()}
            reference = runtime.run(wide, wide_feeds)
            return reference, "whole-model reference: the original model widened to float32", _compare(outputs, reference)[0]
        except Exception:  # noqa: BLE001 - fall back to the model as it is
            pass
    return outputs, "whole-model reference: the original model in onnxruntime (no float64 Conv on CPU)", None


def _passes_full_check(model: onnx.ModelProto) -> bool:
    try:
        io.check(model, full=True)
        return True
    except Exception:  # noqa: BLE001 - then the output is held to the basic checker only
        return False


def _passes(optimized, feeds, reference, report: Report, tol: float, full_check: bool) -> bool:
    try:
        io.check(optimized, full=full_check)
    except Exception as exc:  # noqa: BLE001
        report.notes.append(f"the optimized model fails the ONNX checker ({str(exc).splitlines()[0][:200]})")
        return False
    if reference is None:
        return True
    try:
        outputs = runtime.run(optimized, feeds)
        err, abs_err = _compare(outputs, reference)
    except Exception as exc:  # noqa: BLE001 - a rewritten model that fails to run is rolled back
        report.notes.append(f"the optimized model failed to run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        err = abs_err = float("inf")
    report.model_rel_error, report.model_max_abs_error, report.model_tolerance = err, abs_err, tol
    return within(err, tol)


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
