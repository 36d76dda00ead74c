"""`optimize(model, example_inputs, **options)`: the PyTorch entry point.

Validates the model, captures a copy with torch.export and rewrites its ATen graph through the
shared passes (each site verified on the spot), then
checks the whole model against a float64 reference of the original. If that final check fails,
only the sites responsible are rolled back, found by bisection (rewrite/entry/retry.py), so the
returned model never misses its tolerance silently. The default tolerance is max(dtype default, 2 × the
original model's own error against float64), since in fp16/bf16 the original itself is far
from float64; a tolerance the user sets is used as given.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten, tree_map

from ..numerics import FLOAT_DTYPES, max_abs_error, model_tolerance, rel_error, rms_rel_error, within
from ..options import Calibration, RewriteOptions, RunState, model_device
from ..report import ModelCheck, RunFacts, build_report
from .approximate import split_samples
from .driver import checked_optimize
from .retry import Attempt


def optimize(model: nn.Module, example_inputs, *, inplace: bool = False, calibration=None, metric=None,
             max_metric_drop: float | None = None, **options) -> nn.Module:
    """Return a module computing the same function as `model` (eval mode), rewritten for speed.

    example_inputs: a tensor or tuple of tensors the model accepts; the activations they produce
        are what every rewrite is checked on, and their shapes feed the cost model.
    inplace: when False (default) `model` is left untouched; when True its modules are reused
        and modified (no copy of the weights is made), so only the returned module is valid.
    calibration (with approximate=REL): samples of what the model really sees, a tensor stacked on
        the leading axis (one sample per row) or a list of inputs (each a tensor or a tuple); a
        quarter (at least one) is held out to measure the error (rewrite/entry/approximate.py).
    metric, max_metric_drop (with approximate): metric(model) -> float, higher is better (a task
        accuracy on the user's data); a set of fitted sites is kept only while the metric stays
        within max_metric_drop of the original's, besides the held-out budget.
    options: see `rewrite.options.RewriteOptions` (passes, target, cost_model, min_speedup,
        factorize_error_budget, site_tolerance, model_tolerance, check, force_fuse, force_blocks, channels_last,
        dynamic_spatial, timing_cache). The result is a `passes.fx.result.OptimizedModule`, an
        ordinary torch.fx.GraphModule (the torch.export capture, rewritten) that runs at any batch
        size, takes eval(), torch.save, both ONNX exporters, trace, export, compile and OpenVINO,
        and refuses train(True) (it is for inference only); or the model with its exportable
        submodules replaced; a copy of the model itself when no rewrite was applied, or when
        (measured cost model) the optimized model measured slower than the original.
    The result carries `.rewrite_report`, a `rewrite.report.Report`.
    """
    opts = RewriteOptions.from_kwargs(options, "optimize")
    example_inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    dtype, output = _validate(model, example_inputs)
    opts = opts.resolved(model_device(model, example_inputs))     # the one resolution of the options
    held = _calibrated(opts, calibration, metric, max_metric_drop)
    if held is not None:
        opts = dataclasses.replace(opts, calibration=held)
    from passes.fx.pipeline import optimize_fx  # front end loaded on use: rewrite/ stays graph-free

    work = model if inplace else copy.deepcopy(model)
    if not opts.check:
        optimized, facts = optimize_fx(work, example_inputs, opts, dtype)
        optimized.rewrite_report = build_report(facts)
        return optimized
    front = _TorchFront(model, example_inputs, work, inplace, opts, dtype, output, held, metric, max_metric_drop)
    outcome = checked_optimize(front, opts, dtype, front.baseline, front.tolerance, approximate=held is not None)
    for warning in outcome.report.warnings:
        warnings.warn(warning, stacklevel=2)
    outcome.result.rewrite_report = outcome.report
    return outcome.result


class _TorchFront:
    """optimize()'s side of the driver (rewrite/entry/driver.py): a run is optimize_fx over a
    pristine copy of the model (the first run may rewrite `work` itself), replaying one
    torch.export capture; the whole-model check compares with the float64 reference, or, with
    fitted sites, with the originals' outputs on the held-out calibration samples."""

    weak_hint = "pass example_inputs the model is used on"

    def __init__(self, model, example_inputs, work, inplace, opts, dtype, output, held, metric, max_metric_drop):
        from passes.fx.pipeline import Captured

        self.model, self.example_inputs, self.inplace, self.opts, self.dtype = model, example_inputs, inplace, opts, dtype
        self.held, self.metric, self.max_metric_drop = held, metric, max_metric_drop
        self.reference_model = _float64_copy(model)
        with torch.no_grad():
            self.reference = self.reference_model(*tree_map(_to_float64, example_inputs))
            self.baseline, _ = _compare(output, self.reference)
            self.held_references = ([self.reference_model(*tree_map(_to_float64, s)) for s in held.held]
                                    if held else [])
        self.tolerance = model_tolerance(dtype, opts.model_tolerance, self.baseline)
        self.original_metric = metric(copy.deepcopy(model)) if metric is not None else None
        self.fresh = iter([work])
        self.captured = Captured()

    def run(self, state: RunState) -> Attempt:
        from passes.fx.pipeline import optimize_fx

        facts, check_notes = None, ()
        try:
            start = next(self.fresh, None)
            start = self.original() if start is None else start
            optimized, facts = optimize_fx(start, self.example_inputs, self.opts, self.dtype, state=state,
                                           captured=self.captured)
            with torch.no_grad():
                out = optimized(*self.example_inputs)
            err, abs_err = _compare(out, self.reference)
        except Exception as exc:  # noqa: BLE001 - a rewritten model that fails to run is rolled back
            optimized = None
            facts = facts or RunFacts(target=self.opts.target, dtype=str(self.dtype).replace("torch.", ""))
            check_notes = (f"optimized model failed to run ({type(exc).__name__}: {exc})",)
            err = abs_err = float("inf")
        check = ModelCheck(err, abs_err, self.tolerance, self.baseline, self.opts.approximate, notes=check_notes)
        if optimized is not None and any(site.fitted_error is not None for site in facts.applied):
            return self._held_out_attempt(optimized, facts, check)
        return Attempt(optimized, facts, check, within(err, self.tolerance), f"rel error {err:.2e} > {self.tolerance:.1e}")

    def _held_out_attempt(self, optimized, facts: RunFacts, check: ModelCheck) -> Attempt:
        """The whole-model check of a model with fitted sites: its error on the held-out calibration
        samples against the budget (and the user's metric against its allowed drop)."""
        with torch.no_grad():
            pairs = [(o, r) for s, ref in zip(self.held.held, self.held_references)
                     for o, r in zip(tree_flatten(optimized(*s))[0], tree_flatten(ref)[0])
                     if isinstance(r, torch.Tensor) and r.is_floating_point()]
        error, budget = rms_rel_error(pairs), self.opts.approximate
        check = dataclasses.replace(check, held_out_error=error, budget=budget)
        why = f"held-out rel error {error:.2e} > budget {budget:g}"
        passed = within(error, budget)
        if passed and self.metric is not None:
            value = self.metric(optimized)
            check = dataclasses.replace(check, metric=(self.original_metric, value))
            passed = value >= self.original_metric - self.max_metric_drop
            why = f"metric {value:.4g} < {self.original_metric:.4g} - {self.max_metric_drop:g}"
        return Attempt(optimized, facts, check, passed, why)

    def original(self):
        return _pristine(self.model, self.inplace, self.reference_model, self.dtype)

    def original_check(self, original) -> ModelCheck:
        with torch.no_grad():
            err, abs_err = _compare(original(*self.example_inputs), self.reference)
        return ModelCheck(err, abs_err)

    def unchanged(self):
        return None if self.inplace else self.original()

    def timed(self, result):
        # the whole model is timed against the original unless that was rewritten in place
        return None if self.inplace else (self.model, result, self.example_inputs)

    def runner(self, result):
        return result

    def timing_label(self, facts: RunFacts) -> str:
        return ""


def _calibrated(opts: RewriteOptions, calibration, metric, max_metric_drop) -> Calibration | None:
    """The fit and held-out samples as tuples of inputs, or None without approximate; a clear
    error for a calibration, metric or budget given without what it needs."""
    if opts.approximate is None:
        if calibration is not None or metric is not None:
            raise ValueError("calibration= and metric= are for approximate rewriting: pass approximate=REL too "
                             "(e.g. approximate=0.02); the default rewrites are exact and need neither")
        return None
    if calibration is None:
        raise ValueError(f"approximate={opts.approximate:g} needs calibration inputs: optimize(model, x, "
                         "approximate=REL, calibration=samples), samples stacked on the leading axis or a list of "
                         "inputs; nothing approximate is ever applied without them")
    if not opts.check:
        raise ValueError("approximate rewriting is judged by the whole-model check on held-out samples; it needs "
                         "check=True")
    if (metric is None) != (max_metric_drop is None):
        raise ValueError("metric= and max_metric_drop= go together: metric(model) -> float (higher is better) and "
                         "the largest drop from the original's value to accept")
    if isinstance(calibration, torch.Tensor):
        samples = [(calibration[i:i + 1],) for i in range(calibration.shape[0])]
    else:
        samples = [s if isinstance(s, tuple) else (s,) for s in calibration]
    return split_samples(samples)


def _validate(model: nn.Module, example_inputs: tuple) -> tuple[torch.dtype, object]:
    """(the model's dtype, its output on the example inputs), or a clear error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize() takes an nn.Module, got {type(model).__name__}")
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"model is in training mode ({', '.join(training[:3])}{'...' if len(training) > 3 else ''}): "
            "BatchNorm folding and the numerics checks need inference behaviour; call model.eval() first"
        )
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    bad = [d for d in dtypes if d not in FLOAT_DTYPES]
    if bad:
        raise TypeError(f"optimize() rewrites float models; found parameters of dtype {bad[0]} "
                        "(quantized or integer models are not supported)")
    leaves = [x for x in tree_flatten(example_inputs)[0] if isinstance(x, torch.Tensor)]
    if not leaves:
        raise TypeError("example_inputs must contain at least one tensor")
    for x in leaves:
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"example input of dtype {x.dtype}: optimize() needs float inputs")
    try:
        with torch.no_grad():
            output = model(*example_inputs)
    except Exception as exc:  # noqa: BLE001 - the user's model and inputs disagree: say so plainly
        shapes = [tuple(x.shape) for x in leaves]
        raise ValueError(f"the model fails on the example inputs of shapes {shapes} ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); "
                         "optimize() needs inputs the model accepts") from None
    params = [p for p in model.parameters()]
    return (params[0].dtype if params else leaves[0].dtype), output


def _to_float64(x):
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


def _pristine(model: nn.Module, inplace: bool, reference_model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A fresh copy of the original model: of `model` itself unless it was rewritten in place,
    then rebuilt from the float64 reference (float64 → dtype is exact for a single-dtype model)."""
    return copy.deepcopy(model) if not inplace else copy.deepcopy(reference_model).to(dtype)


def _compare(out, reference) -> tuple[float, float]:
    outs, refs = tree_flatten(out)[0], tree_flatten(reference)[0]
    if len(outs) != len(refs):
        raise ValueError(f"optimized model returns {len(outs)} outputs, original {len(refs)}")
    pairs = [(o, r) for o, r in zip(outs, refs) if isinstance(r, torch.Tensor)]
    return (max((rel_error(o, r) for o, r in pairs), default=0.0),
            max((max_abs_error(o, r) for o, r in pairs), default=0.0))
